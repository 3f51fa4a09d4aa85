"""Export: a trained model and its training data -> one served artifact version (DESIGN §3).

Stage: the last of the offline path. Reads a `RelationalModel` and the train `Interactions`
(a `training.run_dir.Run`: in memory after training, or read back from a run directory);
writes `ARTIFACTS_DIR/<version>/` with the files of docs/architecture.md ("Artifact"), then
points `ARTIFACTS_DIR/current` at it.

Everything is written into a hidden `.tmp-<version>` directory first, fsynced, checked (the
ONNX scorer against the model's own distances), and only then renamed into place and made
current. A failure at any step removes the temp directory and leaves `current` where it was;
a reader never sees half a version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import onnxruntime as ort
import torch

from models import artifact as art
from models.base import RelationalModel
from models.durable import fsync_path
from models.graphs import ScorerGraph
from models.mapped_ids import write_ids
from models.mapped_tables import write_tables
from models.registry import build_scorer_graph
from models.scorer_io import OPSET, scorer_feed
from models.version import relrec_version
from training.candidates import choose_for_version
from training.index_builder import (
    FLAT_MAX_ITEMS,
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    HNSW_M,
    RECALL_C,
    IndexChoiceError,
    build_index,
)
from training.interactions import Interactions
from training.pool_builder import build_pools, pool_size
from training.run_dir import Run, TextItems, load_run
from training.scorer_graph import export_onnx, externalize_table, io_spec
from training.text.export import has_projection, text_model_files, write_text_model
from training.text.items import extend_with_text_items

__all__ = ["FLAT_MAX_ITEMS", "HNSW_EF_CONSTRUCTION", "HNSW_EF_SEARCH", "HNSW_M", "RECALL_C",
           "ExportError", "IndexChoiceError", "ParityError", "build_index", "export",
           "export_run", "export_trained", "history_csr", "publish", "relative_error",
           "training_info", "write_interactions"]

log = logging.getLogger(__name__)

PARITY_RTOL = 1e-5
# Absolute slack for distances near 0: the float32 rounding of p + r − q (|·| ≲ 3 in the unit
# ball) is ~3e-7 per coordinate, so a squared distance carries ~2‖p + r − q‖·√d·3e-7 absolute
# error, which is far below 1e-6 whenever the relative test cannot apply (‖·‖² < 0.1).
PARITY_ATOL = 1e-6


class ExportError(RuntimeError):
    """The export could not produce a valid artifact; nothing was published."""


class ParityError(ExportError):
    """`scorer.onnx` disagrees with the model's own distances beyond the tolerance."""


def export_trained(run: Run, out_dir: str | Path, **kwargs: Any) -> Path:
    """Export a run held in memory (`training.pipeline.run(..., export_to=…)`, straight after
    training) or read back by `export_run`; returns the version directory."""
    if run.baseline is not None:
        from training.baseline_export import export_baseline

        kwargs.pop("pools", None)  # inner-product baselines: no pools (service/user_pools.py)
        return export_baseline(run, out_dir, **kwargs)
    if run.model is None:
        raise ExportError(f"a {run.config.get('algorithm', 'baseline')} run has no model to "
                          f"serve (an evaluation baseline); train pop, als or a relational model")
    chosen = (run.config or {}).get("export") or {}  # the run's config; flags given win
    kwargs.setdefault("index", chosen.get("index", "auto"))
    kwargs.setdefault("index_memory_mb", chosen.get("index_memory_mb"))
    kwargs.setdefault("text_items", run.text_items)
    kwargs.setdefault("known", run.known)
    kwargs.setdefault("pools", chosen.get("pools", "auto"))
    return export(run.model, run.train, out_dir, metrics=run.metrics, config=run.config,
                  **kwargs)


def export_run(run_dir: str | Path, out_dir: str | Path, **kwargs: Any) -> Path:
    """Export a training run directory (`training/run_dir.py`); returns the version dir."""
    return export_trained(load_run(run_dir), out_dir, **kwargs)


def training_info(metrics: dict[str, Any], history_is_all: bool) -> art.TrainingInfo:
    """The manifest's record of how the served model was fitted (issue 16): refit on every
    interaction (`relrec train --final`, the selection run's metrics kept) or not."""
    final = metrics.get("final") or {}
    selection = metrics.get("metrics", {})
    if final.get("refit"):
        return art.TrainingInfo(refit=True, epochs=final.get("epochs"),
                                selection_metrics=selection, history="all")
    epochs = (metrics.get("training") or {}).get("best_epoch")
    return art.TrainingInfo(refit=False, epochs=epochs, selection_metrics=selection,
                            history="all" if history_is_all else "train")


