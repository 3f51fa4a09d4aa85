"""A large catalogue grown from a trained model (issue 18): recall that depends on C.

bench/catalogue.py plants clusters so clean that recall@10 is 1.000 at every C from 25 to
500; it cannot tell a good C from a bad one. This script keeps everything a trained model
learnt (its users, K and M, its item vectors and the users' histories) and grows the item
table to `--items` rows the way a real catalogue fills in: each new item is a variant of a
trained one, its parent drawn in proportion to popularity^alpha (popular regions get dense,
the tail stays sparse), placed at a Gaussian offset of the parent's own nearest-neighbour
distance (the trained spread, not an invented one), projected into the unit ball as training
does. Each user also gets `--extra` variants of their own history items as newest
interactions, so the grown items carry a popularity long tail and appear in histories.

The result is written through the real exporter (`training.exporter.export`): parity check,
FAISS index (HNSW above 50k items), histories, and the C/efSearch choice of
training/candidates.py, whose log says what it chose and why.

    python bench/grow_catalogue.py ARTIFACT_DIR --items 100000 --out runs/grown/ml1m-100k
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import artifact as art  # noqa: E402
from models.artifact_arrays import ArtifactArrays, read_arrays, user_history  # noqa: E402
from models.config import ModelConfig  # noqa: E402
from models.idmap import IdMap  # noqa: E402
from models.registry import build_model  # noqa: E402
from training.exporter import export  # noqa: E402
from training.index_builder import INDEX_KINDS  # noqa: E402
from training.interactions import Interactions  # noqa: E402


def nearest_distance(items: np.ndarray) -> np.ndarray:
    """Each trained item's distance to its nearest other trained item `[V0]`."""
    index = faiss.IndexFlatL2(items.shape[1])
    index.add(items)
    d2, _ = index.search(items, 2)
    return np.sqrt(np.maximum(d2[:, 1], 0.0)).astype(np.float32)


