"""Cold users benchmark: users known only by what they posted, served through the real API.

Protocol (issue 16): 10% of the users (seeded) are removed, with every interaction, before
anything is trained. The rest is written as a log and trained as production would be
(`relrec train --final`: epochs selected on validation, then refit on everything), exported and
served by a running `relrec serve` (SQLite history). For n in {1, 5, 10, 20}, each removed user's
first n positives (time order where the log has timestamps, else a seeded order) are POSTed to
`/interactions` as a new user, `GET /recommend?k=10` is asked, and Recall@10 / NDCG@10 are
measured on the user's remaining positives (restricted to the served catalogue, the same for
every method). Compared on the same split and catalogue:

- `relrec (fold-in)`: the service as shipped (`RELREC_FOLD_IN=true`, service/foldin.py);
- `relrec (mean of items)`: the same artifact with `RELREC_FOLD_IN=false`;
- `most popular`: training popularity, the posted items excluded;
- `ALS fold-in`: implicit's ALS fitted on the same training log, the user folded in by
  `recommend(..., recalculate_user=True)`; factors, λ and α chosen on *other* users held out of
  the training log the same way (never on the evaluated users).

Also the fold-in's own cost: microseconds per user at 50 history items, measured on the
artifact's tables in this process. Writes `cold_users.json` (partial results as each method
finishes) and a markdown table.

    python bench/cold_users.py --data ../shared/data/ml-latest-small/ratings.csv \\
        --out runs/cold-users-mls
    python bench/cold_users.py --quick --out /tmp/cold-quick      # seconds, generated data
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve import machine  # noqa: E402  (bench/serve.py, beside this file)

from models import artifact as art  # noqa: E402
from models.artifact_arrays import read_arrays  # noqa: E402
from service.client import Interaction, RelrecApiError, RelrecClient  # noqa: E402
from tests.redis_process import free_port  # noqa: E402
from training.filters import binarize  # noqa: E402
from training.interactions import Interactions  # noqa: E402
from training.readers import read_log  # noqa: E402

log = logging.getLogger("cold_users")
NS = (1, 5, 10, 20)
K = 10
ALS_GRID = [(f, reg, a) for f in (64, 128) for reg in (1.0, 10.0, 30.0) for a in (1.0, 10.0)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="interaction log (any format relrec reads)")
    p.add_argument("--quick", action="store_true", help="generated data, a tiny model")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="hlr")
    p.add_argument("--fraction", type=float, default=0.1, help="users removed before training")
    p.add_argument("--ns", nargs="+", type=int, default=list(NS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-rating", type=float, default=4.0)
    p.add_argument("--k-core", type=int, default=10, help="of the selection run only")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--memories", type=int, default=20)
    p.add_argument("--max-history", type=int, default=50)
    p.add_argument("--no-final", action="store_true", help="serve the selection model")
    p.add_argument("--set", action="append", default=[], help="section.key=value override")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.patience, args.dim, args.memories = 3, 3, 16, 4
        args.max_history, args.lr, args.k_core = 10, 0.01, 5
    elif not args.data:
        p.error("--data is required without --quick")
    return args


# -- the split: users removed before training -------------------------------------------------


def positives(args: argparse.Namespace, workdir: Path) -> Interactions:
    """The binarised log (every positive; no k-core: production keeps the whole catalogue)."""
    if args.quick:
        from training.synthetic import write_sample

        args.data = str(write_sample(workdir / "sample.csv", n_users=400, n_items=200,
                                     n_communities=4, items_per_user=30, seed=args.seed))
    return binarize(read_log(args.data), args.min_rating)


def hold_out(pos: Interactions, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint seeded user sets of `fraction` each: evaluated users, and the users ALS's
    hyper-parameters are chosen on. Returns user rows."""
    rng = np.random.default_rng(seed)
    users = rng.permutation(pos.n_users)
    n = max(1, int(round(fraction * pos.n_users)))
    return np.sort(users[:n]), np.sort(users[n:2 * n])


