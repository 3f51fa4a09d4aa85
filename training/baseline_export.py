"""Baselines as served artifacts: most popular and ALS in the relational models' format.

Stage: export, beside `training/exporter.py` (issue 16). `baseline_arrays` is what a fitted
`MostPopular` or `ALSBaseline` needs to be served (the run directory keeps it as `baseline.npz`,
`training/run_dir.py`); `export_baseline` turns such a run into a version directory that the
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

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from models import artifact as art
from models.scorer_io import DISTANCES, empty_history, scorer_feed
from models.version import relrec_version
from training.interactions import Interactions
from training.run_dir import Run

__all__ = ["baseline_arrays", "baseline_tensors", "check_dot_parity", "export_baseline"]

log = logging.getLogger(__name__)

L_MAX = 50  # history items the service keeps per request (the seen set is all of them)


def baseline_arrays(algorithm: str, fitted: Any) -> dict[str, np.ndarray]:
    """What a fitted `MostPopular` or `ALSBaseline` needs to be served, as the arrays the run
    directory keeps (`training/run_dir.py`, `baseline.npz`)."""
    if algorithm == "als":
        arrays = {"users": fitted.user_factors, "items": fitted.item_factors,
                  "regularization": np.float64(fitted.regularization),
                  # a positive's confidence c = 1 + α (implicit's stored value)
                  "confidence": np.float64(fitted.confidence)}
    else:
        arrays = {"popularity": np.asarray(fitted.popularity, np.float32)}
    return {"kind": np.array(algorithm), **arrays}


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


def export_baseline(run: Run, out_dir: str | Path, *, index: str = "auto",
                    parity_check: bool = True, index_memory_mb: float | None = None,
                    **_: Any) -> Path:
    """Export a baseline run as a new current artifact version; returns its directory."""
    from training.exporter import publish

    assert run.baseline is not None
    fitted, train = run.baseline, run.train
    tensors = baseline_tensors(fitted, train.n_users)

    def write(tmp: Path, version: str, created: datetime) -> art.Manifest:
        return _write_version(tmp, version, created, fitted, train, run.known, tensors,
                              run.metrics, run.config, (index, index_memory_mb), parity_check)

    return publish(out_dir, train, (t.tobytes() for t in tensors.values()), write)


def _write_version(vdir: Path, version: str, created: datetime, fitted: dict[str, Any],
                   train: Interactions, known: Interactions | None,
                   tensors: dict[str, np.ndarray], metrics: dict[str, Any],
                   config: dict[str, Any] | None, index: tuple[str, float | None],
                   parity_check: bool) -> art.Manifest:
    from models.graphs import DotGraph
    from training import exporter as ex
    from training.scorer_graph import export_onnx, externalize_table

    ex._write_tensors(vdir / art.TENSORS, tensors)
    graph = DotGraph(torch.from_numpy(tensors["items"]), L_MAX).eval()
    export_onnx(graph, vdir / art.SCORER)
    external = externalize_table(vdir / art.SCORER, "items", tensors["items"],
                                 vdir / art.TENSORS)
    if parity_check:
        err = check_dot_parity(tensors, vdir / art.SCORER)
        log.info("parity: max relative error %.2e (tolerance %.0e)", err, ex.PARITY_RTOL)
    queries = tensors["users"][:500]
    try:
        faiss_index, index_info = ex.build_index(tensors["items"], queries, index[0],
                                                 metric="IP", memory_mb=index[1])
    except ex.IndexChoiceError as exc:
        raise ex.ExportError(str(exc)) from None
    import faiss

    faiss.write_index(faiss_index, str(vdir / art.INDEX))
    ex.write_interactions(vdir, train, known)
    kind = str(fitted["kind"])
    model = {"kind": kind}
    if kind == "als":
        model |= {"factors": int(tensors["items"].shape[1]),
                  "regularization": float(fitted["regularization"]),
                  "confidence": float(fitted["confidence"])}
    dim = int(tensors["items"].shape[1])
    names = [*art.PAYLOAD_FILES, *art.ID_MAP_FILES]
    files = {name: art.file_sha256(vdir / name) for name in names}
    manifest = art.Manifest(
        format_version=art.FORMAT_VERSION, version=version, relrec_version=relrec_version(),
        created_at=created, model=model, dim=dim, n_memory=0, l_max=L_MAX,
        counts=art.Counts(users=train.n_users, items=train.n_items, interactions=len(train)),
        data_fingerprint=train.fingerprint(), metrics=metrics, config=config,
        index=index_info, onnx=ex._onnx_info(graph, external), files=files,
        sizes={name: (vdir / name).stat().st_size for name in names},
        fold_in=_fold_in(fitted), training=ex.training_info(metrics, known is not None))
    art.write_manifest(vdir, manifest)
    return manifest


def check_dot_parity(tensors: dict[str, np.ndarray], onnx_path: Path, seed: int = 0) -> float:
    """`scorer.onnx` against numpy's −⟨x_u, y_v⟩ on trained and random users and random
    candidates (out-of-range ones must be +inf); raises ParityError beyond rtol 1e-5."""
    from training.exporter import PARITY_ATOL, PARITY_RTOL, ParityError, relative_error

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
    return relative_error(got[ok], want[ok])
