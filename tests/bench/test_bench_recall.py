"""The issue-18 scripts run end to end on the tiny trained artifact, so they cannot rot:
bench/grow_catalogue.py grows it (trained rows kept, variants added, C chosen at export),
bench/recall.py reports the recall grid and the served C, bench/gpu.py says whether a GPU
was there. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from models import artifact as art
from models.artifact_arrays import read_arrays
from tests.bench.test_bench_serving import run


def test_grow_then_recall_grid(tiny_artifact_dir: Path, tmp_path: Path) -> None:
    source = art.resolve_current(tiny_artifact_dir)
    trained = read_arrays(source)
    out = run("bench/grow_catalogue.py", str(tiny_artifact_dir), "--items", "400",
              "--logit-std", "1.0", "--threads", "1", "--out", str(tmp_path / "grown"))
    assert "grown catalogue:" in out
    vdir, manifest = art.open_version(tmp_path / "grown")  # checksums and all
    grown = read_arrays(vdir)
    n0 = len(trained.items)
    assert manifest.counts.items == 400 and manifest.kind == "hlr"
    assert np.array_equal(grown.items[:n0], trained.items)  # the trained rows are kept
    assert np.array_equal(grown.users, trained.users)
    assert np.all(np.linalg.norm(grown.items, axis=1) <= 1.0 + 1e-5)  # in the unit ball
    assert grown.popularity[n0:].sum() > 0  # variants joined the histories
    chosen = manifest.retrieval
    assert chosen is not None and chosen.recall >= 0.0

    out = run("bench/recall.py", str(tmp_path / "grown"), "--users", "30", "--candidates",
              "10,50", "--hnsw", "--ef", "16,64", "--json", str(tmp_path / "r.json"))
    assert "| exact (Flat) |" in out and "| HNSW32 efSearch 64 |" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert len(result["grid"]) == 2 + 2 * 2 and result["users"] == 30
    assert all(0.0 <= r["recall_at_10"] <= 1.0 for r in result["grid"])
    assert result["served"]["C"] == chosen.n_candidates
    flat = {r["C"]: r["recall_at_10"] for r in result["grid"] if r["ef_search"] is None}
    assert flat[50] >= flat[10]  # exact search: more candidates hold the fewer


def test_gpu_script_says_whether_a_gpu_was_there(tmp_path: Path) -> None:
    out = run("bench/gpu.py", "--items", "500", "--batches", "1,2", "--repeats", "1",
              "--cpu-anyway", "--json", str(tmp_path / "g.json"))
    result = json.loads((tmp_path / "g.json").read_text())
    has_gpu = result["status"]["ort_cuda"] or result["status"]["faiss_gpus"] > 0
    assert result["gpu_measured"] == has_gpu
    assert out.startswith("GPU:") if has_gpu else out.startswith("NO GPU AVAILABLE")
    assert [r["batch"] for r in result["rows"]] == [1, 2]
    assert all(r["ort_cpu_ms"] > 0 and r["faiss_cpu_flat_ms"] > 0 for r in result["rows"])
