"""Accelerator detection, done once at import (implicit's `gpu/__init__.py`).

The GPU/CPU split is a parameter, not a package: the loader asks `ort_providers(use_gpu)` and
`faiss_to_gpu(index, use_gpu)`, and onnxruntime and FAISS switch devices themselves. Reads
nothing but the installed libraries.
"""

from __future__ import annotations

import logging
from typing import Any

import faiss
import onnxruntime as ort

log = logging.getLogger(__name__)

__all__ = ["HAS_CUDA", "HAS_FAISS_GPU", "faiss_to_gpu", "ort_providers"]

HAS_CUDA: bool = "CUDAExecutionProvider" in ort.get_available_providers()


def _faiss_gpus() -> int:
    # faiss-cpu has no get_num_gpus on some builds; faiss-gpu may report 0 without a driver.
    try:
        return int(faiss.get_num_gpus()) if hasattr(faiss, "StandardGpuResources") else 0
    except Exception:  # noqa: BLE001 - detection must never break start-up
        return 0


HAS_FAISS_GPU: bool = _faiss_gpus() > 0
_gpu_resources: Any = None


def _want_gpu(use_gpu: bool | None, available: bool) -> bool:
    return available if use_gpu is None else (use_gpu and available)


def ort_providers(use_gpu: bool | None = None) -> list[str]:
    """ORT execution providers in preference order; CPU is always the last resort."""
    if _want_gpu(use_gpu, HAS_CUDA):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if use_gpu and not HAS_CUDA:
        log.warning("use_gpu requested but onnxruntime has no CUDA provider; using CPU")
    return ["CPUExecutionProvider"]


def faiss_to_gpu(index: Any, use_gpu: bool | None = None) -> Any:
    """The index on GPU 0 when FAISS has GPU support, else unchanged: HNSW, and a kind FAISS
    cannot clone to GPU (a refined fast scan, pqfs), stay on CPU."""
    global _gpu_resources
    if not _want_gpu(use_gpu, HAS_FAISS_GPU) or isinstance(index, faiss.IndexHNSW):
        return index
    if _gpu_resources is None:
        _gpu_resources = faiss.StandardGpuResources()
    try:
        return faiss.index_cpu_to_gpu(_gpu_resources, 0, index)
    except RuntimeError as exc:
        log.warning("FAISS cannot move %s to GPU (%s); searching it on CPU",
                    type(index).__name__, exc)
        return index
