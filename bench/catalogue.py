"""Synthetic catalogues for the serving benchmarks (issue 7): a valid artifact, no training.

Builds a real HLR (`models.registry.build_model`) whose parameters are planted instead of
learnt, invents user histories that agree with them, and writes the artifact through the real
exporter (`training.exporter.export`: ONNX scorer with its parity check, FAISS index, id maps,
CSR histories, manifest), so the service's loader accepts it like any trained version.

The planted structure makes retrieval recall meaningful: item vectors sit in clusters (a
centre plus noise, in the unit ball), each user belongs to one cluster, with a user vector
placed so that p_u + mean(M) lands near the centre (the relation moves users towards their
items, as training would), and a history drawn from that cluster. K is scaled up from the
training init so that the attention over memory slots is far from uniform: the relation then
depends on the item and the history, and the translated FAISS query is only an estimate.

    python bench/catalogue.py --items 10000,100000,1000000 --cache runs/catalogues
    python bench/catalogue.py --items 2000 --users 500 --cache /tmp/cat --quick

A catalogue is cached under `--cache` by its parameters and never rebuilt; the build times
(planting, export, and the exporter's steps) are kept in `catalogue.json` beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import artifact as art  # noqa: E402
from models.base import RelationalModel  # noqa: E402
from models.config import ModelConfig  # noqa: E402
from models.idmap import IdMap  # noqa: E402
from models.registry import build_model  # noqa: E402
from training.exporter import HNSW_EF_CONSTRUCTION, export  # noqa: E402
from training.index_builder import INDEX_KINDS  # noqa: E402
from training.interactions import Interactions  # noqa: E402

INFO = "catalogue.json"


@dataclass(frozen=True)
class CatalogueSpec:
    """Everything a catalogue is built from; its directory name is derived from it."""

    n_items: int
    n_users: int = 20_000
    dim: int = 100
    n_memory: int = 20
    l_max: int = 50
    items_per_cluster: int = 500
    item_noise: float = 0.5  # std of an item's offset from its centre, relative to |centre|
    key_scale: float = 20.0  # K ~ N(0, key_scale/√d): attention logits spread ~1
    min_history: int = 5
    max_history: int = 100
    ef_construction: int = HNSW_EF_CONSTRUCTION
    seed: int = 0
    index: str = "auto"  # the exporter's --index

    @property
    def name(self) -> str:
        kind = "" if self.index == "auto" else f"-{self.index}"  # auto: the names of before
        return (
            f"hlr-items{self.n_items}-users{self.n_users}-d{self.dim}-N{self.n_memory}"
            f"-L{self.l_max}-efc{self.ef_construction}-seed{self.seed}{kind}"
        )


def _unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _into_ball(x: np.ndarray) -> np.ndarray:
    """Rows into the unit ball, as the trainer's projection does after every step."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1.0)).astype(np.float32)


