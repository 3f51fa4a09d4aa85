"""The `scorer.onnx` I/O contract: input and output names, dtypes, shapes, opset, and the feed.

Numpy only (no torch), so that the service imports it: the exporter traces graphs with these
names (`training/scorer_graph.py`), the loader checks them and runs its smoke test with
`scorer_feed`, the ranker builds every request batch with it, and the export parity checks
feed the same function. Every scorer takes all four inputs, whether it reads the history or
not; HLR/HLR++ also output the attention over the history.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ATTENTION", "DISTANCES", "INPUTS", "OPSET", "OUTPUTS", "dynamic_axes",
           "empty_history", "io_spec", "scorer_feed"]

OPSET = 17
INPUTS = ("user_vecs", "hist_rows", "hist_mask", "cand_rows")
DISTANCES = "distances"  # [B, C] float32 squared distances, smaller is better; +inf: bad row
ATTENTION = "attention"  # [B, C, L] float32 weights of the history slots (HLR, HLR++)
OUTPUTS = (DISTANCES, ATTENTION)


def scorer_feed(user_vecs: np.ndarray, hist_rows: np.ndarray, hist_mask: np.ndarray,
                cand_rows: np.ndarray) -> dict[str, np.ndarray]:
    """The session feed, in the contract's dtypes (contiguous; copies only when needed)."""
    return {"user_vecs": np.ascontiguousarray(user_vecs, dtype=np.float32),  # [B, d]
            "hist_rows": np.ascontiguousarray(hist_rows, dtype=np.int64),  # [B, L]
            "hist_mask": np.ascontiguousarray(hist_mask, dtype=np.float32),  # [B, L] 1 real
            "cand_rows": np.ascontiguousarray(cand_rows, dtype=np.int64)}  # [B, C]


def empty_history(batch: int, l_max: int) -> tuple[np.ndarray, np.ndarray]:
    """History rows and mask `[B, L]` of users with no history (every slot a pad)."""
    return np.zeros((batch, l_max), np.int64), np.zeros((batch, l_max), np.float32)


def io_spec(dim: int, l_max: int, has_attention: bool
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Input and output specs (dtype, shape with "B"/"C" dynamic), as the manifest records."""
    inputs: dict[str, tuple[str, list[int | str]]] = {
        "user_vecs": ("float32", ["B", dim]), "hist_rows": ("int64", ["B", l_max]),
        "hist_mask": ("float32", ["B", l_max]), "cand_rows": ("int64", ["B", "C"])}
    outputs: dict[str, tuple[str, list[int | str]]] = {DISTANCES: ("float32", ["B", "C"])}
    if has_attention:
        outputs[ATTENTION] = ("float32", ["B", "C", l_max])
    as_spec = {k: {"dtype": t, "shape": s} for k, (t, s) in inputs.items()}
    return as_spec, {k: {"dtype": t, "shape": s} for k, (t, s) in outputs.items()}


def dynamic_axes(has_attention: bool) -> dict[str, dict[int, str]]:
    """The dynamic axes of the traced graph: B everywhere, C on the candidates and outputs."""
    axes = {"user_vecs": {0: "B"}, "hist_rows": {0: "B"}, "hist_mask": {0: "B"},
            "cand_rows": {0: "B", 1: "C"}, DISTANCES: {0: "B", 1: "C"}}
    if has_attention:
        axes[ATTENTION] = {0: "B", 1: "C"}
    return axes
