"""Where a worker's time goes: py-spy `record --format raw` files -> share of samples per part.

py-spy writes one collapsed stack per line ("frame;frame;...;leaf COUNT", root first) and, by
default, only samples threads that are running, so the shares are of busy time. A sample is
charged to its innermost frame that matches a part: time in onnxruntime called from the
ranker called from FastAPI's routing counts as re-rank, time in Starlette's own code under our
middleware counts as Starlette.

    python bench/profile_summary.py runs/profile/worker-*.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

# (part, substrings of a frame); within one frame the first match wins.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("re-rank (onnxruntime, ranker.py)", ("ranker.py", "onnxruntime")),
    ("retrieval (FAISS, retriever.py)", ("retriever.py", "faiss")),
    (
        "history store (history*.py, redis, sqlite3)",
        ("history.py", "history_redis.py", "history_sqlite.py", "/redis/", "sqlite3"),
    ),
    ("recommender (user state, fold-in, results)", ("recommender.py", "foldin.py")),
    ("serialize (pydantic)", ("pydantic",)),
    ("batcher and runtime", ("batching.py", "runtime.py", "recommend_service.py", "versions.py")),
    ("fast path (fast_recommend.py)", ("fast_recommend.py",)),
    ("relrec middleware (middleware.py)", ("service/middleware.py", "service/app.py")),
    ("prometheus_client", ("prometheus_client",)),
    ("logging (access log)", ("logging/",)),
    ("FastAPI and Starlette (routing, dependencies, validation)", ("fastapi", "starlette")),
    ("uvicorn and httptools (HTTP parsing)", ("uvicorn", "httptools")),
    ("waiting (threads blocked on a condition)", ("Condition.wait", "Event.wait")),
    ("thread hand-off (to_thread, futures)", ("threading.py", "concurrent/futures")),
    ("event loop (asyncio, uvloop's C: sockets, epoll)", ("asyncio", "uvloop")),
)
OTHER = "other (threads, GC, interpreter)"


def part_of(stack: str) -> str:
    """The part of the innermost frame of a collapsed stack (root first) that has one."""
    for frame in reversed(stack.split(";")):
        for name, needles in PARTS:
            if any(n in frame for n in needles):
                return name
    return OTHER


def summarise_profiles(paths: list[Path]) -> dict[str, float]:
    """Share of all samples of these files per part, largest first; {} when there are none."""
    counts: dict[str, int] = {}
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, n = line.rpartition(" ")
            if stack and n.isdigit():
                counts[part_of(stack)] = counts.get(part_of(stack), 0) + int(n)
    total = sum(counts.values())
    if not total:
        return {}
    return {k: v / total for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def main() -> None:
    for name, share in summarise_profiles([Path(p) for p in sys.argv[1:]]).items():
        print(f"{100 * share:5.1f}%  {name}")


if __name__ == "__main__":
    main()