def grow_items(items: np.ndarray, popularity: np.ndarray, n_items: int, alpha: float,
               spread: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Item table `[V, d]`: the trained rows first, then variants; and each row's parent."""
    v0, dim = items.shape
    weight = (np.asarray(popularity, np.float64) + 1.0) ** alpha
    parent = rng.choice(v0, n_items - v0, p=weight / weight.sum())
    radius = spread * nearest_distance(items)[parent]  # [V - V0]
    noise = rng.standard_normal((len(parent), dim), dtype=np.float32)
    grown = items[parent] + noise * (radius / np.sqrt(dim))[:, None]
    grown /= np.maximum(np.linalg.norm(grown, axis=1, keepdims=True), 1.0)
    table = np.concatenate([items, grown]).astype(np.float32)
    return table, np.concatenate([np.arange(v0), parent])


def grow_log(arrays: ArtifactArrays, parent: np.ndarray, extra: int,
             rng: np.random.Generator) -> Interactions:
    """The trained histories plus `extra` variants of each user's own items, newest."""
    v0 = len(arrays.items)
    children: dict[int, np.ndarray] = {}
    order = np.argsort(parent[v0:], kind="stable")
    bounds = np.searchsorted(parent[v0:][order], np.arange(v0 + 1))
    for j in range(v0):
        children[j] = v0 + order[bounds[j]:bounds[j + 1]]
    users, items, stamps = [], [], []
    for u in range(len(arrays.users)):
        hist = user_history(arrays, u)  # newest first
        pool = np.concatenate([children[int(j)] for j in hist]) if len(hist) else hist
        new = rng.choice(pool, min(extra, len(pool)), replace=False) if len(pool) else pool
        rows = np.concatenate([hist[::-1], new])  # oldest first; the variants last
        users.append(np.full(len(rows), u, np.int64))
        items.append(rows.astype(np.int64))
        stamps.append(np.arange(len(rows), dtype=np.int64))
    n_items = len(parent)
    item_ids = np.asarray([str(x) for x in arrays.item_ids.ids]
                          + [f"grown{i}" for i in range(v0, n_items)], object)
    return Interactions(np.concatenate(users), np.concatenate(items),
                        np.ones(sum(len(x) for x in users), np.float32),
                        np.concatenate(stamps), IdMap(np.asarray(arrays.user_ids.ids, object)),
                        IdMap(item_ids))


def attention_stats(users: np.ndarray, items: np.ndarray, keys: np.ndarray,
                    rng: np.random.Generator, n: int = 4000) -> dict[str, float]:
    """Logit std, mean max slot weight and normalised entropy of softmax((p_u ⊙ q_v)K) over
    random user-item pairs: how much the relation depends on the item."""
    if keys.shape[1] < 2:
        return {}
    u = users[rng.integers(0, len(users), n)]
    q = items[rng.integers(0, len(items), n)]
    logits = (u * q) @ keys  # [n, N]
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    entropy = -(w * np.log(np.maximum(w, 1e-30))).sum(axis=1).mean() / np.log(w.shape[1])
    return {"logit_std": float(logits.std(axis=1).mean()), "max_weight": float(w.max(1).mean()),
            "entropy": float(entropy)}


def sharpened(keys: np.ndarray, users: np.ndarray, items: np.ndarray, logit_std: float | None,
              rng: np.random.Generator) -> np.ndarray:
    """K scaled so that the slot logits spread by `logit_std` (None: K as trained)."""
    if logit_std is None or keys.shape[1] < 2:
        return keys
    now = attention_stats(users, items, keys, rng)["logit_std"]
    return (keys * (logit_std / max(now, 1e-12))).astype(np.float32)


def grow(source: Path, out: Path, n_items: int, alpha: float, spread: float, extra: int,
         seed: int, ef_construction: int, logit_std: float | None = None,
         choose: bool = True, index: str = "auto") -> Path:
    """Grow the artifact at `source` to `n_items` items and export it under `out`."""
    vdir = art.resolve_version_dir(source)
    manifest = art.read_manifest(vdir)
    arrays = read_arrays(vdir)
    if manifest.kind not in ("hlr", "hlr++", "lrml", "cml"):
        raise SystemExit(f"{vdir}: a relational model is needed, not {manifest.kind}")
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    table, parent = grow_items(arrays.items, arrays.popularity, n_items, alpha, spread, rng)
    log = grow_log(arrays, parent, extra, rng)
    users = np.asarray(arrays.users)
    keys = sharpened(np.asarray(arrays.keys), users, table, logit_std, rng)
    attention = {"trained": attention_stats(users, table, np.asarray(arrays.keys), rng),
                 "served": attention_stats(users, table, keys, rng)}
    model = build_model(ModelConfig(**manifest.model), len(users), n_items)
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.from_numpy(users))
        model.item_emb.weight.copy_(torch.from_numpy(table))
        if model.lram is not None:
            model.lram.keys.copy_(torch.from_numpy(keys))
            model.lram.memories.copy_(torch.from_numpy(np.asarray(arrays.memories)))
    logging.info("grew %d -> %d items, %d interactions in %.1fs; attention %s",
                 len(arrays.items), n_items, len(log), time.perf_counter() - t0, attention)
    return export(model.eval(), log, out, ef_construction=ef_construction, index=index,
                  choose_retrieval=choose, metrics={"grown_from": manifest.version},
                  config={"grown": {"source": manifest.version, "items": n_items,
                                    "alpha": alpha, "spread": spread, "extra": extra,
                                    "logit_std": logit_std, "seed": seed,
                                    "attention": attention}})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", type=Path, help="a trained artifact (version dir or root)")
    p.add_argument("--items", type=int, default=100_000, help="items of the grown catalogue")
    p.add_argument("--alpha", type=float, default=1.0, help="parent ~ popularity^alpha")
    p.add_argument("--spread", type=float, default=1.0,
                   help="offset std in units of the parent's nearest-neighbour distance")
    p.add_argument("--extra", type=int, default=5, help="grown items added to each history")
    p.add_argument("--logit-std", type=float, default=None,
                   help="scale K so that the slot logits spread this much (a converged "
                   "model's sharper attention; default: K as trained)")
    p.add_argument("--no-choice", action="store_true",
                   help="skip the export's C/efSearch choice (bench/recall.py measures)")
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--index", choices=INDEX_KINDS, default="auto",
                   help="the exporter's index (flat: exact search over the grown items)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch/FAISS threads; 0: all")
    p.add_argument("--out", type=Path, required=True, help="artifacts root to write")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    version = grow(args.artifact, args.out, args.items, args.alpha, args.spread, args.extra,
                   args.seed, args.ef_construction, args.logit_std, not args.no_choice,
                   args.index)
    retrieval = art.read_manifest(version).retrieval
    print(f"grown catalogue: {version}\n  chosen: {retrieval}")


if __name__ == "__main__":
    main()