def export(model: RelationalModel, train: Interactions, out_dir: str | Path, *,
           metrics: dict[str, Any] | None = None, config: dict[str, Any] | None = None,
           index: str = "auto", parity_check: bool = True,
           ef_construction: int = HNSW_EF_CONSTRUCTION, index_memory_mb: float | None = None,
           text_items: TextItems | None = None, known: Interactions | None = None,
           choose_retrieval: bool = True, pools: str | int = "auto") -> Path:
    """Write a new artifact version of `model` under `out_dir` and make it current.

    `index` is "auto", "flat", "hnsw", "ivfpq", "ivfpqfs" or "pqfs" and `index_memory_mb`
    the budget "auto" picks under (training/index_builder.py; no budget: `Flat` up to
    FLAT_MAX_ITEMS items, `HNSW32` above, and a refined fast scan (pqfs) where the HNSW graph
    misses the recall target that `choose_retrieval` measures); `ef_construction` trades
    HNSW build time for graph quality (the manifest records it; bench/catalogue.py lowers it
    to build 1M-item catalogues on two cores). Returns the version directory. `text_items`
    (items with text and no interaction, from a run trained with item text) are appended to
    the item table and named in `manifest.text_items`.
    `known` (every interaction known, over `train`'s id maps) gives the exported histories
    and so the seen set; without it, `train` does (a refit run's train is everything).
    `choose_retrieval` records in `manifest.retrieval` the cheapest C and efSearch reaching
    recall@10 0.995 (training/candidates.py); False leaves the service's fallback.
    `pools` ("auto", "off" or K) stores each user's K nearest unseen items for the service
    to serve from where provably exact (training/pool_builder.py; auto: above FLAT_MAX_ITEMS
    items, within its budgets).
    """
    model = model.eval()
    text_info = None
    if text_items is not None and len(text_items):
        text_info = art.TextItemsInfo(first_row=model.n_items, count=len(text_items),
                                      encoder=text_items.encoder)
        model, train = extend_with_text_items(model, train, text_items)
    if (train.n_users, train.n_items) != (model.n_users, model.n_items):
        raise ExportError(f"the model has {model.n_users} x {model.n_items} rows, the training "
                          f"data {train.n_users} x {train.n_items}: pass the train set of the "
                          f"split the model was trained on")
    if known is not None and text_info is not None:
        known = Interactions(known.user_rows, known.item_rows, known.weights, known.timestamps,
                             train.users, train.items)  # the text items' rows come last
    content = (t.detach().float().cpu().numpy().tobytes()
               for _, t in sorted(model.state_dict().items()))

    text_model = text_items if has_projection(text_items) else None

    def write(tmp: Path, version: str, created: datetime) -> art.Manifest:
        return _write_version(tmp, version, created, model, train, metrics or {}, config,
                              (index, index_memory_mb), parity_check, ef_construction,
                              text_info, known, choose_retrieval, text_model, pools)

    return publish(out_dir, train, content, write)


