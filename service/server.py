"""`relrec serve`: run the app under uvicorn (the CLI in `service/cli.py` calls `serve`).

The app is built by the factory in each worker process; with `workers > 1` uvicorn spawns
processes that rebuild `Settings` from the environment, so the values of `settings` are
exported as RELREC_* variables first (their single reader stays `service.settings`).
Graceful shutdown is uvicorn's: on SIGTERM it stops accepting, lets in-flight requests finish
(up to `graceful_timeout_s`), then runs the lifespan shutdown (batcher drained, store closed).
"""

from __future__ import annotations

import os
from typing import Any

import uvicorn

from service.app import LOG_FORMAT, create_app
from service.settings import Settings

__all__ = ["serve", "settings_to_env"]


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
        "filters": {"request_id": {"()": "service.app._RequestIdFilter"}},
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
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": log_config(settings.log_level),
        "timeout_graceful_shutdown": graceful_timeout_s,
        "proxy_headers": True,
    }
    if workers <= 1:
        uvicorn.run(create_app(settings), **common)
        return
    # Worker processes inherit the environment and build their own Settings from it.
    os.environ.update(settings_to_env(settings))  # noqa: TID251 - the hand-off to workers
    uvicorn.run("service.app:create_app", factory=True, workers=workers, **common)
