"""The request path's own work, side by side in one process (issue 18, step 3).

Everything `GET /recommend` computes apart from HTTP, on one artifact and one set of trained
users, one request per call (B = 1, the unloaded path) and micro-batches of `--batch`, each
variant timed by this process's CPU clock (`time.process_time`: every thread of it, so an
onnxruntime thread pool is counted; the machine's other load costs wall time, not these
figures; FAISS runs one thread) and the variants alternated round by round, the median
per variant reported with its ratio to the first of its group:

- history padding: padded in the retriever and again for the ranker (before issue 18) against
  padded once by the recommender and handed to both (`service.retriever.pad_histories`);
- re-rank: `scorer.onnx` with the loader's session (1 intra-op thread, sequential, full graph
  optimisation) against the same with the library's default thread pool, without spinning,
  with basic graph optimisation only, and through preallocated I/O binding;
- serialisation: pydantic's `model_dump_json` (the service) against orjson over `model_dump`;
- the whole `Recommender.recommend_many` per request (SQLite history, empty online part) and
  its stages from the recommender's own stage callback.

    python bench/request_path.py ARTIFACT_DIR [--users 300] [--rounds 5] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import artifact as art  # noqa: E402
from models.scorer_io import DISTANCES, scorer_feed  # noqa: E402
from service.history import open_history_store  # noqa: E402
from service.loader import LoadedArtifact, load_artifact  # noqa: E402
from service.ranker import Ranker  # noqa: E402
from service.recommender import Query, Recommender, Tables  # noqa: E402
from service.retriever import Retriever, pad_histories  # noqa: E402

Variant = Callable[[int], object]  # one call over the users' slice starting at this index


def cpu_ms_per_request(fn: Variant, n_users: int, batch: int) -> float:
    """CPU ms of `fn` per request over all users, in calls of `batch` users."""
    started = time.process_time()
    for s in range(0, n_users, batch):
        fn(s)
    return 1000 * (time.process_time() - started) / n_users


def compare(variants: dict[str, Variant], n_users: int, batch: int, rounds: int) -> dict:
    """Median CPU ms per request of each variant, alternated round by round, after a warm-up."""
    for fn in variants.values():
        cpu_ms_per_request(fn, min(n_users, 4 * batch), batch)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(cpu_ms_per_request(fn, n_users, batch))
    base = statistics.median(samples[next(iter(variants))])
    return {
        name: {"ms": statistics.median(v), "ratio": statistics.median(v) / base, "rounds": v}
        for name, v in samples.items()
    }


def session(path: Path, threads: int, *, spinning: bool = True,
            level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            ) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = level
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def io_bound_run(sess: ort.InferenceSession) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """`scorer.onnx` through an I/O binding: inputs bound from numpy, the output written into
    a buffer preallocated per shape (the binding is reused; one thread only)."""
    binding = sess.io_binding()
    buffers: dict[tuple[int, int], np.ndarray] = {}

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        for name, value in feed.items():
            binding.bind_cpu_input(name, value)
        shape = feed["cand_rows"].shape
        out = buffers.setdefault(shape, np.empty(shape, np.float32))
        binding.bind_output(DISTANCES, "cpu", 0, np.float32, list(shape), out.ctypes.data)
        sess.run_with_iobinding(binding)
        return out

    return run


def measure(loaded: LoadedArtifact, n_users: int, batch: int, rounds: int, store_url: str
            ) -> dict[str, Any]:
    a = loaded.arrays
    rng = np.random.default_rng(0)
    rows = rng.choice(len(a.user_ids), min(n_users, len(a.user_ids)), replace=False)
    n = len(rows)
    tables = Tables.from_artifact(loaded)
    vecs = np.asarray(a.users[rows], np.float32)
    hists = [tables.history(int(r))[: loaded.l_max] for r in rows]
    seen = [tables.history(int(r)) for r in rows]
    c = loaded.n_candidates
    retriever = Retriever(loaded.index, a.items, a.keys, a.memories, c)
    out: dict[str, Any] = {"users": n, "batch": batch, "C": c, "ef_search": loaded.ef_search}

    def sl(s: int) -> slice:
        return slice(s, s + batch)

    def pad_twice(s: int) -> object:
        cands = retriever.candidates(vecs[sl(s)], hists[sl(s)], seen[sl(s)], c)
        return cands, pad_histories(hists[sl(s)], loaded.l_max)

    def pad_once(s: int) -> object:
        padded = pad_histories(hists[sl(s)], loaded.l_max)
        return retriever.candidates(vecs[sl(s)], hists[sl(s)], seen[sl(s)], c, padded=padded)

    out["padding"] = compare({"pad twice (before)": pad_twice, "pad once": pad_once},
                             n, batch, rounds)

    cands = [retriever.candidates(vecs[i : i + 1], hists[i : i + 1], seen[i : i + 1], c)[0]
             for i in range(n)]
    feeds = []
    for s in range(0, n, batch):
        width = max(len(x) for x in cands[sl(s)])
        cand = np.stack([np.resize(x, width) for x in cands[sl(s)]])
        feeds.append(scorer_feed(vecs[sl(s)], *pad_histories(hists[sl(s)], loaded.l_max), cand))
    scorer = loaded.path / art.SCORER
    sessions = {
        "loader's session (1 thread, sequential, all optimisations)": loaded.session,
        "default thread pool (0 = all cores)": session(scorer, 0),
        "default thread pool, no spinning": session(scorer, 0, spinning=False),
        "basic graph optimisation only": session(
            scorer, 1, level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
    }
    variants: dict[str, Variant] = {
        name: (lambda s, sess=sess: sess.run([DISTANCES], feeds[s // batch]))
        for name, sess in sessions.items()
    }
    bound = io_bound_run(loaded.session)
    variants["loader's session through I/O binding"] = lambda s: bound(feeds[s // batch])
    out["rerank"] = compare(variants, n, batch, rounds)

    store = open_history_store(store_url, max_len=50)
    times: dict[str, float] = {}

    def stage(name: str, seconds: float) -> None:
        times[name] = times.get(name, 0.0) + seconds

    rec = Recommender(tables, store, retriever, Ranker(loaded.session, loaded.l_max,
                                                       loaded.has_attention), 50, on_stage=stage)
    queries = [Query(str(a.user_ids.ids[r]), 10) for r in rows]
    responses = [rec.recommend_many(queries[i : i + 1])[0] for i in range(n)]
    times.clear()
    out["recommend_many"] = compare(
        {"Recommender.recommend_many": lambda s: rec.recommend_many(queries[sl(s)])},
        n, batch, rounds)
    calls = rounds * n + min(n, 4 * batch)  # requests timed, warm-up included
    out["stages_wall_ms"] = {k: 1000 * v / calls for k, v in times.items()}
    out["serialize"] = compare({
        "pydantic model_dump_json (the service)":
            lambda s: [r.model_dump_json() for r in responses[sl(s)]],
        "orjson.dumps(model_dump())":
            lambda s: [orjson.dumps(r.model_dump()) for r in responses[sl(s)]],
    }, n, batch, rounds)
    store.close()
    return out


def print_group(title: str, rows: dict[str, Any]) -> None:
    print(f"\n{title}\n| variant | CPU ms per request | ratio |\n|---|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['ms']:.4f} | {r['ratio']:.2f}× |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--candidates", type=int, help="C (default: the manifest's)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    loaded = load_artifact(art.resolve_version_dir(args.artifact), ort_threads=1,
                           faiss_threads=1, n_candidates=args.candidates)
    print(f"artifact {loaded.version}: {loaded.n_items} items, C={loaded.n_candidates}, "
          f"efSearch={loaded.ef_search}; load average {os.getloadavg()} before")
    result: dict[str, Any] = {"artifact": loaded.version, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        for b in args.batch:
            r = measure(loaded, args.users, b, args.rounds, f"sqlite:///{tmp}/h{b}.db")
            result[f"batch_{b}"] = r
            print(f"\n## batch {b} ({r['users']} users, C={r['C']})")
            for key in ("padding", "rerank", "serialize", "recommend_many"):
                print_group(key, r[key])
            print("stages (wall ms per request, under the machine's load): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in r["stages_wall_ms"].items()))
    result["load_after"] = os.getloadavg()
    print(f"\nload average {os.getloadavg()} after")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
