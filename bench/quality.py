"""Quality benchmark: every algorithm on a real data set, full ranking @10, over seeds.

Trains pop, ALS, EASE, CML, LRML, HLR, HLR++ and AdaCML through the same pipeline as `relrec train`
(same split per seed for every algorithm), and writes a markdown table of mean ± std over seeds
with the epoch time and the share of the epoch spent outside the model (batch building).

    python bench/quality.py --data ../shared/data/ml-1m/ratings_user_item_rating.csv.gz \
        --seeds 0 1 2 --out runs/quality-ml1m --table docs/quality-ml1m.md
    python bench/quality.py --quick      # seconds, on a generated sample (run by the tests)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.config import load_config  # noqa: E402
from training.pipeline import prepare, run  # noqa: E402

ALL = ["pop", "als", "ease", "cml", "lrml", "hlr", "hlr++", "adacml", "serml"]
COLUMNS = ["precision", "recall", "ndcg", "map", "mrr"]


def run_one(args: argparse.Namespace, algorithm: str, seed: int, split, out: Path) -> dict:
    overrides = [f"trainer.epochs={args.epochs}", f"trainer.lr={args.lr}",
                 f"model.margin={args.margin}", f"model.dim={args.dim}",
                 f"model.n_memory={args.memories}", f"model.l_max={args.max_history}",
                 f"trainer.eval_users={args.eval_users}", f"trainer.patience={args.patience}",
                 f"eval.k={args.k}", f"eval.sampled={str(args.sampled).lower()}",
                 f"trainer.batch_size={args.batch_size}",
                 f"trainer.progress={str(not args.quiet).lower()}"]
    overrides += args.set
    cfg = load_config(None, overrides, algorithm=algorithm,
                      data={"path": args.data, "k_core": args.k_core, "seed": seed,
                            "split": args.split, "min_rating": args.min_rating},
                      trainer={"seed": seed})
    start = time.perf_counter()
    run_dir = out / f"{algorithm.replace('+', 'p')}-s{seed}"
    # top-k lists for the report's coverage and long-tail figures
    doc = run(cfg, run_dir, split=split, topk_out=run_dir / "topk.csv").metrics
    doc["wall_s"] = time.perf_counter() - start
    return doc


def summarise(docs: list[dict]) -> dict:
    out = {}
    if all("sampled" in d for d in docs):  # the sampled protocol's HR and NDCG, when run
        for name in ("hr", "ndcg"):
            values = np.array([d["sampled"][name] for d in docs])
            out[f"sampled_{name}"] = (float(values.mean()),
                                      float(values.std(ddof=1)) if len(values) > 1 else None)
    for name in [*COLUMNS, "median_popularity"]:
        values = np.array([d["metrics"][name] for d in docs])
        if len(values) > 1:
            out[name] = (float(values.mean()), float(values.std(ddof=1)))
        else:  # one seed: the spread is the 95% CI over users
            ci = docs[0].get("spread", {}).get(name, {}).get("ci95") or 0.0
            out[name] = (float(values[0]), float(ci))
    epoch = [d["training"]["epoch_time_s"] for d in docs if "training" in d]
    share = [d["training"]["data_share"] for d in docs if "training" in d]
    best = [d["training"]["best_epoch"] for d in docs if "training" in d]
    out["epoch_time_s"] = float(np.mean(epoch)) if epoch else None
    out["data_share"] = float(np.mean(share)) if share else None
    out["best_epoch"] = float(np.mean(best)) if best else None
    out["wall_s"] = float(np.mean([d["wall_s"] for d in docs]))
    out["n_seeds"] = len(docs)
    return out


def render(rows: dict[str, dict], k: int = 10) -> str:
    """Markdown table; a row's ± is the std over its seeds, or the 95% CI over users for one.

    With the sampled protocol run for every row, its HR and NDCG come first (std over seeds,
    no spread for one seed), marked "sampled": the two protocols disagree, never compare them.
    """
    sampled = bool(rows) and all("sampled_hr" in s for s in rows.values())
    extra = [f"HR@{k} sampled", f"NDCG@{k} sampled"] if sampled else []
    head = ("| model | seeds | " + " | ".join([*extra, *(f"{c}@{k}" for c in COLUMNS)])
            + " | median pop | epoch s | outside model | best epoch | wall s |")
    lines = [head, "|" + "---|" * (len(COLUMNS) + len(extra) + 7)]
    for algo, s in rows.items():
        cells = [_cell(s[f"sampled_{n}"]) for n in ("hr", "ndcg")] if sampled else []
        cells += [f"{100 * s[c][0]:.2f} ± {100 * s[c][1]:.2f}" for c in COLUMNS]
        epoch = "" if s["epoch_time_s"] is None else f"{s['epoch_time_s']:.1f}"
        share = "" if s["data_share"] is None else f"{100 * s['data_share']:.0f}%"
        best = "" if s["best_epoch"] is None else f"{s['best_epoch']:.1f}"
        lines.append(f"| {algo} | {s['n_seeds']} | " + " | ".join(cells)
                     + f" | {s['median_popularity'][0]:.0f} | {epoch} | {share} | {best} |"
                     f" {s['wall_s']:.0f} |")
    lines.append("\nMetrics in %: mean ± std over the row's seeds (split and init seeded together);"
                 " with one seed, ± is the 95% CI half-width over users. Full ranking,"
                 " train+validation items excluded.")
    return "\n".join(lines)


def _cell(value: tuple[float, float | None]) -> str:
    mean, std = value
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def render_runs(out: Path, table_path: str | None) -> int:
    """Table from finished runs (`<algo>-s<seed>/metrics.json`), e.g. of an interrupted sweep."""
    per_algo: dict[str, list[dict]] = {}
    for path in sorted(out.glob("*-s*/metrics.json")):
        doc = json.loads(path.read_text())
        doc.setdefault("wall_s", doc.get("fit_time_s", 0.0))
        per_algo.setdefault(doc["model"], []).append(doc)
    order = [a for a in ALL if a in per_algo]
    k = next(iter(per_algo.values()))[0].get("k", 10) if per_algo else 10
    table = render({a: summarise(per_algo[a]) for a in order}, k)
    print(table)
    if table_path:
        Path(table_path).write_text(table + "\n")
    if per_algo:
        write_html(out)
    return 0


def write_html(out: Path) -> None:
    """`relrec report` of every run under `out`: curves, metrics with CIs, popularity."""
    from training.report import write_report

    print(f"report written to {write_report([out], out / 'report.html', title=f'quality: {out}')}")


def add_training_args(p: argparse.ArgumentParser) -> None:
    """Data filters, seeds and the relational hyper-parameters: shared with bench/cold_start.py."""
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--min-rating", type=float, default=4.0)
    p.add_argument("--no-threshold", action="store_true",
                   help="keep every interaction as a positive (play counts: Last.fm)")
    p.add_argument("--k-core", type=int, default=10)
    p.add_argument("--k", type=int, default=10, help="cut-off of every metric")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--margin", type=float, default=0.5)
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--memories", type=int, default=20)
    p.add_argument("--max-history", type=int, default=50)
    p.add_argument("--eval-users", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--set", action="append", default=[], help="section.key=value override")
    p.add_argument("--table", help="write the markdown table to this file too")
    p.add_argument("--quiet", action="store_true")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data")
    p.add_argument("--models", nargs="+", default=ALL[:-1], help="default: all but serml")
    p.add_argument("--split", default="per-user")
    add_training_args(p)
    p.add_argument("--sampled", action="store_true",
                   help="also the sampled protocol (100 negatives; LRML/SERML papers)")
    p.add_argument("--out", default="runs/quality")
    p.add_argument("--quick", action="store_true", help="tiny generated data, seconds")
    p.add_argument("--from-runs", action="store_true",
                   help="only render the table from the metrics.json files under --out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO)
    out = Path(args.out)
    if args.from_runs:
        return render_runs(out, args.table)
    if args.quick:
        from training.synthetic import write_sample

        out.mkdir(parents=True, exist_ok=True)
        args.data = str(write_sample(out / "sample.csv", n_users=200, n_items=100, seed=0))
        args.seeds, args.epochs, args.dim, args.memories = args.seeds[:1], 1, 8, 4
        args.max_history, args.k_core, args.quiet = 8, 5, True
    if not args.data:
        sys.exit("--data is required (or --quick)")
    if args.no_threshold:  # a None keyword is "not given" to load_config: override instead
        args.set.append("data.min_rating=null")
    per_algo: dict[str, list[dict]] = {a: [] for a in args.models}
    for seed in args.seeds:
        data_sets = [o for o in args.set if o.startswith("data.")]
        split = prepare(load_config(None, data_sets, algorithm="pop",
                                    data={"path": args.data, "k_core": args.k_core,
                                          "seed": seed, "split": args.split,
                                          "min_rating": args.min_rating}))
        for algo in args.models:
            doc = run_one(args, algo, seed, split, out)
            per_algo[algo].append(doc)
            print(f"{algo} seed {seed}: ndcg@{args.k} {doc['metrics']['ndcg']:.4f} "
                  f"({doc['wall_s']:.0f}s)", flush=True)
    table = render({a: summarise(d) for a, d in per_algo.items() if d}, args.k)
    print(table)
    (out / "results.json").write_text(json.dumps(per_algo, indent=2))
    if args.table:
        Path(args.table).write_text(table + "\n")
    write_html(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
