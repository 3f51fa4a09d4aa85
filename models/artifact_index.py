"""What a version's manifest records of its FAISS index and of the retrieval choice made at
export: `IndexInfo`, `RetrievalInfo` and its `RecallPoint`s (split from `models/artifact.py`,
which re-exports them; pydantic only)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

__all__ = ["IndexInfo", "RecallPoint", "RetrievalInfo"]


class IndexInfo(BaseModel):
    """The FAISS index over item vectors, as autofaiss's `index_infos.json` records it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # faiss.index_factory string: "Flat", "HNSW32", "IVF<nlist>,PQ<m>x<nbits>" (issue 21) or
    # "PQ<m>x4fs,RFlat" (issue 18);
    # `params` also records the memory budget, the estimate and why the kind was chosen
    factory: str
    metric: Literal["L2", "IP"] = "L2"  # IP: inner product (ALS, most popular)
    params: dict[str, Any] = Field(default_factory=dict)  # efConstruction, efSearch ...
    recall_at_c: float | None = None  # vs exact search, measured on the users' own vectors
    c: int | None = None  # the C of recall_at_c


class _NprobeOnlyWhenSet(BaseModel):
    """`nprobe` (issue 21) and `k_factor` (issue 18) are written only where there is one, so
    that a Flat or HNSW version stays readable by a relrec from before them; an older relrec
    refuses an IVF or refined version (its manifest does not validate there) instead of
    serving it with the wrong setting."""

    @model_serializer(mode="wrap")
    def _drop_unset_knobs(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        for knob in ("nprobe", "k_factor"):
            if out.get(knob, 0) is None:
                del out[knob]
        return out


class RecallPoint(_NprobeOnlyWhenSet):
    """One measurement behind `RetrievalInfo`: recall@k of the two-stage result at (C, ef)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    c: int = Field(ge=1)
    ef_search: int | None = None  # None: exact (Flat) index
    nprobe: int | None = None  # IVF lists probed (an IVF-PQ index, issue 21)
    k_factor: int | None = None  # candidates re-ordered exactly / k (a pqfs index, issue 18)
    recall: float = Field(ge=0.0, le=1.0)


class RetrievalInfo(_NprobeOnlyWhenSet):
    """The candidate count C and HNSW efSearch the service uses for this version (issue 18).

    Chosen at export by `training/candidates.py`: the smallest C (then the smallest efSearch at
    that C) whose two-stage result (FAISS probes, C candidates, exact re-rank) reaches
    `target_recall` recall@k against exhaustive exact scoring of every item, on `users`
    sampled users. The service reads them unless RELREC_N_CANDIDATES / RELREC_EF_SEARCH are
    set. `met` is False when no measured C reached the target: the index caps recall, and
    the smallest C and efSearch reaching the best recall measured are kept.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_candidates: int = Field(ge=1)
    ef_search: int | None = None  # None: exact (Flat) index, nothing to tune
    nprobe: int | None = None  # IVF lists probed; None: not an IVF index (issue 21)
    k_factor: int | None = None  # refined fast scan (pqfs): k x this re-ordered exactly
    probes: str = "relation"  # the probe set it was measured with (RELREC_PROBES)
    k: int = Field(10, ge=1)
    target_recall: float = Field(ge=0.0, le=1.0)
    recall: float = Field(ge=0.0, le=1.0)  # measured at (n_candidates, ef_search)
    met: bool
    users: int = Field(ge=0)
    curve: list[RecallPoint] = Field(default_factory=list)  # every point measured