def publish(out_dir: str | Path, train: Interactions, content: Iterable[bytes],
            write: Callable[[Path, str, datetime], art.Manifest]) -> Path:
    """Write a version through `write(tmp_dir, version, created)` into a hidden temp
    directory, fsync it, rename it into place and point `current` at it; on any failure remove
    the temp directory and leave `current` as it was. `content` (the model's bytes) and the
    data fingerprint name the version."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    created = datetime.now(UTC)
    version = _version_name(root, created, content, train)
    tmp = root / f".tmp-{version}"
    tmp.mkdir()
    try:
        manifest = write(tmp, version, created)
        _sync_tree(tmp)
        os.rename(tmp, root / version)
        fsync_path(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    art.point_current(root, version)
    log.info("exported %s (%s, %d items); %s -> %s", version, manifest.kind,
             manifest.counts.items, root / art.CURRENT, version)
    return root / version


def _write_version(vdir: Path, version: str, created: datetime, model: RelationalModel,
                   train: Interactions, metrics: dict[str, Any], config: dict[str, Any] | None,
                   index: tuple[str, float | None], parity_check: bool,
                   ef_construction: int, text_info: art.TextItemsInfo | None,
                   known: Interactions | None, choose_retrieval: bool,
                   text_model: TextItems | None = None,
                   pools: str | int = "auto") -> art.Manifest:
    """Every file of the version, then the manifest with their checksums (last); with
    `text_model`, what places items from their text (training/text/export.py)."""
    tensors = _model_tensors(model)
    _write_tensors(vdir / art.TENSORS, tensors)
    graph = build_scorer_graph(model)
    log.info("writing %s (%s graph)", art.SCORER, type(graph).__name__)
    export_onnx(graph, vdir / art.SCORER)
    external = externalize_table(vdir / art.SCORER, "items", tensors["items"],
                                 vdir / art.TENSORS)
    if parity_check:
        err = check_parity(model, vdir / art.SCORER)
        log.info("parity: max relative error %.2e (tolerance %.0e)", err, PARITY_RTOL)
    faiss_index, index_info = _write_index(vdir / art.INDEX, tensors, *index, ef_construction)
    write_interactions(vdir, train, known)
    retrieval = (choose_for_version(vdir, faiss_index, model.config.l_max)
                 if choose_retrieval else None)
    if index[0] == "auto" and retrieval is not None and not retrieval.met \
            and index_info.factory.startswith("HNSW"):
        index_info, retrieval = _refine_instead(vdir, tensors, index[1], index_info, retrieval,
                                                model.config.l_max)
    text_model_info = (None if text_model is None
                       else write_text_model(vdir, text_model, graph))
    pool_k = pool_size(pools, model.n_users, model.n_items, model.config.dim)
    pools_info = None if pool_k is None else build_pools(vdir, pool_k, model.config.l_max)
    names = [*art.PAYLOAD_FILES, *art.ID_MAP_FILES, *text_model_files(text_model_info),
             *(art.POOL_FILES if pools_info is not None else ())]
    files = {name: art.file_sha256(vdir / name) for name in names}
    manifest = art.Manifest(
        format_version=art.FORMAT_VERSION, version=version, relrec_version=relrec_version(),
        created_at=created, model=model.config.model_dump(mode="json"), dim=model.config.dim,
        n_memory=tensors["keys"].shape[1], l_max=model.config.l_max,
        counts=art.Counts(users=model.n_users, items=model.n_items, interactions=len(train)),
        data_fingerprint=train.fingerprint(), metrics=metrics, config=config,
        index=index_info, onnx=_onnx_info(graph, external), files=files,
        sizes={name: (vdir / name).stat().st_size for name in names},
        text_items=text_info, text_model=text_model_info,
        fold_in=art.FoldInInfo(method="hinge", params={"margin": float(model.config.margin)}),
        training=training_info(metrics, known is not None), retrieval=retrieval,
        pools=pools_info)
    art.write_manifest(vdir, manifest)
    return manifest


# -- the pieces -------------------------------------------------------------------------------


def _model_tensors(model: RelationalModel) -> dict[str, np.ndarray]:
    """users, items, keys [d, N], memories [N, d] as float32 numpy (N = 0 without a memory)."""
    def arr(t: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(t.detach().float().cpu().numpy())

    dim = model.config.dim
    keys = np.zeros((dim, 0), np.float32) if model.lram is None else arr(model.lram.keys)
    memories = (np.zeros((0, dim), np.float32) if model.lram is None
                else arr(model.lram.memories))
    return {"users": arr(model.user_emb.weight), "items": arr(model.item_emb.weight),
            "keys": keys, "memories": memories}


def _write_tensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """Uncompressed, page-aligned members: every worker maps the tables (issue 21)."""
    write_tables(path, tensors)


def write_interactions(vdir: Path, train: Interactions, known: Interactions | None) -> None:
    """The id maps and popularity of `train`, and each user's history: `known` (everything
    known, issue 16) where given, else `train` (a refit run's train is everything).

    Each id map twice: the JSON list (the reference, what older relrecs read) and the layout
    the service maps (models/mapped_ids.py), so that workers share one copy (issue 21)."""
    for name, mapped, ids in ((art.USER_IDS, art.USER_IDMAP, train.users),
                              (art.ITEM_IDS, art.ITEM_IDMAP, train.items)):
        id_list = ids.to_list()
        (vdir / name).write_text(json.dumps(id_list) + "\n", encoding="utf-8")
        write_ids(vdir / mapped, id_list)
    np.save(vdir / art.POPULARITY, train.item_popularity())
    indptr, items = history_csr(train if known is None else known)
    np.save(vdir / art.HISTORY_INDPTR, indptr)
    np.save(vdir / art.HISTORY_ITEMS, items)


def history_csr(train: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """Each user's distinct training items, newest first: (indptr [U+1], items [nnz]).

    Newest by timestamp where there are timestamps, ties and logs without them by position
    (a log is appended to, so later is newer); a repeated item keeps its newest place.
    """
    n = len(train)
    position = np.arange(n, dtype=np.int64)
    stamp = train.timestamps if train.timestamps is not None else np.zeros(n, np.int64)
    order = np.lexsort((-position, -stamp, train.user_rows))  # user, then newest first
    users, items = train.user_rows[order], train.item_rows[order]
    _, first = np.unique(users * np.int64(train.n_items) + items, return_index=True)
    keep = np.sort(first)  # first occurrence in newest-first order = newest; order kept
    users, items = users[keep], items[keep]
    counts = np.bincount(users, minlength=train.n_users)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, items.astype(np.int64)


def _write_index(path: Path, tensors: dict[str, np.ndarray], kind: str,
                 memory_mb: float | None, ef_construction: int
                 ) -> tuple[faiss.Index, art.IndexInfo]:
    try:
        index, info = build_index(tensors["items"], _recall_queries(tensors), kind,
                                  ef_construction, memory_mb=memory_mb)
    except IndexChoiceError as exc:
        raise ExportError(str(exc)) from None
    faiss.write_index(index, str(path))
    return index, info


def _refine_instead(vdir: Path, tensors: dict[str, np.ndarray], memory_mb: float | None,
                    info: art.IndexInfo, retrieval: art.RetrievalInfo, l_max: int
                    ) -> tuple[art.IndexInfo, art.RetrievalInfo]:
    """`auto`'s second try: the HNSW graph capped recall below the target (probes that are
    not items, on a catalogue whose neighbours stand out little: the grown catalogue of
    docs/benchmarks.md "Serving at the floor" reached 0.97 at efSearch 2,048), so a refined
    fast scan (pqfs), which searches every item, is built and measured, and kept if it
    reaches more. A budget it does not fit keeps the HNSW index."""
    log.warning("index: HNSW reached recall@%d %.4f < %.3f at every measured C and efSearch; "
                "measuring a refined fast scan (pqfs) instead", retrieval.k, retrieval.recall,
                retrieval.target_recall)
    try:
        index, refined = build_index(tensors["items"], _recall_queries(tensors), "pqfs",
                                     memory_mb=memory_mb)
    except IndexChoiceError as exc:
        log.warning("index: keeping HNSW: %s", exc)
        return info, retrieval
    chosen = choose_for_version(vdir, index, l_max)
    if chosen.recall <= retrieval.recall:
        log.warning("index: keeping HNSW: pqfs reached recall@%d %.4f, no more", chosen.k,
                    chosen.recall)
        return info, retrieval
    faiss.write_index(index, str(vdir / art.INDEX))
    refined = refined.model_copy(update={"params": refined.params | {
        "chosen": f"auto: HNSW capped recall@{retrieval.k} at {retrieval.recall:.4f} "
                  f"(efSearch {retrieval.ef_search}, C {retrieval.n_candidates}); pqfs "
                  f"reached {chosen.recall:.4f}"}})
    log.info("index: %s replaces HNSW (%s)", refined.factory, refined.params["chosen"])
    return refined, chosen


def _recall_queries(tensors: dict[str, np.ndarray], n: int = 500) -> np.ndarray:
    """Queries like the service's: user vectors, translated by a memory row when there is M."""
    rng = np.random.default_rng(0)
    users = tensors["users"][rng.choice(len(tensors["users"]),
                                        min(n, len(tensors["users"])), replace=False)]
    memories = tensors["memories"]
    if len(memories):
        users = users + memories[rng.integers(0, len(memories), len(users))]
    return np.ascontiguousarray(users, dtype=np.float32)


