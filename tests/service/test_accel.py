"""Accelerator detection: CPU always works; the GPU path runs only where CUDA is present."""

from __future__ import annotations

import numpy as np
import pytest

from service import accel
from service.loader import LoadedArtifact, load_artifact


def test_cpu_is_always_the_last_provider() -> None:
    assert accel.ort_providers(False) == ["CPUExecutionProvider"]
    assert accel.ort_providers(None)[-1] == "CPUExecutionProvider"
    assert accel.ort_providers(True)[-1] == "CPUExecutionProvider"  # asked, maybe not there


def test_faiss_to_gpu_is_a_no_op_without_gpu_support(loaded: LoadedArtifact) -> None:
    if accel.HAS_FAISS_GPU:
        pytest.skip("FAISS has GPU support here")
    assert accel.faiss_to_gpu(loaded.index, True) is loaded.index


@pytest.mark.gpu
def test_gpu_loader_scores_like_cpu(loaded: LoadedArtifact) -> None:
    if not accel.HAS_CUDA:
        pytest.skip("no CUDA execution provider")
    gpu = load_artifact(loaded.path, use_gpu=True)
    assert "CUDAExecutionProvider" in gpu.session.get_providers()
    feeds = {
        "user_vecs": np.asarray(loaded.arrays.users[:4], np.float32),
        "hist_rows": np.zeros((4, loaded.l_max), np.int64),
        "hist_mask": np.zeros((4, loaded.l_max), np.float32),
        "cand_rows": np.tile(np.arange(loaded.n_items), (4, 1)),
    }
    (cpu_d,) = loaded.session.run(["distances"], feeds)
    (gpu_d,) = gpu.session.run(["distances"], feeds)
    np.testing.assert_allclose(gpu_d, cpu_d, rtol=1e-4, atol=1e-5)
