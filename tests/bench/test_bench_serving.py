"""The issue-7 benchmark scripts run end to end in their quick modes, so they cannot rot.

Each runs as a subprocess on a tiny synthetic catalogue (built once, cached in a temp dir)
and must exit 0 and report every field the docs' tables are made of. No timing is asserted:
the figures depend on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from models import artifact as art

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, timeout: int = 600) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("catalogues")


def test_catalogue_quick_is_a_valid_cached_artifact(cache: Path) -> None:
    out = run(
        "bench/catalogue.py", "--items", "2000", "--users", "300", "--cache", str(cache), "--quick"
    )
    assert "catalogue 2000 items, 300 users" in out and "index Flat" in out
    (root,) = cache.iterdir()
    vdir, manifest = art.open_version(root)  # the loader's own checks: checksums included
    assert manifest.kind == "hlr" and manifest.counts.items == 2000
    assert json.loads((root / "catalogue.json").read_text())["export_s"] >= 0
    again = run(
        "bench/catalogue.py", "--items", "2000", "--users", "300", "--cache", str(cache), "--quick"
    )
    assert vdir.name in str(art.resolve_current(root)) and "export" in again
    assert len(art.list_versions(root)) == 1  # cached: not exported twice


def test_retrieval_quick_on_a_catalogue(cache: Path, tmp_path: Path) -> None:
    out = run(
        "bench/retrieval.py",
        "--items",
        "2000",
        "--cache",
        str(cache),
        "--quick",
        "--json",
        str(tmp_path / "r.json"),
    )
    assert "recall@10=" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["items"] == 2000 and result["users"] == 100
    assert {r["C"] for r in result["results"]} == {100, 300}
    assert all(0.0 <= r["recall_at_10"] <= 1.0 for r in result["results"])


def test_serve_quick_reports_every_field(cache: Path, tmp_path: Path) -> None:
    spy = Path(sys.executable).with_name("py-spy").exists()  # the `bench` extra
    profile = ["--profile", str(tmp_path / "profile")] if spy else []
    out = run(
        "bench/serve.py",
        "--quick",
        "--cache",
        str(cache),
        "--compare-c",
        "200",
        *profile,
        "--json",
        str(tmp_path / "s.json"),
    )
    assert "client pinned to CPUs" in out and "recommend ÷ /healthz" in out
    assert "one request at a time: p50 ms" in out
    result = json.loads((tmp_path / "s.json").read_text())
    # Issue 18: the artifact's own C and C = 200 side by side, each with its /healthz ratio.
    chosen = art.read_manifest(art.resolve_version_dir(Path(result["artifact_dir"]))).retrieval
    assert chosen is not None and result["candidates"] == chosen.n_candidates
    arms = [f"C={chosen.n_candidates}", "C=200"]
    assert list(result["closed_loop"]) == arms
    for arm in arms:
        closed = result["closed_loop"][arm]
        assert closed["requests"] > 0 and closed["errors"] == 0
        assert closed["healthz_rps"] > 0 and closed["ratio"] > 0 and closed["server_cpu_ms"] > 0
        for stage in ("history", "retrieval", "rerank", "serialize"):
            assert closed[f"{stage}_ms"] > 0
        assert [r["rate"] for r in result["open_loop"][arm]] == [20.0, 100.0]
        for row in result["open_loop"][arm]:
            assert row["errors"] == 0 and {"p50_ms", "p99_ms", "p999_ms"} <= set(row)
        single = result["single"][arm]  # one request at a time: the unloaded latency
        assert single["requests"] > 0 and single["errors"] == 0 and single["p50_ms"] > 0
    assert result["users"]["posted_interactions"] > 0
    if spy:
        assert result["profile"] and abs(sum(result["profile"].values()) - 1.0) < 1e-6
    # Recall at each served C, on the same artifact.
    for c in (chosen.n_candidates, 200):
        r = result["recall"][str(c)]
        assert r["C"] == c and 0.0 <= r["recall_at_10"] <= 1.0 and r["users"] > 0
    assert "(the served C)" in out


def test_serve_executors_quick_compares_both_in_one_run(cache: Path, tmp_path: Path) -> None:
    out = run(
        "bench/serve_executors.py",
        "--quick",
        "--cache",
        str(cache),
        "--rounds",
        "1",
        "--json",
        str(tmp_path / "e.json"),
    )
    assert "| | thread | worker | inline | worker ÷ thread | inline ÷ thread |" in out
    result = json.loads((tmp_path / "e.json").read_text())
    for mode in ("thread", "worker", "inline"):
        closed = result["closed_loop"][mode]
        assert closed["requests"] > 0 and closed["errors"] == 0 and closed["server_cpu_ms"] > 0
        assert [r["rate"] for r in result["open_loop"][mode]] == [20.0, 100.0]
        assert all(r["errors"] == 0 for r in result["open_loop"][mode])
    assert set(result["load_average"]) == {"before", "after"}


def test_request_path_compares_each_saving_on_one_artifact(cache: Path, tmp_path: Path) -> None:
    # Built by the catalogue test (cached: this run is a no-op then); built here when alone.
    run("bench/catalogue.py", "--items", "2000", "--users", "300", "--cache", str(cache), "--quick")
    root = next(cache.glob("hlr-items2000-users300-*"))
    out = run("bench/request_path.py", str(root), "--users", "24", "--rounds", "1",
              "--batch", "1", "4", "--json", str(tmp_path / "p.json"))
    assert "pad once" in out and "orjson" in out
    result = json.loads((tmp_path / "p.json").read_text())
    for b in ("batch_1", "batch_4"):
        for group in ("padding", "rerank", "serialize", "recommend_many"):
            assert all(r["ms"] > 0 for r in result[b][group].values())
        assert set(result[b]["stages_wall_ms"]) == {"history", "retrieval", "rerank"}


def test_serve_floor_quick_serves_arms_of_settings_side_by_side(
    cache: Path, tmp_path: Path
) -> None:
    out = run(
        "bench/serve_floor.py",
        "--quick",
        "--cache",
        str(cache),
        "--rounds",
        "1",
        "--rates",
        "20",
        "--arm",
        "no fast path:RELREC_FAST_RECOMMEND=false",
        "--json",
        str(tmp_path / "f.json"),
    )
    assert "| | after | no fast path | no fast path ÷ after |" in out
    result = json.loads((tmp_path / "f.json").read_text())
    assert result["arms"]["no fast path"]["env"]["RELREC_FAST_RECOMMEND"] == "false"
    for arm in ("after", "no fast path"):
        closed = result["closed_loop"][arm]
        assert closed["requests"] > 0 and closed["errors"] == 0 and closed["server_cpu_ms"] > 0
        assert all(r["errors"] == 0 for r in result["open_loop"][arm])


def test_app_path_times_each_layer_on_one_artifact(cache: Path, tmp_path: Path) -> None:
    run("bench/catalogue.py", "--items", "2000", "--users", "300", "--cache", str(cache), "--quick")
    root = next(cache.glob("hlr-items2000-users300-*"))
    out = run("bench/app_path.py", str(root), "--users", "20", "--rounds", "1",
              "--json", str(tmp_path / "a.json"))
    assert "| FastAPI route, batch in a thread |" in out
    result = json.loads((tmp_path / "a.json").read_text())
    assert len(result["median"]) == 8 and all(ms > 0 for ms in result["median"].values())
