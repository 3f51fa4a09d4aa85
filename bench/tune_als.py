"""Tune the ALS and EASE baselines on validation, so that every "× ALS" is against a fair ALS.

ALS: a grid over factors x regularisation x α (Hu et al.'s confidence 1 + α of a positive);
EASE: a grid over λ. Each setting is fit on the train part of the first seed's split and
scored by NDCG@10 on its *validation* part (full ranking, train items excluded); the best
validation score selects. Only then is the test part scored, on every seed given (each seed
its own split, as in bench/quality.py), for: most popular, ALS as relrec shipped it before
issue 15 (100 factors, λ 30, confidence 1: α = 0), ALS with the shipped defaults
(`BaselineConfig`), the selected ALS and the selected EASE.

Every finished fit is appended to `grid.jsonl` / `tests.jsonl` under --out at once, and a
rerun skips what is there, so an interrupted run loses nothing.

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
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.baselines import ALSBaseline, EASEBaseline, MostPopular  # noqa: E402
from training.config import BaselineConfig, load_config  # noqa: E402
from training.evaluator import full_ranking  # noqa: E402
from training.pipeline import FULL_KEYS, prepare  # noqa: E402
from training.splits import Split  # noqa: E402

ALS_KEYS = ("factors", "regularization", "alpha")
# relrec's ALS before issue 15: binary values with implicit's alpha 1, i.e. confidence 1
WEAK = {"factors": 100, "regularization": 30.0, "alpha": 0.0}


def shipped() -> dict[str, Any]:
    """The ALS defaults relrec ships now (`BaselineConfig`)."""
    b = BaselineConfig()
    return {"factors": b.factors, "regularization": b.regularization, "alpha": b.alpha}


def fit(split: Split, name: str, setting: dict[str, Any], seed: int, iterations: int) -> Any:
    if name == "pop":
        return MostPopular().fit(split.train)
    if name == "ease":
        return EASEBaseline(l2=setting["l2"]).fit(split.train)
    return ALSBaseline(iterations=iterations, seed=seed, **setting).fit(split.train)


def scores(model: Any, split: Split, stage: str) -> dict[str, float]:
    means = full_ranking(model, split, k=10, stage=stage, progress=False).means()
    return {key: means[key] for key in (*FULL_KEYS, "median_popularity")}


def load_split(args: argparse.Namespace, seed: int) -> Split:
    min_rating = None if args.no_threshold else args.min_rating
    cfg = load_config(None, [f"data.min_rating={json.dumps(min_rating)}"], algorithm="als",
                      data={"path": args.data, "k_core": args.k_core, "seed": seed})
    return prepare(cfg)


class Log:
    """Append-only JSON lines: each finished fit is kept, and a rerun skips it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = ([json.loads(line) for line in path.read_text().splitlines() if line]
                     if path.is_file() else [])

    def find(self, key: dict[str, Any]) -> dict[str, Any] | None:
        return next((r for r in self.rows if all(r.get(k) == v for k, v in key.items())), None)

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self.rows.append(row)
        return row


def grid_search(args: argparse.Namespace, split: Split, grid: Log) -> list[dict[str, Any]]:
    """Validation NDCG@10 of every ALS and EASE setting on the first seed's split."""
    settings = [("als", dict(zip(ALS_KEYS, values, strict=True)))
                for values in itertools.product(args.factors, args.regularization, args.alpha)]
    settings += [("ease", {"l2": l2}) for l2 in args.ease_l2]
    rows = []
    for name, setting in settings:
        row = grid.find({"model": name, **setting})
        if row is None:
            started = time.perf_counter()
            valid = scores(fit(split, name, setting, args.seeds[0], args.iterations), split,
                           "valid")
            row = grid.add({"model": name, **setting, "valid_ndcg": valid["ndcg"],
                            "seconds": time.perf_counter() - started})
        rows.append(row)
        print(f"{name} {setting}: valid ndcg@10 {row['valid_ndcg']:.4f}", flush=True)
    return rows