def _onnx_info(graph: ScorerGraph, external: dict[str, str] | None = None) -> art.OnnxInfo:
    """The scorer's signature; `external` names the initializers read from another file."""
    inputs, outputs = io_spec(graph)
    details: dict[str, Any] = {"family": type(graph).__name__, "pad_row": graph.n_items,
                               "invalid_candidate_distance": "inf",
                               "external_data": external or {}}
    if hasattr(graph, "shift_mode"):
        details["softmax_shift"] = graph.shift_mode
    return art.OnnxInfo.model_validate({"opset": OPSET, "inputs": inputs, "outputs": outputs,
                                        "graph": details})


# -- parity -----------------------------------------------------------------------------------


def parity_inputs(model: RelationalModel, rng: np.random.Generator, n_users: int = 8,
                  n_cand: int = 64) -> dict[str, np.ndarray]:
    """Trained and random (unit-ball) users, histories of every length from 0 to L_max, and
    random candidates: the inputs on which the scorer must match the model."""
    dim, l_max, n_items = model.config.dim, model.config.l_max, model.n_items
    rows = rng.choice(model.n_users, min(n_users - 2, model.n_users), replace=False)
    trained = model.user_emb.weight.detach().float().cpu().numpy()[rows]
    fresh = rng.standard_normal((2, dim)).astype(np.float32)
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True) * rng.uniform(1.0, 2.0, (2, 1))
    user_vecs = np.concatenate([trained, fresh]).astype(np.float32)
    batch = len(user_vecs)
    lengths = np.linspace(0, l_max, batch).round().astype(np.int64)
    hist_mask = (np.arange(l_max)[None, :] < lengths[:, None]).astype(np.float32)
    hist_rows = rng.integers(0, n_items, (batch, l_max))
    cand_rows = rng.integers(0, n_items, (batch, min(n_cand, n_items)))
    return scorer_feed(user_vecs, hist_rows, hist_mask, cand_rows)