def ordered_items(pos: Interactions, user_rows: np.ndarray, seed: int) -> dict[str, list[str]]:
    """Each user's positives (item ids), oldest first; seeded order without timestamps."""
    out: dict[str, list[str]] = {}
    for u in user_rows.tolist():
        idx = np.flatnonzero(pos.user_rows == u)
        if pos.timestamps is not None:
            idx = idx[np.argsort(pos.timestamps[idx], kind="stable")]
        else:
            idx = np.random.default_rng([seed, u]).permutation(idx)
        out[str(pos.users.ids[u])] = [str(pos.items.ids[i]) for i in pos.item_rows[idx]]
    return out


def write_log(pos: Interactions, keep: np.ndarray, path: Path) -> Path:
    """The training log: the positives of the users kept, as user,item,rating,timestamp."""
    sel = pos.select(keep)
    frame = pd.DataFrame({"user": sel.users.ids[sel.user_rows],
                          "item": sel.items.ids[sel.item_rows], "rating": 5})
    if sel.timestamps is not None:
        frame["timestamp"] = sel.timestamps
    frame.to_csv(path, index=False)
    return path


# -- training and serving ---------------------------------------------------------------------


def train_and_export(args: argparse.Namespace, log_path: Path, workdir: Path) -> Path:
    from training.config import load_config
    from training.exporter import export_run
    from training.pipeline import run

    cfg = load_config(None, list(args.set), algorithm=args.model,
                      data={"path": str(log_path), "k_core": args.k_core, "seed": args.seed},
                      model={"dim": args.dim, "n_memory": args.memories,
                             "l_max": args.max_history},
                      trainer={"epochs": args.epochs, "patience": args.patience, "lr": args.lr,
                               "batch_size": args.batch_size, "seed": args.seed,
                               "progress": False},
                      eval={"sampled": False}, final=not args.no_final)
    run(cfg, workdir / "run")
    return export_run(workdir / "run", workdir / "artifacts")


def start_server(artifact: Path, workdir: Path, fold_in: bool) -> tuple[str, Any]:
    import subprocess

    port = free_port()
    db = workdir / f"history-{fold_in}.db"
    db.unlink(missing_ok=True)
    env = {**os.environ, "RELREC_RELOAD_POLL_S": "0", "RELREC_LOG_LEVEL": "WARNING",
           "RELREC_FOLD_IN": str(fold_in).lower(), "RELREC_ORT_THREADS": "1",
           "RELREC_FAISS_THREADS": "1", "RELREC_MAX_BATCH": "100000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--artifact-dir",
         str(artifact), "--history-url", f"sqlite:///{db}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    with RelrecClient(url, timeout=2.0) as relrec:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"relrec serve exited with {proc.returncode}")
            try:
                relrec.ready()
                return url, proc
            except (RelrecApiError, httpx.HTTPError):  # 503 while loading, or not listening
                pass
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("relrec serve did not become ready")


def served_lists(url: str, users: dict[str, list[str]], n: int, tag: str) -> dict[str, list[str]]:
    """POST each user's first n positives as a new user, then GET their top K, through the
    typed client (this bench measures quality, not speed: the client's parsing costs nothing
    it reports). An error answer raises RelrecApiError."""
    out = {}
    with RelrecClient(url, timeout=30.0) as relrec:
        for user, items in users.items():
            uid = f"cold-{tag}-{n}-{user}"
            posted = relrec.post_interactions(
                [Interaction(uid, i, timestamp=1_000_000 + j) for j, i in enumerate(items[:n])])
            if posted.rejected:
                raise RuntimeError(f"{uid}: {len(posted.rejected)} interactions rejected")
            out[user] = [x.item_id for x in relrec.recommend(uid, k=K).items]
    return out


# -- baselines on the same split --------------------------------------------------------------


def popular_lists(arrays: Any, users: dict[str, list[str]], n: int) -> dict[str, list[str]]:
    order = [str(arrays.item_ids.ids[r]) for r in np.argsort(-np.asarray(arrays.popularity),
                                                               kind="stable")]
    out = {}
    for user, items in users.items():
        posted = set(items[:n])
        out[user] = [i for i in order[: K + n] if i not in posted][:K]
    return out


def fit_als(train_log: Interactions, factors: int, reg: float, alpha: float, seed: int) -> Any:
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=factors, regularization=reg, alpha=alpha,
                                        iterations=15, random_state=seed, num_threads=1)
        model.fit(train_log.to_csr(), show_progress=False)
    return model