def plant_items(spec: CatalogueSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Clustered item vectors `[V, d]` and each item's cluster `[V]`."""
    n_clusters = max(1, spec.n_items // spec.items_per_cluster)
    centres = 0.7 * _unit_rows(rng, n_clusters, spec.dim)  # [K, d]
    cluster = rng.integers(0, n_clusters, spec.n_items)
    items = np.empty((spec.n_items, spec.dim), np.float32)
    step = 100_000  # bounded temporaries at 1M items
    for s in range(0, spec.n_items, step):
        c = cluster[s : s + step]
        noise = rng.standard_normal((len(c), spec.dim), dtype=np.float32)
        noise *= 0.7 * spec.item_noise / np.sqrt(spec.dim)
        items[s : s + step] = _into_ball(centres[c] + noise)
    return items, cluster


def plant_histories(
    spec: CatalogueSpec, cluster: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, Interactions]:
    """Each user's cluster `[U]` and a training log: distinct items of that cluster."""
    order = np.argsort(cluster, kind="stable")
    counts = np.bincount(cluster)
    starts = np.concatenate([[0], np.cumsum(counts)])
    occupied = np.flatnonzero(counts)
    user_cluster = occupied[rng.integers(0, len(occupied), spec.n_users)]
    lengths = rng.integers(spec.min_history, spec.max_history + 1, spec.n_users)
    lengths = np.minimum(lengths, counts[user_cluster])
    users, items = [], []
    for u, (k, n) in enumerate(zip(user_cluster, lengths, strict=True)):
        members = order[starts[k] : starts[k + 1]]
        items.append(rng.choice(members, n, replace=False))
        users.append(np.full(n, u, np.int64))
    user_rows, item_rows = np.concatenate(users), np.concatenate(items).astype(np.int64)
    log = Interactions(
        user_rows,
        item_rows,
        np.ones(len(user_rows), np.float32),
        None,
        IdMap(np.asarray([f"u{i}" for i in range(spec.n_users)], object)),
        IdMap(np.asarray([f"i{i}" for i in range(spec.n_items)], object)),
    )
    return user_cluster, log


def plant_model(
    spec: CatalogueSpec, rng: np.random.Generator
) -> tuple[RelationalModel, Interactions]:
    """An HLR with planted parameters and the training log that goes with it."""
    items, cluster = plant_items(spec, rng)
    user_cluster, log = plant_histories(spec, cluster, rng)
    keys = rng.standard_normal((spec.dim, spec.n_memory), dtype=np.float32)
    keys *= spec.key_scale / np.sqrt(spec.dim)
    memories = rng.standard_normal((spec.n_memory, spec.dim), dtype=np.float32)
    memories *= 1.5 / np.sqrt(spec.dim)  # rows of norm ~1.5, as in models trained on ML-1M
    centres = np.zeros((cluster.max() + 1, spec.dim), np.float32)
    np.add.at(centres, cluster, items)
    centres /= np.maximum(np.bincount(cluster), 1)[:, None]
    noise = rng.standard_normal((spec.n_users, spec.dim), dtype=np.float32)
    users = _into_ball(
        centres[user_cluster] - memories.mean(axis=0) + noise * 0.1 / np.sqrt(spec.dim)
    )
    cfg = ModelConfig(kind="hlr", dim=spec.dim, n_memory=spec.n_memory, l_max=spec.l_max)
    model = build_model(cfg, spec.n_users, spec.n_items)
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.from_numpy(users))
        model.item_emb.weight.copy_(torch.from_numpy(items))
        model.lram.keys.copy_(torch.from_numpy(keys))
        model.lram.memories.copy_(torch.from_numpy(memories))
    return model, log


class _StepClock(logging.Handler):
    """Times the exporter's steps from its own log records (no change to the exporter)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.marks: list[tuple[float, str]] = [(time.perf_counter(), "start")]

    def emit(self, record: logging.LogRecord) -> None:
        self.marks.append((time.perf_counter(), record.getMessage().split(" ")[0]))

    def steps(self) -> dict[str, float]:
        """Seconds from each record to the next: "start" = tensors file and scorer graph,
        "writing" = ONNX export and parity check, "parity:" = the index build and its recall
        check, "index" = id maps, histories, checksums and manifest."""
        return {
            name: round(t1 - t0, 2)
            for (t0, name), (t1, _) in zip(self.marks, self.marks[1:], strict=False)
        }


def build_catalogue(spec: CatalogueSpec, cache: Path) -> Path:
    """The artifacts root of `spec` under `cache`, built once; returns the root."""
    root = cache / spec.name
    if (root / INFO).is_file() and (root / art.CURRENT).exists():
        return root
    rng = np.random.default_rng(spec.seed)
    t0 = time.perf_counter()
    model, log = plant_model(spec, rng)
    t1 = time.perf_counter()
    clock = _StepClock()
    loggers = [logging.getLogger(n) for n in ("training.exporter", "training.index_builder")]
    for exporter_log in loggers:  # the index is built and logged by its own module (issue 21)
        exporter_log.addHandler(clock)
        exporter_log.setLevel(logging.INFO)
    try:
        export(
            model,
            log,
            root,
            ef_construction=spec.ef_construction,
            index=spec.index,
            metrics={"synthetic": True},
            config={"catalogue": asdict(spec)},
        )
    finally:
        for exporter_log in loggers:
            exporter_log.removeHandler(clock)
    t2 = time.perf_counter()
    info = {
        "spec": asdict(spec),
        "interactions": len(log),
        "plant_s": round(t1 - t0, 2),
        "export_s": round(t2 - t1, 2),
        "export_steps_s": clock.steps(),
        "version": art.resolve_current(root).name,
    }
    (root / INFO).write_text(json.dumps(info, indent=2) + "\n")
    return root


def catalogue_info(root: Path) -> dict[str, object]:
    info: dict[str, object] = json.loads((root / INFO).read_text())
    return info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", default="10000,100000,1000000", help="catalogue sizes")
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--cache", type=Path, required=True, help="directory of cached catalogues")
    p.add_argument(
        "--ef-construction",
        type=int,
        default=HNSW_EF_CONSTRUCTION,
        help="HNSW build effort above 50k items (the exporter's default: 200)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch/FAISS threads; 0: all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="d=16, N=4, L_max=8: seconds")
    p.add_argument("--index", choices=INDEX_KINDS, default="auto",
                   help="the exporter's index kind (default auto: its rule by size)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    small = {"dim": 16, "n_memory": 4, "l_max": 8, "max_history": 12} if args.quick else {}
    for n in (int(x) for x in args.items.split(",")):
        spec = CatalogueSpec(
            n_items=n,
            n_users=args.users,
            seed=args.seed,
            ef_construction=args.ef_construction,
            index=args.index,
            **small,
        )
        root = build_catalogue(spec, args.cache)
        info = catalogue_info(root)
        manifest = art.read_manifest(art.resolve_current(root))
        print(
            f"catalogue {n} items, {spec.n_users} users, {info['interactions']} interactions: "
            f"{root}\n  index {manifest.index.factory} {manifest.index.params} "
            f"recall@{manifest.index.c} {manifest.index.recall_at_c:.3f}; plant "
            f"{info['plant_s']} s, export {info['export_s']} s, steps "
            f"{info['export_steps_s']}"
        )


if __name__ == "__main__":
    main()
