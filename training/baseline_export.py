"""Baselines as served artifacts: most popular and ALS in the relational models' format.

Stage: export, beside `training/exporter.py` (issue 16). `save_baseline` writes what a fitted
`MostPopular` or `ALSBaseline` needs into its run directory (`baseline.npz` plus the training
interactions and id maps); `export_baseline` turns such a run into a version directory that the
service loads like any other:

- ALS: `tensors.npz` users/items are the factors x_u, y_v; `scorer.onnx` is the dot-product
  graph (distance −⟨x_u, y_v⟩); `items.faiss` an inner-product index; the manifest declares
  the `least_squares` fold-in with λ and the confidence of a positive, so that history-only
  users get ALS's closed-form user vector.
- most popular: users are the constant 1 and items their popularity (scaled into [0, 1]) in
  one dimension, so the same graph and an inner-product index rank by popularity; the manifest
  declares the `constant` fold-in.

No memory (keys [d, 0], memories [0, d]): the retriever then queries with the user vector.
The parity check compares `scorer.onnx` with numpy's −x·y on random inputs, as the relational
export compares with torch.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from models import artifact as art
from models.idmap import IdMap
from models.scorer_io import DISTANCES, empty_history, scorer_feed
from models.version import relrec_version
from training.interactions import Interactions

__all__ = ["BASELINE_FILE", "export_baseline", "is_baseline_run", "save_baseline"]

log = logging.getLogger(__name__)

BASELINE_FILE = "baseline.npz"
TRAIN_FILE = "baseline_train.npz"
IDS_FILE = "baseline_ids.json"
L_MAX = 50  # history items the service keeps per request (the seen set is all of them)


def is_baseline_run(run_dir: str | Path) -> bool:
    return (Path(run_dir) / BASELINE_FILE).is_file()


def save_baseline(out: str | Path, algorithm: str, fitted: Any, train: Interactions, *,
                  metrics: dict[str, Any], config: dict[str, Any]) -> Path:
    """Write a fitted baseline (`MostPopular` or `ALSBaseline`) and its training data."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if algorithm == "als":
        arrays = {"users": fitted.user_factors, "items": fitted.item_factors,
                  "regularization": np.float64(fitted.regularization),
                  # a positive's confidence c = 1 + α (implicit's stored value)
                  "confidence": np.float64(fitted.confidence)}
    else:
        arrays = {"popularity": np.asarray(fitted.popularity, np.float32)}
    with open(out / BASELINE_FILE, "wb") as f:
        np.savez(f, kind=np.array(algorithm), **arrays)
    cols = {"user_rows": train.user_rows, "item_rows": train.item_rows}
    if train.timestamps is not None:
        cols["timestamps"] = train.timestamps
    with open(out / TRAIN_FILE, "wb") as f:
        np.savez(f, **cols)
    ids = {"users": train.users.to_list(), "items": train.items.to_list()}
    (out / IDS_FILE).write_text(json.dumps(ids) + "\n", encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def _load(run_dir: Path) -> tuple[dict[str, Any], Interactions]:
    with np.load(run_dir / BASELINE_FILE, allow_pickle=False) as npz:
        fitted = {name: npz[name] for name in npz.files}
    ids = json.loads((run_dir / IDS_FILE).read_text(encoding="utf-8"))
    with np.load(run_dir / TRAIN_FILE, allow_pickle=False) as npz:
        ts = npz["timestamps"] if "timestamps" in npz.files else None
        users, items = npz["user_rows"].astype(np.int64), npz["item_rows"].astype(np.int64)
    train = Interactions(users, items, np.ones(len(users), np.float32), ts,
                         IdMap.from_ids(ids["users"]), IdMap.from_ids(ids["items"]))
    return fitted, train


def baseline_tensors(fitted: dict[str, Any], n_users: int) -> dict[str, np.ndarray]:
    """users, items, keys [d, 0], memories [0, d] of a baseline, float32."""
    if str(fitted["kind"]) == "als":
        users = np.ascontiguousarray(fitted["users"], np.float32)
        items = np.ascontiguousarray(fitted["items"], np.float32)
    else:
        pop = np.asarray(fitted["popularity"], np.float32)
        items = (pop / max(float(pop.max()), 1.0))[:, None]
        users = np.ones((n_users, 1), np.float32)
    dim = items.shape[1]
    return {"users": users, "items": np.ascontiguousarray(items, np.float32),
            "keys": np.zeros((dim, 0), np.float32), "memories": np.zeros((0, dim), np.float32)}


def _fold_in(fitted: dict[str, Any]) -> art.FoldInInfo:
    if str(fitted["kind"]) == "als":
        return art.FoldInInfo(method="least_squares",
                              params={"regularization": float(fitted["regularization"]),
                                      "confidence": float(fitted["confidence"])})
    return art.FoldInInfo(method="constant")


def export_baseline(run_dir: str | Path, out_dir: str | Path, *, index: str = "auto",
                    parity_check: bool = True, **_: Any) -> Path:
    """Export a baseline run directory as a new current artifact version; returns its dir."""
    from training.exporter import publish
    from training.production import load_known

    run_dir = Path(run_dir)
    fitted, train = _load(run_dir)
    known = load_known(run_dir, train)
    tensors = baseline_tensors(fitted, train.n_users)
    metrics = _read_json(run_dir / "metrics.json")
    config = _read_json(run_dir / "config.json")

    def write(tmp: Path, version: str, created: datetime) -> art.Manifest:
        return _write_version(tmp, version, created, fitted, train, known, tensors, metrics,
                              config, index, parity_check)

    return publish(out_dir, train, (t.tobytes() for t in tensors.values()), write)


def _write_version(vdir: Path, version: str, created: datetime, fitted: dict[str, Any],
                   train: Interactions, known: Interactions | None,
                   tensors: dict[str, np.ndarray], metrics: dict[str, Any],
                   config: dict[str, Any] | None, index: str,
                   parity_check: bool) -> art.Manifest:
    from models.graphs import DotGraph
    from training import exporter as ex
    from training.scorer_graph import export_onnx

    graph = DotGraph(torch.from_numpy(tensors["items"]), L_MAX).eval()
    export_onnx(graph, vdir / art.SCORER)
    if parity_check:
        err = check_dot_parity(tensors, vdir / art.SCORER)
        log.info("parity: max relative error %.2e (tolerance %.0e)", err, ex.PARITY_RTOL)
    with open(vdir / art.TENSORS, "wb") as f:
        np.savez(f, **tensors)
    queries = tensors["users"][:500]
    faiss_index, index_info = ex.build_index(tensors["items"], queries, index, metric="IP")
    import faiss

    faiss.write_index(faiss_index, str(vdir / art.INDEX))
    ex.write_ids(vdir, train)
    np.save(vdir / art.POPULARITY, train.item_popularity())
    ex.write_history(vdir, train if known is None else known)
    kind = str(fitted["kind"])
    model = {"kind": kind}
    if kind == "als":
        model |= {"factors": int(tensors["items"].shape[1]),
                  "regularization": float(fitted["regularization"]),
                  "confidence": float(fitted["confidence"])}
    dim = int(tensors["items"].shape[1])
    files = {name: art.file_sha256(vdir / name) for name in art.PAYLOAD_FILES}
    manifest = art.Manifest(
        format_version=art.FORMAT_VERSION, version=version, relrec_version=relrec_version(),
        created_at=created, model=model, dim=dim, n_memory=0, l_max=L_MAX,
        counts=art.Counts(users=train.n_users, items=train.n_items, interactions=len(train)),
        data_fingerprint=train.fingerprint(), metrics=metrics, config=config,
        index=index_info, onnx=ex._onnx_info(graph), files=files,
        sizes={name: (vdir / name).stat().st_size for name in art.PAYLOAD_FILES},
        fold_in=_fold_in(fitted), training=ex.training_info(metrics, known is not None))
    art.write_manifest(vdir, manifest)
    return manifest


def check_dot_parity(tensors: dict[str, np.ndarray], onnx_path: Path, seed: int = 0) -> float:
    """`scorer.onnx` against numpy's −⟨x_u, y_v⟩ on trained and random users and random
    candidates (out-of-range ones must be +inf); raises ParityError beyond rtol 1e-5."""
    from training.exporter import PARITY_ATOL, PARITY_RTOL, ParityError

    rng = np.random.default_rng(seed)
    users, items = tensors["users"], tensors["items"]
    n_items, dim = items.shape
    vecs = np.concatenate([users[rng.integers(0, len(users), 6)],
                           rng.standard_normal((2, dim))]).astype(np.float32)
    cand = rng.integers(0, n_items, (len(vecs), min(64, n_items)))
    cand[0, 0] = n_items  # out of range: must never rank
    feed = scorer_feed(vecs, *empty_history(len(vecs), L_MAX), cand)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run([DISTANCES], feed)
    ok = cand < n_items
    want = -np.einsum("bd,bcd->bc", vecs, items[np.where(ok, cand, 0)])
    diff = np.abs(got[ok] - want[ok])
    if (diff > PARITY_ATOL + PARITY_RTOL * np.abs(want[ok])).any() or not np.isinf(got[~ok]).all():
        raise ParityError(f"scorer.onnx differs from −x·y (max abs diff {float(diff.max()):.3g});"
                          f" nothing was published")
    return float((diff / np.maximum(np.abs(want[ok]), 1e-12)).max())


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
