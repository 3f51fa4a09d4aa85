"""The demo's printed Python example (training/demo.py) runs as printed against the real app
over the tiny artifact, through the typed client. Test issue #22.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import service.client
from service.app import create_app
from service.client import RelrecClient
from service.loader import load_artifact
from tests.service.conftest import make_settings
from training.demo import client_example, usage


def test_the_printed_client_example_runs_against_the_app(
    tiny_artifact_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    loaded = load_artifact(tiny_artifact_dir / "current")
    user, item = str(loaded.arrays.user_ids.ids[0]), str(loaded.arrays.item_ids.ids[0])
    url = "http://127.0.0.1:8000"
    example = client_example(url, user, item)
    assert example in usage(url, user, item)
    app = create_app(make_settings(tiny_artifact_dir, f"sqlite:///{tmp_path / 'h.db'}"))
    with TestClient(app) as http:
        urls: list[str] = []

        def in_process(base_url: str, api_key: str | None = None) -> RelrecClient:
            urls.append(base_url)  # the example's own URL, served here in-process
            return RelrecClient(base_url, api_key, client=http)

        monkeypatch.setattr(service.client, "RelrecClient", in_process)
        exec(compile(example, "<demo example>", "exec"), {})  # noqa: S102 - our own text
    assert urls == [url]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 11  # ten recommendations, then the new user's source
    ranked = [line.split(" ", 2) for line in lines[:10]]
    assert all(rec_item in loaded.arrays.item_ids.ids for rec_item, _, _ in ranked)
    assert all(0.0 <= float(score) <= 1.0 for _, score, _ in ranked)
    assert all(because.startswith("[") for _, _, because in ranked)
    assert lines[10] == "history"