def als_lists(model: Any, items: Any, users: dict[str, list[str]], n: int) -> dict[str, list[str]]:
    from scipy.sparse import csr_matrix

    out = {}
    for user, its in users.items():
        rows = sorted({items.get(i) for i in its[:n]} - {-1})
        if not rows:
            out[user] = []
            continue
        hist = csr_matrix((np.ones(len(rows), np.float32), ([0] * len(rows), rows)),
                          shape=(1, len(items)))
        ids, _ = model.recommend(0, hist, N=K, recalculate_user=True)
        out[user] = [str(items.ids[r]) for r in ids]
    return out


def select_als(pos: Interactions, train_mask: np.ndarray, tune_users: dict[str, list[str]],
               catalogue: set[str], seed: int, ns: list[int]) -> tuple[tuple, list[dict]]:
    """ALS's factors, λ, α by mean Recall@10 over n on the tuning users (not the evaluated
    ones), fitted on the training log without them."""
    from training.interactions import densify

    tune_rows = np.isin(pos.users.ids[pos.user_rows], list(tune_users))
    fit_log = densify(pos.select(train_mask & ~tune_rows))
    grid = []
    for f, reg, a in ALS_GRID:
        model = fit_als(fit_log, f, reg, a, seed)
        rec = np.mean([score(als_lists(model, fit_log.items, tune_users, n), tune_users, n,
                             catalogue)["recall"] for n in ns])
        grid.append({"factors": f, "regularization": reg, "alpha": a, "tune_recall": rec})
        log.info("ALS %s: tuning recall %.4f", grid[-1], rec)
    best = max(grid, key=lambda g: g["tune_recall"])
    return (best["factors"], best["regularization"], best["alpha"]), grid


# -- metrics -----------------------------------------------------------------------------------


def score(lists: dict[str, list[str]], users: dict[str, list[str]], n: int,
          catalogue: set[str]) -> dict[str, float]:
    """Recall@K (hits / |rest|) and NDCG@K (IDCG over min(|rest|, K)) over users with a rest."""
    recalls, ndcgs = [], []
    disc = 1.0 / np.log2(np.arange(2, K + 2))
    for user, items in users.items():
        rest = {i for i in items[n:] if i in catalogue} - set(items[:n])
        if not rest:
            continue
        hits = np.array([i in rest for i in lists.get(user, [])[:K]], float)
        recalls.append(hits.sum() / len(rest))
        dcg = float((hits * disc[: len(hits)]).sum())
        ndcgs.append(dcg / disc[: min(len(rest), K)].sum())
    return {"recall": float(np.mean(recalls)) if recalls else float("nan"),
            "ndcg": float(np.mean(ndcgs)) if ndcgs else float("nan"), "users": len(recalls)}


def time_fold_in(vdir: Path, n_hist: int = 50, users: int = 300) -> dict[str, float]:
    """Microseconds per user of the artifact's declared fold-in at `n_hist` history items."""
    from service.foldin import build_fold_in

    manifest = art.read_manifest(vdir)
    arrays = read_arrays(vdir)
    fold = build_fold_in(manifest.fold_in, arrays, margin=float(manifest.model.get("margin", .5)))
    rng = np.random.default_rng(0)
    hists = [rng.choice(len(arrays.item_ids), min(n_hist, len(arrays.item_ids)), replace=False)
             for _ in range(users)]
    for h in hists[:20]:
        fold.vector(h)  # warm-up
    times = []
    for h in hists:
        t0 = time.perf_counter()
        fold.vector(h)
        times.append(time.perf_counter() - t0)
    us = np.array(times) * 1e6
    return {"history": n_hist, "median_us": float(np.median(us)),
            "p99_us": float(np.percentile(us, 99)), "method": type(fold).__name__}


