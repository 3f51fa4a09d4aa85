"""`relrec serve`: run the app under uvicorn (the CLI in `service/cli.py` calls `serve`).

The app is built by the factory in each worker process; with `workers > 1` uvicorn spawns
processes that rebuild `Settings` from the environment, so the values of `settings` are
exported as RELREC_* variables first (their single reader stays `service.settings`).
Graceful shutdown (one worker): on SIGTERM `/readyz` turns 503 while the listener stays open for
`shutdown_drain_s` (load balancers stop routing here before connections are refused), then
uvicorn stops accepting, lets in-flight requests finish (up to `graceful_timeout_s`) and runs
the lifespan shutdown (batcher drained, store closed). With `workers > 1` uvicorn's supervisor
owns the signals and there is no drain (the Kubernetes manifests run one worker per pod).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

import uvicorn

from service.app import create_app
from service.middleware import LOG_FORMAT
from service.runtime import Runtime
from service.settings import Settings

__all__ = ["DrainingServer", "serve", "settings_to_env"]


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain before its graceful shutdown.

    The first SIGTERM only starts the drain: the app's readiness turns 503 (at the next tick,
    within 0.1 s, so that no logging happens inside the signal handler) and requests are still
    accepted and served; after `drain_s` uvicorn's own shutdown runs. SIGINT, a second signal
    or `drain_s == 0` shut down at once, as plain uvicorn does.
    """

    def __init__(self, config: uvicorn.Config, drain_s: float) -> None:
        super().__init__(config)
        self.drain_s = drain_s
        self._drain_until: float | None = None
        self._drain_started = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self.drain_s <= 0 or self._drain_until is not None:
            super().handle_exit(sig, frame)
            return
        self._drain_until = time.monotonic() + self.drain_s

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None and not self.should_exit:
            if not self._drain_started:
                self._drain_started = True
                runtime = _runtime_of(getattr(self.config, "loaded_app", None))
                if runtime is not None:
                    runtime.readiness.begin_drain()
            if time.monotonic() >= self._drain_until:
                super().handle_exit(signal.SIGTERM, None)
        return await super().on_tick(counter)


def _runtime_of(app: Any) -> Runtime | None:
    """The Runtime of the FastAPI app under uvicorn's wrappers (proxy headers, logging)."""
    for _ in range(10):
        runtime = getattr(getattr(app, "state", None), "runtime", None)
        if isinstance(runtime, Runtime):
            return runtime
        app = getattr(app, "app", None)
    return None


def settings_to_env(settings: Settings) -> dict[str, str]:
    """RELREC_* variables that rebuild `settings` in a worker process."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, list):
            text = ",".join(
                v.get_secret_value() if hasattr(v, "get_secret_value") else str(v) for v in value
            )
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"RELREC_{name.upper()}"] = text
    return env


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging plus ours, with the request id in every line of the service."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "service.middleware.RequestIdFilter"}},
        "formatters": {"default": {"format": LOG_FORMAT}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "service": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def serve(
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    graceful_timeout_s: int = 30,
) -> None:
    """Run the service until SIGINT/SIGTERM; host, port, workers default to the settings'.

    Our middleware writes the access log (uvicorn's is off).
    """
    host = settings.host if host is None else host
    port = settings.port if port is None else port
    workers = settings.workers if workers is None else workers
    drain_s = settings.shutdown_drain_s
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": log_config(settings.log_level),
        "timeout_graceful_shutdown": graceful_timeout_s,
        "proxy_headers": True,
    }
    if workers <= 1:
        server = DrainingServer(uvicorn.Config(create_app(settings), **common), drain_s)
        with contextlib.suppress(KeyboardInterrupt):  # SIGINT, re-raised after the shutdown
            server.run()
        if not server.started:
            sys.exit(3)  # uvicorn.run's exit status when start-up fails (port taken, ...)
        return
    # Worker processes inherit the environment and build their own Settings from it.
    os.environ.update(settings_to_env(settings))  # noqa: TID251 - the hand-off to workers
    uvicorn.run("service.app:create_app", factory=True, workers=workers, **common)
