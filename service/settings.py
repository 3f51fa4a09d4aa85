"""Serving settings: the only reader of the environment (variables prefixed `RELREC_`).

Built once, by `create_app()` or by `relrec serve`, and handed down as plain values: below
`app.py`/`runtime.py` nothing sees the whole object (STYLE "How config flows"). Each field maps
1:1 to an env var, e.g. `n_candidates` <-> `RELREC_N_CANDIDATES`; lists (API keys) are comma
separated. An optional `.env` in the working directory is read too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.history import URL_PREFIXES

__all__ = ["Settings"]

KeyList = Annotated[list[SecretStr], NoDecode]
_KEY_MAX = 512


class Settings(BaseSettings):
    """Every knob of the online path, with bounds so that a typo fails at start-up."""

    # hide_input_in_errors: a bad value must not be echoed at start-up (keys, the Redis password
    # inside history_url); the message still names the field and the rule it broke.
    model_config = SettingsConfigDict(
        env_prefix="RELREC_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    # Where the model comes from: an artifacts root holding `current` and version dirs (watched
    # for hot reload), or one version dir (has manifest.json; served as is, never reloaded).
    artifact_dir: Path = Path("artifacts")
    reload_poll_s: float = Field(default=2.0, ge=0.0, description="poll `current`; 0: never")

    # History store: sqlite:///relative/path, sqlite:////absolute/path, redis://host:port/db,
    # rediss://..., redis+cluster://host:port (the prefixes of service.history.BACKENDS).
    history_url: str = "sqlite:///.relrec/history.db"
    # Items kept per user in the online history (newest first). The model reads its own L_max of
    # them; the rest still count as seen. Use the model's L_max to trim to exactly that.
    history_max_len: int = Field(default=50, ge=1, le=10_000)
    idempotency_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    # Redis log stream retention: XADD MAXLEN ~ this many entries (about 60 bytes each), so the
    # log cannot fill Redis. Export it (relrec export-interactions) before this many arrive.
    log_max_len: int = Field(default=2_000_000, ge=1_000, le=1_000_000_000)

    # API keys (comma separated; several at once allow rotation; docs/security.md).
    # `api_keys` guard writes (POST /interactions) and admin; `admin_api_keys`, when set, guard
    # admin instead. `read_api_keys` guard reads (GET /recommend). A key opens only the kind it is
    # listed for: a write key does not read, a read key does not write. Empty: the kind is open.
    # Each key is 1-512 visible ASCII characters (it travels in an HTTP header).
    api_keys: KeyList = Field(default_factory=list)
    admin_api_keys: KeyList = Field(default_factory=list)
    read_api_keys: KeyList = Field(default_factory=list)

    # Bounds on requests.
    max_k: int = Field(default=100, ge=1, le=10_000)
    max_batch: int = Field(default=1000, ge=1, le=100_000, description="interactions per POST")
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    max_id_length: int = Field(default=128, ge=1, le=4096)
    max_item_text_chars: int = Field(
        default=2000, ge=1, le=100_000, description="text of PUT /items/{id}, in characters"
    )
    max_recommend_users: int = Field(
        default=64, ge=1, le=4096, description="users per POST /recommend (one micro-batch)"
    )
    max_filter_ids: int = Field(
        default=1000, ge=1, le=100_000, description="ids per `exclude` or `candidates` filter"
    )

    # Retrieval and re-ranking.
    # C and efSearch: unset (None), each artifact's own, chosen at export as the smallest
    # reaching recall@10 0.995 against exact scoring (manifest `retrieval`, issue 18), or 200
    # and 256 for versions without that record (service/loader.py). Set, they win.
    n_candidates: int | None = Field(
        default=None, ge=1, le=100_000, description="C re-ranked exactly; None: the manifest's"
    )
    selector_min_candidates: int = Field(
        default=256,
        ge=0,
        le=100_000,
        description="a `candidates` allow-list longer than this is searched with a FAISS id "
        "selector and C of it re-ranked; up to this, all of it is scored exactly",
    )
    # FAISS query construction (service/retriever.py has the measured comparison).
    probes: Literal["relation", "centroid", "user", "slots"] = "relation"
    ef_search: int | None = Field(
        default=None, ge=1, le=100_000, description="HNSW efSearch; None: the manifest's"
    )
    # A trained user's candidates from the pool the export stored for them, where a bound
    # proves it holds exact search's answer (service/user_pools.py); false: always the index.
    user_pools: bool = Field(default=True, description="serve candidates from user pools")
    # Where candidates come from (issue 21): "faiss", the artifact's own index mapped by every
    # worker; "milvus", the version's collection on a Milvus server, cluster or Lite file
    # (milvus_uri), published with `relrec publish-milvus` (service/retriever_milvus.py).
    retriever: Literal["faiss", "milvus"] = "faiss"
    milvus_uri: str = Field(default="", description="http://host:19530, or a Milvus Lite file")
    milvus_token: SecretStr = Field(default=SecretStr(""), description="user:password or key")
    milvus_collection_prefix: str = Field(default="relrec_", pattern=r"^[A-Za-z_][0-9A-Za-z_]*$")
    # Threads: 0 is the library's default (all cores); with several workers, cores / workers.
    # onnxruntime defaults to 1: its thread pool doubled the CPU of a re-rank at micro-batches
    # of 1 and 8 (docs/benchmarks.md, "Serving at the floor"), and throughput per core is what
    # a server of one-core workers sells; raise it for large POST /recommend batches.
    ort_threads: int = Field(default=1, ge=0, description="onnxruntime intra-op threads")
    faiss_threads: int = Field(default=0, ge=0, description="FAISS OpenMP threads")
    use_gpu: bool | None = Field(default=None, description="None: use a GPU when one is found")

    # Fold-in of users known only by posted history (service/foldin.py): fit their vector under
    # the model's own objective as the manifest declares (hinge steps, ALS's closed form).
    # false: the mean of their items' vectors (cheaper, weaker: docs/benchmarks.md "Cold users").
    fold_in: bool = True
    fold_in_steps: int = Field(default=8, ge=1, le=100, description="hinge fold-in steps")

    # Micro-batching of concurrent GET /recommend (max_size 1 turns it off).
    # Measured on the ML-1M HLR (CPU): compute per request falls by 20-35% up to batches of
    # 4-8, then the [B, C, L, N] attention tensor outgrows the caches and it rises again.
    batch_max_size: int = Field(default=8, ge=1, le=4096)
    batch_max_wait_ms: float = Field(default=0.0, ge=0.0, le=1000.0)
    batch_in_flight: int = Field(default=2, ge=1, le=64)
    # Where a micro-batch runs. "thread": in a pool thread, up to batch_in_flight at once, so
    # one batch's store I/O overlaps another's compute. "worker": on one long-lived thread per
    # process fed by a queue (a cheaper hand-off; batches one at a time). "inline": on the event
    # loop, blocking it for the batch (store read + FAISS + ONNX) but saving the hand-off, the
    # right trade when workers are processes pinned one per core (docs/benchmarks.md, "Serving").
    batch_executor: Literal["thread", "worker", "inline"] = "thread"
    # GET /recommend/{user_id} answered by a plain ASGI handler (service/fast_recommend.py)
    # when the request is provably valid, skipping FastAPI's routing, dependency injection and
    # validation; anything else (bad input, a wrong key, an error) goes the documented route,
    # so answers and errors are the same either way (docs/benchmarks.md, issue 18).
    fast_recommend: bool = True

    # Admission control, per worker process: past this many requests in progress, API requests
    # are answered 503 `overloaded` (Retry-After: 1) at once instead of queueing without bound.
    # /healthz, /readyz and /metrics are never refused.
    max_in_flight: int = Field(default=256, ge=1, le=100_000)
    # On SIGTERM: /readyz answers 503 for this long while requests are still served, then the
    # listener closes and in-flight requests finish (so load balancers stop routing first).
    shutdown_drain_s: float = Field(default=2.0, ge=0.0, le=300.0)

    # `relrec serve`: where to listen and how many uvicorn worker processes.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=256)
    log_level: str = "INFO"
    # One INFO line per request on the `service.access` logger (method, path, status, ms);
    # false skips it (its formatting and write were measurable per request: docs/benchmarks.md,
    # issue 18). uvicorn's own access log is always off.
    access_log: bool = True
    # FastAPI's native OpenTelemetry (spans, metrics and logs through the global providers).
    # Off: the service's metrics are Prometheus' (/metrics), and FastAPI's check for configured
    # providers alone cost tens of microseconds per request, on every route (docs/benchmarks.md,
    # issue 18). true: FastAPI's default, for a deployment that configures OpenTelemetry.
    otel: bool = False

    @field_validator("api_keys", "admin_api_keys", "read_api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("api_keys", "admin_api_keys", "read_api_keys")
    @classmethod
    def _check_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        # A key outside visible ASCII could never match: headers arrive decoded as latin-1.
        for key in value:
            text = key.get_secret_value()
            if not 1 <= len(text) <= _KEY_MAX or not all("!" <= c <= "~" for c in text):
                raise ValueError(
                    f"each key must be 1-{_KEY_MAX} visible ASCII characters, no spaces "
                    "(the key itself is not shown)"
                )
        return value

    # A field validator, not a model validator: pydantic echoes the validated input in its
    # message, and the whole model's input would include the API keys.
    @field_validator("history_url")
    @classmethod
    def _check_store_url(cls, value: str) -> str:
        if not value.startswith(URL_PREFIXES):
            raise ValueError(
                f"history_url must start with one of {', '.join(URL_PREFIXES)}; got scheme "
                f"{value.split(':', 1)[0]!r}"
            )
        return value

    @field_validator("milvus_uri")
    @classmethod
    def _check_milvus_uri(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("retriever") == "milvus" and not value:
            raise ValueError("retriever=milvus needs milvus_uri (RELREC_MILVUS_URI)")
        return value

    def write_keys(self) -> list[str]:
        return [k.get_secret_value() for k in self.api_keys]

    def admin_keys(self) -> list[str]:
        return [k.get_secret_value() for k in (self.admin_api_keys or self.api_keys)]

    def read_keys(self) -> list[str]:
        return [k.get_secret_value() for k in self.read_api_keys]
