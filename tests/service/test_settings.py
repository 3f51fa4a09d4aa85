"""Settings: RELREC_* env vars map 1:1 to fields, bounds fail at start-up, keys stay secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.loader import FALLBACK_N_CANDIDATES
from service.server import settings_to_env
from service.settings import Settings


def test_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"RELREC_{name.upper()}", raising=False)
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.history_url.startswith("sqlite:///")
    assert s.write_keys() == [] and s.admin_keys() == []
    # C and efSearch come from each artifact's manifest (issue 18) unless set; versions
    # without that record get the fallback, which stays a sane C.
    assert s.n_candidates is None and s.ef_search is None
    assert 100 <= FALLBACK_N_CANDIDATES <= 1000


def test_env_vars_map_to_fields(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RELREC_ARTIFACT_DIR", str(tmp_path))
    monkeypatch.setenv("RELREC_HISTORY_URL", "redis://cache:6379/2")
    monkeypatch.setenv("RELREC_N_CANDIDATES", "400")
    monkeypatch.setenv("RELREC_API_KEYS", " a , b,,c ")
    monkeypatch.setenv("RELREC_USE_GPU", "false")
    monkeypatch.setenv("RELREC_BATCH_MAX_WAIT_MS", "1.5")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.artifact_dir == tmp_path and s.history_url == "redis://cache:6379/2"
    assert s.n_candidates == 400 and s.use_gpu is False and s.batch_max_wait_ms == 1.5
    assert s.write_keys() == ["a", "b", "c"]
    assert s.admin_keys() == ["a", "b", "c"]  # admin falls back to the write keys


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RELREC_MAX_K", raising=False)
    env = tmp_path / ".env"
    env.write_text("RELREC_MAX_K=7\n")
    assert Settings(_env_file=env).max_k == 7  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "field,value",
    [
        ("n_candidates", 0),
        ("max_k", 0),
        ("max_body_bytes", 10),
        ("batch_max_size", 0),
        ("history_url", "mysql://db"),
        ("history_url", "/tmp/file.db"),
        ("reload_poll_s", -1),
    ],
)
def test_out_of_bounds_values_fail_at_start(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None, **{field: value})  # type: ignore[call-arg, arg-type]
    assert field in str(info.value)


def test_keys_are_secret_and_settings_frozen() -> None:
    s = Settings(_env_file=None, api_keys="topsecret", admin_api_keys="root")  # type: ignore[call-arg, arg-type]
    assert "topsecret" not in repr(s) and "root" not in str(s.model_dump())
    assert s.admin_keys() == ["root"]
    with pytest.raises(ValidationError):
        s.max_k = 5  # type: ignore[misc]
    with pytest.raises(ValidationError) as info:  # a bad URL does not echo the keys
        Settings(_env_file=None, api_keys="topsecret", history_url="ftp://x")  # type: ignore[call-arg, arg-type]
    assert "topsecret" not in str(info.value)


def test_settings_round_trip_through_env_for_workers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s = Settings(  # type: ignore[call-arg]
        _env_file=None,
        artifact_dir=tmp_path,
        api_keys="k1,k2",  # type: ignore[arg-type]  # comma-separated, split by a validator
        use_gpu=False,
        n_candidates=123,
    )
    for name, value in settings_to_env(s).items():
        monkeypatch.setenv(name, value)
    again = Settings(_env_file=None)  # type: ignore[call-arg]
    assert again.write_keys() == ["k1", "k2"]
    assert again.model_dump(exclude={"api_keys", "admin_api_keys"}) == s.model_dump(
        exclude={"api_keys", "admin_api_keys"}
    )
