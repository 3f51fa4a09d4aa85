"""The artifact's per-user candidate pools: files and manifest record (issue 18; pydantic only).

A pool is, for one trained user, the K items nearest to the user's translated probe as the
service computes it from the exported history, with the probe itself and the distance of the
first item left out (the pool's radius). `service/user_pools.py` serves a request from the pool
when a bound proves that the pool holds the catalogue's nearest C unseen items for the probe of
that request; `training/pool_builder.py` writes them. Optional files: a version without them
(before this, or built with `--pools off`) is searched through the FAISS index alone, and an
older relrec ignores them (the manifest's field is additive; the files are checksummed as
the others).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["POOL_FILES", "POOL_PROBES", "POOL_RADIUS", "POOL_ROWS", "PoolsInfo"]

POOL_ROWS = "pool_rows.npy"  # [U, K] int32 item rows, nearest first
POOL_PROBES = "pool_probes.npy"  # [U, d] float32: the probe the pools were searched for
POOL_RADIUS = "pool_radius.npy"  # [U] float32: distance of the nearest item outside the pool
POOL_FILES: tuple[str, ...] = (POOL_ROWS, POOL_PROBES, POOL_RADIUS)


class PoolsInfo(BaseModel):
    """What `training/pool_builder.py` wrote: K items a user, for which probes, at what cost.

    `probes` names the probe set (RELREC_PROBES) the pools are valid for: a service set to
    another one does not read them. Distances are Euclidean (not squared), so that the
    triangle inequality bounds how far a moved probe can bring an item from outside the pool.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(ge=1)  # items a pool
    users: int = Field(ge=0)
    probes: str = "relation"
    bytes: int = Field(ge=0)  # of the three files together
    seconds: float = Field(ge=0.0)  # to build them at export
