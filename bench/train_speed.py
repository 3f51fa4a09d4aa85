"""Training speed: ms per step and s per epoch of each model, against a previous commit.

Each measurement is one epoch of `Trainer.fit` (no validation) in a fresh subprocess, so that
peak RSS is per model and one model's allocations do not warm the next. With `--baseline-ref`
the same measurement runs on that commit's code (a `git worktree` under the system temp dir),
alternating with this tree model by model, so the speed-up is a ratio from one run on one
machine state. Figures: ms per step, s per epoch, the share of the epoch spent waiting for
batches, peak RSS (MB), and the device.

    python bench/train_speed.py --data ../shared/data/ml-1m/ratings_user_item_rating.csv.gz \\
        --baseline-ref c953c85 --threads 1 2
    python bench/train_speed.py --data … --device cuda        # on a GPU machine
    python bench/train_speed.py --quick                       # seconds, generated data (tests)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["cml", "lrml", "adacml", "hlr", "hlr++"]


def worker(args: argparse.Namespace) -> None:
    """Runs inside the tree under test (`--root`): train one epoch, print one JSON line."""
    sys.path.insert(0, str(Path(args.root).resolve()))
    import resource
    import time

    import torch

    from training.config import load_config
    from training.pipeline import prepare
    from training.trainer import Trainer, TrainerConfig

    threads = args.threads[0]
    if threads:
        torch.set_num_threads(threads)  # the old tree has no trainer.threads
    overrides = ["trainer.epochs=1", "trainer.progress=false", f"trainer.device={args.device}",
                 f"trainer.batch_size={args.batch_size}"]
    fields = TrainerConfig.model_fields
    if "threads" in fields:
        overrides.append(f"trainer.threads={threads}")
    if "compile" in fields:
        overrides.append(f"trainer.compile={str(args.compile).lower()}")
    cfg = load_config(None, overrides + list(args.set), algorithm=args.model,
                      data={"path": args.data, "k_core": args.k_core})
    split = prepare(cfg)
    from models.registry import build_model
    from training.dataset import TrainDataset

    torch.manual_seed(0)
    model = build_model(cfg.model, split.train.n_users, split.train.n_items)
    dataset = TrainDataset(split.train, cfg.model.l_max, cfg.model.uses_history)
    trainer = Trainer(model, cfg.trainer)
    started = time.perf_counter()
    result = trainer.fit(dataset, None)
    wall = time.perf_counter() - started
    epoch = result.epochs[0]
    steps = dataset.n_batches(cfg.trainer.batch_size)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"ms_per_step": 1e3 * epoch.time_s / steps, "s_per_epoch": epoch.time_s,
                      "batch_share": epoch.data_time_s / epoch.time_s, "peak_rss_mb": rss_mb,
                      "threads": torch.get_num_threads(), "steps": steps,
                      "device": str(trainer.device), "wall_s": wall}))


def measure(root: Path, model: str, args: argparse.Namespace, threads: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--root", str(root),
           "--model", model, "--data", args.data, "--threads", str(threads),
           "--device", args.device, "--batch-size", str(args.batch_size),
           "--k-core", str(args.k_core)]
    if args.compile:
        cmd.append("--compile")
    for item in args.set:
        cmd += ["--set", item]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    if out.returncode != 0:
        raise SystemExit(f"{model} in {root} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def worktree(ref: str) -> Path:
    """A detached checkout of `ref` next to the system temp dir (reused if present)."""
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    path = Path(tempfile.gettempdir()) / f"relrec-ref-{sha}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), sha], cwd=ROOT,
                       check=True, capture_output=True)
    return path


def render(rows: list[dict], has_ref: bool) -> str:
    head = "| model | threads | ms/step | s/epoch | batch wait | peak RSS MB |"
    sep = "|---|---|---|---|---|---|"
    if has_ref:
        head += " before ms/step | before s/epoch | speed-up |"
        sep += "---|---|---|"
    lines = [head, sep]
    for r in rows:
        new = r["new"]
        line = (f"| {r['model']} | {new['threads']} | {new['ms_per_step']:.1f} | "
                f"{new['s_per_epoch']:.1f} | {100 * new['batch_share']:.0f}% | "
                f"{new['peak_rss_mb']:.0f} |")
        if has_ref:
            old = r["old"]
            line += (f" {old['ms_per_step']:.1f} | {old['s_per_epoch']:.1f} | "
                     f"{old['s_per_epoch'] / new['s_per_epoch']:.2f}x |")
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="interaction log (default with --quick: a generated sample)")
    p.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    p.add_argument("--threads", nargs="+", type=int, default=[0],
                   help="intra-op thread counts to measure (0: the trainer's default)")
    p.add_argument("--baseline-ref", help="git ref whose code is measured side by side")
    p.add_argument("--ref", help="measure this git ref instead of the working tree (a snapshot "
                   "that edits during the run cannot change)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--k-core", type=int, default=10)
    p.add_argument("--compile", action="store_true", help="trainer.compile=true (this tree)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--out", help="write the rows as JSON here (partial results as they finish)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--root", default=str(ROOT), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.quick:
        args.data = args.data or _quick_sample()
        args.k_core = 2
        args.batch_size = 256
    if not args.data:
        p.error("--data is required (or --quick)")
    args.data = str(Path(args.data).resolve())
    ref = worktree(args.baseline_ref) if args.baseline_ref else None
    tree = worktree(args.ref) if args.ref else ROOT
    rows = []
    for threads in args.threads:
        for model in args.models:
            row = {"model": model, "new": measure(tree, model, args, threads)}
            if ref is not None:
                row["old"] = measure(ref, model, args, threads)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    print(render(rows, ref is not None))
    return 0


def _quick_sample() -> str:
    sys.path.insert(0, str(ROOT))
    from training.synthetic import write_sample

    path = Path(tempfile.mkdtemp(prefix="relrec-speed-")) / "sample.csv"
    write_sample(path, n_users=300, n_items=200, seed=0)
    return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