@torch.no_grad()
def reference_outputs(model: RelationalModel, feed: dict[str, np.ndarray]
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """The model's own distances (and attention) on a scorer feed, as numpy."""
    args = (torch.from_numpy(feed["user_vecs"]), torch.from_numpy(feed["cand_rows"]),
            torch.from_numpy(feed["hist_rows"]), torch.from_numpy(feed["hist_mask"] > 0.5))
    attn = model.attention(*args)
    return model.distance(*args).numpy(), None if attn is None else attn.numpy()


def check_parity(model: RelationalModel, onnx_path: Path, seed: int = 0) -> float:
    """Run `scorer.onnx` and the model on the same random inputs; raise ParityError on a
    disagreement beyond rtol PARITY_RTOL (atol PARITY_ATOL). Returns the max relative error
    (`relative_error`)."""
    feed = parity_inputs(model, np.random.default_rng(seed))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, feed)
    want, want_attn = reference_outputs(model, feed)
    bad = np.abs(got[0] - want) > PARITY_ATOL + PARITY_RTOL * np.abs(want)
    if bad.any() or not np.isfinite(got[0]).all():
        raise ParityError(f"scorer.onnx distances differ from {model.kind}.distance at "
                          f"{int(bad.sum())} of {bad.size} pairs (max abs diff "
                          f"{float(np.abs(got[0] - want).max()):.3g}); nothing was published")
    if want_attn is not None and not np.allclose(got[1], want_attn, rtol=PARITY_RTOL,
                                                 atol=PARITY_ATOL):
        raise ParityError(f"scorer.onnx attention differs from {model.kind}.attention; "
                          f"nothing was published")
    return relative_error(got[0], want)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """Max |got − want| relative to |want|, or to PARITY_ATOL / PARITY_RTOL where |want| is
    smaller: the floor the check itself allows, so that a distance near 0 (an ALS dot product
    of 1e-3 off by 3e-8, as on one host) does not report a relative error the check passed."""
    floor = PARITY_ATOL / PARITY_RTOL
    return float((np.abs(got - want) / np.maximum(np.abs(want), floor)).max())


# -- naming and durability --------------------------------------------------------------------


def _version_name(root: Path, created: datetime, content: Iterable[bytes],
                  train: Interactions) -> str:
    """UTC timestamp + short content hash (model parameters and data fingerprint), made unique
    within `root` by a counter when the same model is exported twice in one second."""
    h = hashlib.sha256(train.fingerprint().encode())
    for chunk in content:
        h.update(chunk)
    base = f"{created.strftime('%Y%m%dT%H%M%SZ')}-{h.hexdigest()[:6]}"
    name, n = base, 1
    while (root / name).exists() or (root / f".tmp-{name}").exists():
        n += 1
        name = f"{base}-{n}"
    return name


def _sync_tree(vdir: Path) -> None:
    """fsync every file and the directory: the rename that publishes must come after data."""
    for path in vdir.iterdir():
        fsync_path(path)
    fsync_path(vdir)