def select(rows: list[dict[str, Any]], name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    best = max((r for r in rows if r["model"] == name), key=lambda r: r["valid_ndcg"])
    return {key: best[key] for key in keys}


def test_runs(args: argparse.Namespace, first: Split, arms: dict[str, tuple[str, dict]],
              tests: Log) -> dict[str, list[dict[str, float]]]:
    """Test metrics of every arm on every seed (the split of seed s is drawn with seed s)."""
    out: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}
    for seed in args.seeds:
        split = None
        for arm, (name, setting) in arms.items():
            # keyed by what was fit, not the arm: the shipped and tuned arms may coincide
            row = tests.find({"model": name, "seed": seed, "setting": setting})
            if row is None:
                if split is None:
                    split = first if seed == args.seeds[0] else load_split(args, seed)
                started = time.perf_counter()
                test = scores(fit(split, name, setting, seed, args.iterations), split, "test")
                row = tests.add({"model": name, "seed": seed, "setting": setting, **test,
                                 "seconds": time.perf_counter() - started})
            out[arm].append(row)
            print(f"{arm} seed {seed}: test ndcg@10 {row['ndcg']:.4f}", flush=True)
    return out


def render(doc: dict[str, Any]) -> str:
    """Markdown: one row per arm, every metric mean ± std over the seeds, the setting used."""
    head = ["arm", "setting", "seeds", *(f"{k}@10" for k in FULL_KEYS), "median pop",
            "valid NDCG@10 (seed 0)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    valid = {json.dumps({k: v for k, v in r.items() if k in (*ALS_KEYS, "l2")}, sort_keys=True):
             r["valid_ndcg"] for r in doc["grid"]}
    for arm, runs in doc["test"].items():
        cells = []
        for key in (*FULL_KEYS, "median_popularity"):
            a = np.array([r[key] for r in runs])
            spread = f" ± {a.std(ddof=1):.4f}" if len(a) > 1 else ""
            cells.append(f"{a.mean():.0f}" if key == "median_popularity"
                         else f"{a.mean():.4f}{spread}")
        setting = doc["arms"][arm]
        v = valid.get(json.dumps(setting, sort_keys=True))
        lines.append(f"| {arm} | {_setting(setting)} | {len(runs)} | " + " | ".join(cells)
                     + f" | {'' if v is None else f'{v:.4f}'} |")
    return "\n".join(lines)


def _setting(setting: dict[str, Any]) -> str:
    if "l2" in setting:
        return f"λ {setting['l2']:g}"
    if not setting:
        return "–"
    return (f"{setting['factors']} f, λ {setting['regularization']:g}, "
            f"α {setting['alpha']:g} (c = {1 + setting['alpha']:g})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="the grid runs on the first seed's split; the test on all")
    p.add_argument("--min-rating", type=float, default=4.0)
    p.add_argument("--no-threshold", action="store_true")
    p.add_argument("--k-core", type=int, default=10)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--factors", nargs="+", type=int, default=[100, 200])
    p.add_argument("--regularization", nargs="+", type=float, default=[10.0, 30.0, 100.0, 300.0])
    p.add_argument("--alpha", nargs="+", type=float, default=[1.0, 3.0, 10.0, 30.0],
                   help="Hu et al.'s α: a positive's confidence is 1 + α")
    p.add_argument("--ease-l2", nargs="+", type=float,
                   default=[50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0])
    p.add_argument("--out", default="runs/tune-als")
    p.add_argument("--table", help="also write the markdown table of the test runs here")
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
        args.ease_l2 = [1.0, 10.0]
    if not args.data:
        sys.exit("--data is required (or --quick)")
    split = load_split(args, args.seeds[0])
    rows = grid_search(args, split, Log(out / "grid.jsonl"))
    chosen = select(rows, "als", ALS_KEYS)
    ease = select(rows, "ease", ("l2",))
    arms = {"pop": ("pop", {}), "weak": ("als", WEAK), "shipped": ("als", shipped()),
            "tuned": ("als", chosen), "ease": ("ease", ease)}
    tests = test_runs(args, split, arms, Log(out / "tests.jsonl"))
    doc = {"grid": rows, "selected": chosen, "ease_selected": ease, "seeds": args.seeds,
           "arms": {arm: setting for arm, (_, setting) in arms.items()},
           "test": tests, "test_ndcg": {arm: [r["ndcg"] for r in runs]
                                        for arm, runs in tests.items()}}
    (out / "tune_als.json").write_text(json.dumps(doc, indent=2) + "\n")
    table = render(doc)
    (Path(args.table) if args.table else out / "table.md").write_text(table + "\n")
    print(table)
    for arm, values in doc["test_ndcg"].items():
        a = np.array(values)
        spread = f" ± {a.std(ddof=1):.4f}" if len(a) > 1 else ""
        print(f"{arm} {doc['arms'][arm]}: test ndcg@10 {a.mean():.4f}{spread} "
              f"over seeds {args.seeds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