# -- the run -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"data": args.data, "model": args.model, "seed": args.seed,
                           "final": not args.no_final, "k": K, "machine": machine(),
                           "fraction": args.fraction, "rows": {}}
    pos = positives(args, out)
    doc["data"] = args.data
    held, tune = hold_out(pos, args.fraction, args.seed)
    held_items = ordered_items(pos, held, args.seed)
    tune_items = ordered_items(pos, tune, args.seed)
    train_mask = ~np.isin(pos.user_rows, held)
    t0 = time.perf_counter()
    vdir = train_and_export(args, write_log(pos, train_mask, out / "train.csv"), out)
    doc["train_s"] = time.perf_counter() - t0
    arrays = read_arrays(vdir)
    catalogue = set(arrays.item_ids.to_list())
    doc["counts"] = {"users": pos.n_users, "held_users": len(held), "train_users":
                     len(arrays.user_ids), "catalogue": len(catalogue)}
    doc["fold_in_cost"] = time_fold_in(vdir)
    save(out, doc)
    methods = {}
    for fold_in, name in ((True, "relrec (fold-in)"), (False, "relrec (mean of items)")):
        url, proc = start_server(vdir.parent, out, fold_in)
        try:
            methods[name] = {n: served_lists(url, held_items, n, name[8:12]) for n in args.ns}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        record(doc, name, methods[name], held_items, catalogue, out)
    record(doc, "most popular", {n: popular_lists(arrays, held_items, n) for n in args.ns},
           held_items, catalogue, out)
    (f, reg, a), grid = select_als(pos, train_mask, tune_items, catalogue, args.seed, args.ns)
    doc["als"] = {"selected": {"factors": f, "regularization": reg, "alpha": a}, "grid": grid}
    from training.interactions import densify

    fit_log = densify(pos.select(train_mask))
    als = fit_als(fit_log, f, reg, a, args.seed)
    record(doc, "ALS fold-in (recalculate_user)",
           {n: als_lists(als, fit_log.items, held_items, n) for n in args.ns}, held_items,
           catalogue, out)
    table = render(doc)
    (out / "cold_users.md").write_text(table + "\n")
    sys.stdout.write(table + "\n")
    return doc


def record(doc: dict[str, Any], name: str, lists: dict[int, dict[str, list[str]]],
           users: dict[str, list[str]], catalogue: set[str], out: Path) -> None:
    doc["rows"][name] = {str(n): score(lst, users, n, catalogue) for n, lst in lists.items()}
    log.info("%s: %s", name, doc["rows"][name])
    save(out, doc)


def save(out: Path, doc: dict[str, Any]) -> None:
    (out / "cold_users.json").write_text(json.dumps(doc, indent=2) + "\n")


def render(doc: dict[str, Any]) -> str:
    ns = list(next(iter(doc["rows"].values())))
    head = "| method | " + " | ".join(f"n={n} R@10 | n={n} N@10" for n in ns) + " |"
    lines = [head, "|---|" + "---:|" * (2 * len(ns))]
    for name, row in doc["rows"].items():
        cells = " | ".join(f"{row[n]['recall']:.4f} | {row[n]['ndcg']:.4f}" for n in ns)
        lines.append(f"| {name} | {cells} |")
    users = " ".join(f"n={n}: {row[n]['users']}" for n in ns
                     for row in [next(iter(doc["rows"].values()))])
    cost = doc["fold_in_cost"]
    lines += ["", f"users evaluated ({users}); fold-in {cost['method']} at {cost['history']} "
              f"items: median {cost['median_us']:.0f} µs, p99 {cost['p99_us']:.0f} µs"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
