"""Scorer latency benchmark (issue 4): `scorer.onnx` under ONNX Runtime on one CPU thread.

Exports a random (untrained) model of each kind at d=100, N=20, L_max=50 over a 10k-item
catalogue through the real exporter, then times one user's call — full history (50 items),
C distinct random candidates — as the service makes it: `session.run` with numpy inputs,
`intra_op_num_threads=1`. Median and p90 over `--calls` calls after a warm-up. For comparison,
the same arithmetic (the exported `ScorerGraph` module) and the model's own `distance` in
plain PyTorch on one thread. Prints a markdown table.

    python bench/scorer.py                 # the figures in docs/benchmarks.md
    python bench/scorer.py --quick         # seconds; run by the tests
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import artifact as art  # noqa: E402
from models.config import ModelConfig  # noqa: E402
from models.registry import build_model, build_scorer_graph  # noqa: E402
from training.exporter import export  # noqa: E402
from training.interactions import Interactions  # noqa: E402
from training.scorer_graph import export_onnx  # noqa: E402

KINDS = ["hlr", "hlr++", "lrml", "cml", "adacml"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS)
    p.add_argument("--candidates", nargs="+", type=int, default=[200, 500])
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--memories", type=int, default=20)
    p.add_argument("--max-history", type=int, default=50)
    p.add_argument("--calls", type=int, default=1000, help="timed ORT calls per round")
    p.add_argument("--rounds", type=int, default=5, help="rounds of --calls ORT calls")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--torch-calls", type=int, default=300, help="timed calls for torch columns")
    p.add_argument("--opt-level", default="all", choices=["disable", "basic", "extended", "all"])
    p.add_argument("--shift", default="auto", choices=["auto", "bound", "max"],
                   help="HLR softmax shift; not auto: time that graph instead of the exported one")
    p.add_argument("--quick", action="store_true", help="1k items, few calls: seconds")
    args = p.parse_args(argv)
    if args.quick:
        args.items, args.calls, args.rounds, args.warmup, args.torch_calls = 1000, 10, 2, 5, 5
    return args


def random_interactions(n_users: int, n_items: int, seed: int = 0) -> Interactions:
    """Enough random interactions that every user and item has a row."""
    rng = np.random.default_rng(seed)
    n = max(n_users, n_items) * 2
    users = np.concatenate([np.arange(n_users), rng.integers(0, n_users, n - n_users)])
    items = np.concatenate([np.arange(n_items), rng.integers(0, n_items, n - n_items)])
    return Interactions.from_ids(users, items)


def timed(fn: Callable[[], object], calls: int, warmup: int,
          rounds: int = 1) -> tuple[float, float, float, float]:
    """Per call, in ms: wall median and p90 over all calls, the CPU time median of this
    thread, and the smallest median of `rounds` equal rounds.

    With one intra-op thread ORT computes on the calling thread, so its CPU time is the work
    of the call without the time the OS gave to other processes. On a shared machine the best
    round's median is the figure of an undisturbed machine; the overall median and p90 are
    what a client saw while the machine was shared.
    """
    for _ in range(warmup):
        fn()
    wall, cpu = np.empty(calls * rounds), np.empty(calls * rounds)
    for i in range(calls * rounds):
        start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
        fn()
        wall[i] = time.perf_counter_ns() - start
        cpu[i] = time.thread_time_ns() - start_cpu
    best = min(float(np.median(r)) for r in np.array_split(wall, rounds))
    return (float(np.median(wall) / 1e6), float(np.percentile(wall, 90) / 1e6),
            float(np.median(cpu) / 1e6), best / 1e6)


def bench_kind(args: argparse.Namespace, kind: str, workdir: Path) -> list[dict]:
    cfg = ModelConfig(kind=kind, dim=args.dim, n_memory=args.memories, l_max=args.max_history)
    torch.manual_seed(0)
    n_users = 1000
    model = build_model(cfg, n_users, args.items).eval()
    vdir = export(model, random_interactions(n_users, args.items), workdir / kind)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[args.opt_level]
    graph = build_scorer_graph(model, shift=args.shift if kind.startswith("hlr") else "auto")
    onnx_path = vdir / art.SCORER
    if args.shift != "auto":
        onnx_path = export_onnx(graph, workdir / f"{kind}-{args.shift}.onnx")
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    rows = []
    for n_cand in args.candidates:
        feed = {"user_vecs": model.user_emb.weight[:1].detach().numpy().copy(),
                "hist_rows": rng.choice(args.items, (1, args.max_history), replace=False),
                "hist_mask": np.ones((1, args.max_history), np.float32),
                "cand_rows": rng.choice(args.items, (1, n_cand), replace=False)}
        ort_ms = timed(lambda f=feed: session.run(None, f), args.calls, args.warmup,
                       args.rounds)
        t = {k: torch.from_numpy(v) for k, v in feed.items()}
        with torch.inference_mode():
            graph_ms = timed(lambda t=t: graph(t["user_vecs"], t["hist_rows"], t["hist_mask"],
                                               t["cand_rows"]), args.torch_calls, args.warmup)
            mask = t["hist_mask"] > 0.5
            model_ms = timed(lambda t=t, m=mask: model.distance(
                t["user_vecs"], t["cand_rows"], t["hist_rows"], m),
                args.torch_calls, args.warmup)
        rows.append({"kind": kind, "C": n_cand, "ort": ort_ms, "graph": graph_ms,
                     "model": model_ms, "shift": getattr(graph, "shift_mode", "")})
    return rows


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {os.cpu_count()} CPUs"


def table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"d={args.dim}, N={args.memories}, L_max={args.max_history} (full history), "
        f"{args.items} items, one user per call; ORT: {args.rounds} rounds of {args.calls} "
        f"calls, torch: {args.torch_calls} calls, after {args.warmup} warm-up calls. ms per "
        f"call: wall median / p90 over all calls; best round: the smallest round median; "
        f"CPU time: median of the calling thread's CPU time",
        "",
        "| model | C | ORT, 1 thread | ORT, best round | ORT, CPU time | torch, same graph "
        "| torch, model.distance |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [f"{r[k][0]:.3f} / {r[k][1]:.3f}" for k in ("ort", "graph", "model")]
        cells[1:1] = [f"{r['ort'][3]:.3f}", f"{r['ort'][2]:.3f}"]
        lines.append(f"| {r['kind']} | {r['C']} | " + " | ".join(cells) + " |")
    load = os.getloadavg()
    lines += ["", f"CPU: {cpu_name()}; load average before/after: {args.load0:.2f} / "
              f"{load[0]:.2f}; onnxruntime {ort.__version__}, torch {torch.__version__}, "
              f"ORT graph optimisation: {args.opt_level}; HLR shift: {args.shift}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    args.load0 = os.getloadavg()[0]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds:
            rows += bench_kind(args, kind, Path(tmp))
    print(table(rows, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
