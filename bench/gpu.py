"""GPU retrieval and re-ranking at batch sizes 1-256 (issue 18, step 5), in under 5 minutes.

    python bench/gpu.py [--items 100000] [--candidates 200] [--batches 1,4,16,64,256]
        [--json runs/gpu.json]

Plants a synthetic HLR catalogue (bench/catalogue.py's `plant_model`, d 100, N 20, L_max 50),
exports it with the real exporter into a temp dir (no C choice: that is measured elsewhere),
and times, per batch size B, the median of `--repeats` calls after a warm-up:

- retrieval: FAISS exact search (IndexFlatL2) on the GPU (`service.accel.faiss_to_gpu`), k = C,
  B translated queries, against the CPU HNSW32 index the exporter built and exact CPU search;
- re-ranking: `scorer.onnx` with onnxruntime's CUDAExecutionProvider, B users x C candidates,
  against the CPUExecutionProvider.

Without a GPU it says so on the first line (which libraries lack it and why) and measures
nothing; with one it also checks that the GPU results equal the CPU ones (same top k rows,
distances within 1e-3 relative), so a fast wrong answer cannot pass.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from catalogue import CatalogueSpec, plant_model  # noqa: E402

from models import artifact as art  # noqa: E402
from models.artifact_arrays import ArtifactArrays, read_arrays  # noqa: E402
from models.scorer_io import DISTANCES, scorer_feed  # noqa: E402
from service import accel  # noqa: E402


def gpu_status() -> dict[str, Any]:
    """What this machine offers: the driver's view and each library's."""
    smi = shutil.which("nvidia-smi")
    name = None
    if smi:
        out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        name = out.stdout.strip() or None
    return {"nvidia_smi": name, "ort_providers": ort.get_available_providers(),
            "ort_cuda": accel.HAS_CUDA, "faiss_gpus": int(accel.HAS_FAISS_GPU),
            "faiss_version": faiss.__version__}


def timed(fn: Any, repeats: int) -> float:
    """Median milliseconds of `fn()` over `repeats` calls after two warm-up calls."""
    fn(), fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def build(n_items: int, tmp: Path) -> Path:
    from training.exporter import export

    spec = CatalogueSpec(n_items=n_items, n_users=2_000, ef_construction=64)
    model, log = plant_model(spec, np.random.default_rng(0))
    return export(model, log, tmp, choose_retrieval=False, parity_check=False)


def inputs(a: ArtifactArrays, l_max: int, b: int, c: int,
           rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    users = rng.choice(len(a.users), b, replace=len(a.users) < b)
    queries = np.ascontiguousarray(a.users[users] + a.memories.mean(axis=0), dtype=np.float32)
    hist_rows = rng.integers(0, len(a.items), (b, l_max))
    hist_mask = np.ones((b, l_max), np.float32)
    cand = rng.integers(0, len(a.items), (b, c))
    return queries, scorer_feed(np.asarray(a.users[users]), hist_rows, hist_mask, cand)


def measure(vdir: Path, c: int, batches: list[int], repeats: int,
            status: dict[str, Any]) -> list[dict[str, Any]]:
    a = read_arrays(vdir)
    l_max = art.read_manifest(vdir).l_max
    served = faiss.read_index(str(vdir / art.INDEX))  # HNSW32 above 50k items, else Flat
    if hasattr(faiss.downcast_index(served), "hnsw"):
        faiss.downcast_index(served).hnsw.efSearch = max(64, c)
    flat = faiss.IndexFlatL2(a.items.shape[1])
    flat.add(np.ascontiguousarray(a.items))
    gpu_flat = accel.faiss_to_gpu(flat, True) if status["faiss_gpus"] else None
    scorer = str(vdir / art.SCORER)
    cpu = ort.InferenceSession(scorer, providers=["CPUExecutionProvider"])
    cuda = (ort.InferenceSession(scorer, providers=accel.ort_providers(True))
            if status["ort_cuda"] else None)
    rng = np.random.default_rng(0)
    rows = []
    for b in batches:
        q, feed = inputs(a, l_max, b, c, rng)
        row = {"batch": b, "C": c, **one_batch(q, feed, c, repeats, served, flat, gpu_flat,
                                               cpu, cuda)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def one_batch(q: np.ndarray, feed: dict[str, np.ndarray], c: int, repeats: int, served: Any,
              flat: Any, gpu_flat: Any, cpu: ort.InferenceSession,
              cuda: ort.InferenceSession | None) -> dict[str, float]:
    """Timings of one batch on every device there is, and the GPU's agreement with the CPU."""
    row = {"faiss_cpu_served_ms": timed(lambda: served.search(q, c), repeats),
           "faiss_cpu_flat_ms": timed(lambda: flat.search(q, c), repeats),
           "ort_cpu_ms": timed(lambda: cpu.run([DISTANCES], feed), repeats)}
    if gpu_flat is not None:
        row["faiss_gpu_flat_ms"] = timed(lambda: gpu_flat.search(q, c), repeats)
        _, want = flat.search(q, 10)
        _, got = gpu_flat.search(q, 10)
        row["faiss_gpu_top10_equal"] = float(np.mean(want == got))
    if cuda is not None:
        row["ort_cuda_ms"] = timed(lambda: cuda.run([DISTANCES], feed), repeats)
        (want_d,) = cpu.run([DISTANCES], feed)
        (got_d,) = cuda.run([DISTANCES], feed)
        row["ort_cuda_max_rel_err"] = float(
            np.max(np.abs(got_d - want_d) / np.maximum(np.abs(want_d), 1e-6)))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--candidates", type=int, default=200)
    p.add_argument("--batches", default="1,4,16,64,256")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json", type=Path)
    p.add_argument("--cpu-anyway", action="store_true",
                   help="without a GPU, still measure the CPU columns (checks the script)")
    args = p.parse_args()
    status = gpu_status()
    result: dict[str, Any] = {"status": status}
    has_gpu = status["ort_cuda"] or status["faiss_gpus"]
    if not has_gpu:
        why = ("no NVIDIA driver (nvidia-smi not found)" if status["nvidia_smi"] is None
               else f"GPU {status['nvidia_smi']} present, but onnxruntime has no "
               f"CUDAExecutionProvider and FAISS no GPU support (install onnxruntime-gpu, "
               f"faiss-gpu)")
        print(f"NO GPU AVAILABLE: no GPU figure measured ({why}); {json.dumps(status)}")
    if has_gpu or args.cpu_anyway:
        print(f"GPU: {json.dumps(status)}" if has_gpu else "CPU columns only")
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            vdir = build(args.items, Path(tmp))
            print(f"catalogue: {args.items} items exported in {time.perf_counter() - t0:.0f} s")
            batches = [int(x) for x in args.batches.split(",")]
            result["rows"] = measure(vdir, args.candidates, batches, args.repeats, status)
    result["gpu_measured"] = bool(has_gpu)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
