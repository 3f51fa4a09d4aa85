"""Loader: one artifact version directory -> a `LoadedArtifact` ready to serve.

Reads what `training/exporter.py` wrote (docs/architecture.md "Artifact"): checks the manifest
and the files' hashes (`models.artifact.verify`), reads the arrays, opens `scorer.onnx` in an
onnxruntime session (providers from `accel`), loads the FAISS index (memory-mapped where FAISS
can, so that uvicorn workers share its pages; the tables and the scorer's item table are
mapped too, issue 21) and runs one smoke inference. Anything wrong
raises `ArtifactRejectedError` naming the file and the fix, so that a broken version is never
swapped in (the runtime keeps the old one serving).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import onnxruntime as ort

from models import artifact as art
from models.artifact_arrays import read_arrays
from models.scorer_io import ATTENTION, DISTANCES, INPUTS, empty_history, scorer_feed
from service import accel
from service.errors import ArtifactRejectedError
from service.retriever import refined_index
from service.user_pools import UserPools

log = logging.getLogger(__name__)

__all__ = [
    "FALLBACK_EF_SEARCH",
    "FALLBACK_N_CANDIDATES",
    "INDEX_FILE",
    "SCORER_FILE",
    "LoadedArtifact",
    "load_artifact",
    "retrieval_params",
]

SCORER_FILE = art.SCORER
INDEX_FILE = art.INDEX
# C and efSearch for versions whose manifest records no measured choice (before issue 18, and
# the baselines): the defaults the service had before.
FALLBACK_N_CANDIDATES = 200
FALLBACK_EF_SEARCH = 256
# k_factor of a refined fast scan (pqfs) whose manifest records neither a measured choice nor
# the build's (the index file keeps the build's, written before the export's measurement)
FALLBACK_K_FACTOR = 8


@dataclass(eq=False)
class LoadedArtifact:
    """Everything one model version serves with; immutable once built (shared by threads)."""

    version: str
    path: Path
    manifest: Any  # models.artifact.Manifest
    arrays: Any  # models.artifact_arrays.ArtifactArrays
    session: ort.InferenceSession
    index: Any  # faiss.Index over the item vectors (L2)
    l_max: int
    has_attention: bool
    popular_rows: np.ndarray = field(repr=False)  # [V] item rows, most popular first
    n_candidates: int = FALLBACK_N_CANDIDATES  # C: the setting's, else the manifest's
    ef_search: int = FALLBACK_EF_SEARCH  # HNSW efSearch the index was set to
    pools: UserPools | None = None  # per-user candidate pools (manifest `pools`), mapped

    @property
    def n_items(self) -> int:
        return int(self.arrays.items.shape[0])

    @property
    def dim(self) -> int:
        return int(self.arrays.items.shape[1])


def load_artifact(
    path: Path,
    *,
    ort_threads: int = 0,
    faiss_threads: int = 0,
    use_gpu: bool | None = None,
    ef_search: int | None = None,
    n_candidates: int | None = None,
    check_hashes: bool = True,
    with_index: bool = True,
) -> LoadedArtifact:
    """Load and check one version directory; `ArtifactRejectedError` says what is wrong.

    `n_candidates` and `ef_search` given win; None takes the manifest's (`retrieval_params`).
    `with_index=False` leaves `items.faiss` unread (index None): another engine retrieves."""
    started = time.perf_counter()
    path = Path(path).resolve()
    try:
        manifest = art.read_manifest(path)
        if check_hashes:
            art.verify(path, manifest)
        arrays = read_arrays(path)
    except (art.ArtifactError, OSError, ValueError) as exc:
        raise ArtifactRejectedError(f"artifact {path.name} is unreadable: {exc}") from exc
    _check_arrays(path, arrays)
    l_max = int(manifest.l_max)
    session = _open_session(path / SCORER_FILE, ort_threads, use_gpu)
    has_attention = ATTENTION in {o.name for o in session.get_outputs()}
    if faiss_threads:
        faiss.omp_set_num_threads(faiss_threads)
    n_candidates, ef_search = retrieval_params(manifest, n_candidates, ef_search)
    index = None
    if with_index:
        index = _open_index(path / INDEX_FILE, arrays.items, ef_search, use_gpu)
        _set_nprobe(index, manifest)
        _set_k_factor(index, manifest)
    pools = _open_pools(path, manifest, arrays)
    loaded = LoadedArtifact(
        version=str(manifest.version or path.name),
        path=path,
        manifest=manifest,
        arrays=arrays,
        session=session,
        index=index,
        l_max=l_max,
        has_attention=has_attention,
        popular_rows=np.argsort(-np.asarray(arrays.popularity), kind="stable"),
        n_candidates=n_candidates,
        ef_search=ef_search,
        pools=pools,
    )
    _smoke_test(loaded)
    log.info(
        "loaded artifact %s (%d users, %d items, d=%d, L_max=%d, index %s) in %.2fs",
        loaded.version,
        len(arrays.user_ids),
        loaded.n_items,
        loaded.dim,
        l_max,
        type(index).__name__,
        time.perf_counter() - started,
    )
    return loaded


def retrieval_params(
    manifest: art.Manifest, n_candidates: int | None, ef_search: int | None
) -> tuple[int, int]:
    """(C, efSearch): a value given (a setting) wins over the manifest's measured choice, which
    wins over the fallback; logs which one and why, so that an operator sees the trade."""
    chosen = manifest.retrieval
    c_from = ef_from = "setting"
    if n_candidates is None:
        n_candidates, c_from = FALLBACK_N_CANDIDATES, "default (manifest records no choice)"
        if chosen is not None:
            n_candidates, c_from = chosen.n_candidates, "manifest"
    if ef_search is None:
        ef_search, ef_from = FALLBACK_EF_SEARCH, "default (manifest records no choice)"
        if chosen is not None and chosen.ef_search is not None:
            ef_search, ef_from = chosen.ef_search, "manifest"
        elif chosen is not None:
            ef_from = "default (exact index, not used)"
    measured = (
        "no recall measured at export"
        if chosen is None
        else f"export measured recall@{chosen.k} {chosen.recall:.4f} at C={chosen.n_candidates}"
        f"{'' if chosen.ef_search is None else f', efSearch={chosen.ef_search}'}"
        f" (target {chosen.target_recall}{'' if chosen.met else ', not met'})"
    )
    log.info(
        "retrieval: C=%d from the %s, efSearch=%d from the %s; %s",
        n_candidates, c_from, ef_search, ef_from, measured,
    )
    return n_candidates, ef_search


def _check_arrays(path: Path, arrays: Any) -> None:
    # Sizes are checked by models.artifact_arrays.read_arrays; values are not, and one NaN row would
    # poison every FAISS search that meets it.
    if not (np.isfinite(arrays.items).all() and np.isfinite(arrays.users).all()):
        raise ArtifactRejectedError(
            f"artifact {path.name}: item or user vectors contain NaN or "
            f"inf; the training run diverged, re-train and re-export"
        )


def _open_session(path: Path, threads: int, use_gpu: bool | None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # one small graph: no parallel ops
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(path), opts, providers=accel.ort_providers(use_gpu))
    except Exception as exc:  # noqa: BLE001 - ORT raises its own unrelated exception types
        raise ArtifactRejectedError(
            f"{path.parent.name}/{path.name} does not load in onnxruntime: {exc}"
        ) from exc
    names = {i.name for i in session.get_inputs()}
    missing = [n for n in INPUTS if n not in names]
    if missing or DISTANCES not in {o.name for o in session.get_outputs()}:
        raise ArtifactRejectedError(
            f"{path.parent.name}/{path.name} must take inputs {', '.join(INPUTS)} and "
            f"output 'distances' (missing inputs: {missing or 'none'}); re-export the model"
        )
    return session


def _open_index(path: Path, items: np.ndarray, ef_search: int, use_gpu: bool | None) -> Any:
    if not path.exists():
        # An exact index over a small catalogue costs milliseconds to build; keep serving.
        log.warning("%s has no %s; building an exact IndexFlatL2", path.parent.name, path.name)
        index: Any = faiss.IndexFlatL2(items.shape[1])
        index.add(np.ascontiguousarray(items, dtype=np.float32))
        return accel.faiss_to_gpu(index, use_gpu)
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError:
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise ArtifactRejectedError(
                f"{path.parent.name}/{path.name} is not a FAISS index: {exc}"
            ) from exc
    if index.ntotal != items.shape[0] or index.d != items.shape[1]:
        raise ArtifactRejectedError(
            f"{path.parent.name}/{path.name} holds {index.ntotal} vectors of dim {index.d}, but "
            f"the artifact has {items.shape[0]} items of dim {items.shape[1]}"
        )
    if "HNSW" in type(faiss.downcast_index(index)).__name__ or hasattr(index, "index"):
        try:
            faiss.ParameterSpace().set_index_parameter(index, "efSearch", ef_search)
        except RuntimeError:
            log.info("%s has no efSearch parameter; searched as built", path.name)
    return accel.faiss_to_gpu(index, use_gpu)


def _open_pools(path: Path, manifest: art.Manifest, arrays: Any) -> UserPools | None:
    """The version's per-user candidate pools (training/pool_builder.py), mapped; None for a
    version without them."""
    if manifest.pools is None:
        return None
    try:
        pools = UserPools.open(path, manifest.pools, len(arrays.users), len(arrays.items),
                               arrays.items.shape[1])
    except (OSError, ValueError) as exc:
        raise ArtifactRejectedError(f"artifact {path.name}: its candidate pools are "
                                    f"unreadable ({exc}); re-export the version") from exc
    log.info("candidate pools: %d items for each of %d users (probes %s)", manifest.pools.k,
             manifest.pools.users, manifest.pools.probes)
    return pools


def _set_k_factor(index: Any, manifest: art.Manifest) -> None:
    """Candidates a refined fast scan (pqfs, issue 18) re-orders exactly, per result asked:
    the export's measured choice (manifest `retrieval.k_factor`), else the build's. The file
    holds the build's, written before the measurement chose (on the grown catalogue of
    docs/benchmarks.md, 8 built and 32 chosen). A no-op for other indexes."""
    refine = refined_index(index)
    if refine is None:
        return
    chosen = manifest.retrieval.k_factor if manifest.retrieval is not None else None
    built = manifest.index.params.get("k_factor")
    refine.k_factor = float(chosen or built or FALLBACK_K_FACTOR)
    log.info("refined fast scan: k_factor=%g (%s)", refine.k_factor,
             "manifest" if chosen else "as built")


def _set_nprobe(index: Any, manifest: art.Manifest) -> None:
    """IVF lists probed: the export's measured choice (manifest `retrieval.nprobe`, issue
    21), else the index's own. A no-op for indexes without lists."""
    chosen = manifest.retrieval.nprobe if manifest.retrieval is not None else None
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return
    if chosen is not None:
        ivf.nprobe = int(chosen)
    log.info("IVF index: nprobe=%d of %d lists", ivf.nprobe, ivf.nlist)


def _smoke_test(loaded: LoadedArtifact) -> None:
    """One tiny inference: a graph that loads but cannot run must not be swapped in."""
    n = min(2, loaded.n_items)
    feeds = scorer_feed(loaded.arrays.items[:1], *empty_history(1, loaded.l_max),
                        np.arange(n, dtype=np.int64)[None, :])
    try:
        (dist,) = loaded.session.run([DISTANCES], feeds)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise ArtifactRejectedError(
            f"{loaded.version}/{SCORER_FILE} fails on a test input "
            f"(L_max={loaded.l_max} from the manifest): {exc}"
        ) from exc
    if dist.shape != (1, n) or not np.isfinite(dist).all():
        raise ArtifactRejectedError(
            f"{loaded.version}/{SCORER_FILE} returns distances of shape "
            f"{dist.shape} or non-finite values on a test input"
        )
