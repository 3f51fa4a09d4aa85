"""Tune the ALS baseline on validation, so that "HLR >= 1.2x ALS" is against a fair ALS.

Grid over factors x regularisation x alpha (implicit's confidence of a positive), fit on the
train part of one split, NDCG@10 on the *validation* part (full ranking, train items excluded)
selects the setting; only then is the test part scored, for the default and the selected
settings, on every seed given (each seed its own split, as in bench/quality.py).

    python bench/tune_als.py --data ../shared/data/ml-1m/ratings_user_item_rating.csv.gz \\
        --seeds 0 1 2 --out runs/tune-als-ml1m
    python bench/tune_als.py --quick       # seconds, generated data (run by the tests)
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.baselines import ALSBaseline  # noqa: E402
from training.config import load_config  # noqa: E402
from training.evaluator import full_ranking  # noqa: E402
from training.pipeline import prepare  # noqa: E402
from training.splits import Split  # noqa: E402

DEFAULT = {"factors": 100, "regularization": 30.0, "alpha": 1.0}


def fit(split: Split, setting: dict, seed: int, iterations: int) -> ALSBaseline:
    return ALSBaseline(iterations=iterations, seed=seed, **setting).fit(split.train)


def ndcg(model: ALSBaseline, split: Split, stage: str) -> float:
    return full_ranking(model, split, k=10, stage=stage, progress=False).means()["ndcg"]


def load_split(args: argparse.Namespace, seed: int) -> Split:
    min_rating = None if args.no_threshold else args.min_rating
    cfg = load_config(None, [f"data.min_rating={json.dumps(min_rating)}"], algorithm="als",
                      data={"path": args.data, "k_core": args.k_core, "seed": seed})
    return prepare(cfg)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="the grid runs on the first seed's split; the test on all")
    p.add_argument("--min-rating", type=float, default=4.0)
    p.add_argument("--no-threshold", action="store_true")
    p.add_argument("--k-core", type=int, default=10)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--factors", nargs="+", type=int, default=[64, 100, 200])
    p.add_argument("--regularization", nargs="+", type=float, default=[1.0, 3.0, 10.0, 30.0, 100.0])
    p.add_argument("--alpha", nargs="+", type=float, default=[1.0, 3.0, 10.0, 30.0])
    p.add_argument("--out", default="runs/tune-als")
    p.add_argument("--quick", action="store_true", help="generated data, a 2x2x2 grid")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        from training.synthetic import write_sample

        args.data = str(write_sample(out / "sample.csv", n_users=200, n_items=100, seed=0))
        args.seeds, args.k_core, args.iterations = args.seeds[:1], 5, 5
        args.factors, args.regularization, args.alpha = [8, 16], [0.1, 1.0], [1.0, 10.0]
    if not args.data:
        sys.exit("--data is required (or --quick)")
    split = load_split(args, args.seeds[0])
    grid = []
    for f, reg, alpha in itertools.product(args.factors, args.regularization, args.alpha):
        setting = {"factors": f, "regularization": reg, "alpha": alpha}
        started = time.perf_counter()
        valid = ndcg(fit(split, setting, args.seeds[0], args.iterations), split, "valid")
        grid.append({**setting, "valid_ndcg": valid, "seconds": time.perf_counter() - started})
        print(f"factors {f:4d} reg {reg:6g} alpha {alpha:5g}: valid ndcg@10 {valid:.4f}",
              flush=True)
    best = max(grid, key=lambda row: row["valid_ndcg"])
    chosen = {key: best[key] for key in DEFAULT}
    tests: dict[str, list[float]] = {"default": [], "tuned": []}
    for seed in args.seeds:
        seed_split = split if seed == args.seeds[0] else load_split(args, seed)
        for name, setting in (("default", DEFAULT), ("tuned", chosen)):
            tests[name].append(ndcg(fit(seed_split, setting, seed, args.iterations),
                                    seed_split, "test"))
    doc = {"grid": grid, "selected": chosen, "seeds": args.seeds, "test_ndcg": tests}
    (out / "tune_als.json").write_text(json.dumps(doc, indent=2) + "\n")
    for name, values in tests.items():
        a = np.array(values)
        spread = f" ± {a.std(ddof=1):.4f}" if len(a) > 1 else ""
        setting = DEFAULT if name == "default" else chosen
        print(f"{name} {setting}: test ndcg@10 {a.mean():.4f}{spread} over seeds {args.seeds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
