"""Cold-start benchmark: items held out of training entirely, placed by their text.

Holds 10% of the items (drawn among those with text) out of the log before the split, trains
HLR (or any relational model) with `--item-text` on the rest, then ranks the held-out items for
the users who interacted with them, placed three ways: the learned text projection, a random
trained item's vector, the most popular trained item's vector (`training/text/cold_start.py`). Two
catalogues: the held-out items alone, and the whole catalogue. Then the same through the API
(issue 20, `bench/cold_start_api.py`, off with --no-api): the model exported without the
held-out items, served, the items PUT with their text. Writes one JSON per seed and a
markdown table of mean ± std over seeds.

    python bench/cold_start.py --data ../shared/data/ml-latest-small/ratings.csv \\
        --item-text ../shared/data/ml-latest-small --seeds 0 1 2 --out runs/cold-mls
    python bench/cold_start.py --quick     # seconds, planted data and the hashing encoder
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

from cold_start_api import api_report  # noqa: E402  (bench/cold_start_api.py)
from quality import add_training_args  # noqa: E402  (bench/quality.py, beside this file)

from training.config import load_config  # noqa: E402
from training.evaluator import full_ranking  # noqa: E402
from training.pipeline import fit_model, load_interactions  # noqa: E402
from training.text.cold_start import (  # noqa: E402
    CATALOGUES,
    PLACEMENTS,
    cold_start_report,
    hold_out_items,
    placement_vectors,
    warm_report_with_new_items,
)
from training.text.readers import read_item_text  # noqa: E402
from training.torch_scorer import ModelScorer  # noqa: E402

METRICS = ("recall", "ndcg")


def seed_config(args: argparse.Namespace, seed: int):  # -> TrainConfig
    """The training configuration of one seed."""
    overrides = [f"data.min_rating={json.dumps(None if args.no_threshold else args.min_rating)}",
                 *args.set]
    cfg = load_config(None, overrides, algorithm=args.model,
                      data={"path": args.data, "k_core": args.k_core, "seed": seed},
                      model={"dim": args.dim, "n_memory": args.memories,
                             "l_max": args.max_history, "margin": args.margin},
                      trainer={"seed": seed, "epochs": args.epochs, "patience": args.patience,
                               "lr": args.lr, "batch_size": args.batch_size,
                               "eval_users": args.eval_users, "progress": not args.quiet},
                      text={"item_text": args.item_text, "encoder": args.encoder,
                            "cache_dir": args.cache},
                      eval={"k": args.k, "sampled": False})
    return cfg


def run_seed(args: argparse.Namespace, seed: int) -> dict:
    """Hold out, train, and score every placement on both catalogues for one seed."""
    cfg = seed_config(args, seed)
    inter = load_interactions(cfg)
    texts = read_item_text(args.item_text)
    cold = hold_out_items(inter, texts.item_ids, args.fraction, "per-user", seed)
    started = time.perf_counter()
    fit = fit_model(cfg, cold.split)
    model, dataset, result = fit.model, fit.dataset, fit.result
    fit_s = time.perf_counter() - started
    warm = full_ranking(ModelScorer(model, dataset, seed=seed), cold.split, k=args.k,
                        stage="test", progress=False).means()
    doc: dict = {"seed": seed, "model": args.model, "k": args.k, "fit_s": fit_s,
                 "best_epoch": result.best_epoch, "warm": {m: warm[m] for m in METRICS},
                 "counts": {"items": inter.n_items, "cold_items": len(cold.cold_ids),
                            "cold_interactions": len(cold),
                            "cold_users": len(np.unique(cold.cold_users)),
                            "train": len(cold.split.train)},
                 "cold": {}, "warm_with_new": {}}
    placements = {}
    for how in PLACEMENTS:
        vectors = placement_vectors(model, cold.split.train, cold.cold_ids, how,
                                    fit.text_items, seed)
        placements[how] = vectors
        for catalogue in CATALOGUES:
            means = cold_start_report(model, cold, vectors, catalogue, args.k, seed).means()
            doc["cold"][f"{how}/{catalogue}"] = {m: means[m] for m in METRICS}
        means = warm_report_with_new_items(model, cold, vectors, args.k, seed).means()
        doc["warm_with_new"][how] = {m: means[m] for m in METRICS}
    if args.api:
        assert fit.text_items is not None
        text_of = dict(zip(texts.item_ids.tolist(), texts.texts, strict=True))
        doc["api"] = api_report(model, cold, fit.text_items, text_of, placements, args.k,
                                Path(args.out) / f"api-seed{seed}")
    return doc


def remeasure_api(args: argparse.Namespace, seed: int, doc: dict) -> dict:
    """Re-measure the API part of a seed's JSON against the artifact it exported, without
    retraining (the held-out split is drawn again from the seed; text placed by PUT, the
    baselines drawn from the artifact's trained rows as `placement_vectors` draws them)."""
    from cold_start_api import artifact_placements, measure

    inter = load_interactions(seed_config(args, seed))
    texts = read_item_text(args.item_text)
    cold = hold_out_items(inter, texts.item_ids, args.fraction, "per-user", seed)
    artifacts = Path(args.api_artifacts)
    placements = {"text": np.zeros((len(cold.cold_ids), 0)),
                  **artifact_placements(artifacts, cold.cold_ids, seed)}
    text_of = dict(zip(texts.item_ids.tolist(), texts.texts, strict=True))
    api = measure(artifacts, cold, text_of, placements, args.k, artifacts.parent)
    doc["api"] = {**doc["api"], **api}
    return doc


def render(docs: list[dict]) -> str:
    """Rows: placement × catalogue, then the warm test; cells mean ± std over seeds."""
    k = docs[0]["k"]

    def cell(values: list[float]) -> str:
        a = np.array(values)
        return f"{a.mean():.4f}" + (f" ± {a.std(ddof=1):.4f}" if len(a) > 1 else "")

    lines = [f"| placement | catalogue | Recall@{k} | NDCG@{k} | warm Recall@{k} |",
             "|---|---|---:|---:|---:|"]
    for key in docs[0]["cold"]:
        how, catalogue = key.split("/")
        where = ("held-out items only" if catalogue == "cold" else "whole catalogue")
        cells = [cell([d["cold"][key][m] for d in docs]) for m in METRICS]
        # the warm test with the new items in the catalogue: what the placement costs
        warm = (cell([d["warm_with_new"][how]["recall"] for d in docs])
                if catalogue == "all" else "")
        lines.append(f"| {how} | {where} | " + " | ".join(cells) + f" | {warm} |")
    warm = cell([d["warm"]["recall"] for d in docs])
    lines.append(f"| (no new items) | warm items only | | | {warm} |")
    if all("api" in d for d in docs):
        lines += ["", f"Through the API (PUT /items with the text; baselines installed as the "
                      f"engine's items): Recall@{k}", "",
                  "| placement | catalogue | Recall@10 (API) | Recall@10 (offline) |",
                  "|---|---|---:|---:|"]
        for key in docs[0]["api"]["recall"]:
            how, catalogue = key.split("/")
            where = ("held-out items only" if catalogue == "cold" else "whole catalogue")
            api = cell([d["api"]["recall"][key] for d in docs])
            offline = cell([d["cold"][key]["recall"] for d in docs])
            lines.append(f"| {'text (PUT)' if how == 'text' else how} | {where} | {api} | "
                         f"{offline} |")
        a = docs[0]["api"]
        lines.append(f"\nAPI, seed {docs[0]['seed']}: {a['users']} users ({a['users_unknown']} "
                     f"unknown to the artifact, left out); PUT {a['put_ms_per_item']:.1f} ms "
                     f"per item; PUT vectors vs the offline projection: max |Δ| "
                     f"{a['text_vs_offline_max_abs']:.1e}.")
    c = docs[0]["counts"]
    lines.append(f"\n{len(docs)} seed(s); seed {docs[0]['seed']}: {c['cold_items']} of "
                 f"{c['items']} items held out, {c['cold_interactions']} interactions with them "
                 f"from {c['cold_users']} users; {c['train']} warm train pairs. Model "
                 f"{docs[0]['model']}, best epochs {[d['best_epoch'] for d in docs]}.")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data")
    p.add_argument("--item-text", help="item text: a MovieLens/Last.fm folder or a CSV")
    p.add_argument("--model", default="hlr", choices=["cml", "lrml", "hlr", "hlr++", "adacml"])
    p.add_argument("--encoder", default="minilm", choices=["minilm", "hashing"])
    p.add_argument("--cache", default=".relrec/text-cache", help="text embedding cache")
    p.add_argument("--fraction", type=float, default=0.1, help="share of items held out")
    add_training_args(p)
    p.add_argument("--out", default="runs/cold-start")
    p.add_argument("--quick", action="store_true", help="planted data, hashing encoder, seconds")
    p.add_argument("--no-api", dest="api", action="store_false",
                   help="skip the measurement through the API (bench/cold_start_api.py)")
    p.add_argument("--api-artifacts", help="re-measure the API part of --out's seed JSON "
                   "against this exported artifact (one seed), without retraining")
    return p.parse_args(argv)


def quick_inputs(args: argparse.Namespace, out: Path) -> None:
    """Planted log + planted item text, small model: the suite runs this."""
    from training.synthetic import planted_interactions, write_item_text, write_sample

    spec = {"n_users": 240, "n_items": 120, "n_communities": 4, "items_per_user": 24,
            "noise": 0.05, "seed": 0}
    args.data = str(write_sample(out / "sample.csv", **spec))
    args.item_text = str(write_item_text(planted_interactions(**spec), out / "items.csv"))
    args.seeds, args.epochs, args.patience, args.k_core = args.seeds[:1], 8, 8, 5
    args.dim, args.memories, args.max_history, args.batch_size = 16, 4, 8, 256
    args.lr, args.encoder, args.quiet, args.fraction = 0.02, "hashing", True, 0.1
    args.cache = str(out / "text-cache")
    args.set = [*args.set, "text.align_weight=0.5"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        quick_inputs(args, out)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO)
    if not args.data or not args.item_text:
        sys.exit("--data and --item-text are required (or --quick)")
    docs = []
    for seed in args.seeds:
        if args.api_artifacts:
            doc = remeasure_api(args, seed, json.loads((out / f"seed{seed}.json").read_text()))
        else:
            doc = run_seed(args, seed)
        (out / f"seed{seed}.json").write_text(json.dumps(doc, indent=2) + "\n")
        print(f"seed {seed}: " + ", ".join(f"{key} {v['recall']:.4f}"
                                           for key, v in doc["cold"].items()), flush=True)
        docs.append(doc)
    table = render(docs)
    print(table)
    if args.table:
        Path(args.table).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
