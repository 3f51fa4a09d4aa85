"""The run directory (training/run_dir.py): one reader and writer of every run file, clear
errors for what is not a run, and runs written before issue 17 still load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.config import ModelConfig
from models.registry import build_model
from training.interactions import Interactions
from training.run_dir import Run, RunDirError, TextItems, load_run, save_run

N_USERS, N_ITEMS = 12, 20


@pytest.fixture()
def train() -> Interactions:
    rng = np.random.default_rng(0)
    users = np.concatenate([np.arange(N_USERS), rng.integers(0, N_USERS, 60)])
    items = np.concatenate([np.arange(N_ITEMS), rng.integers(0, N_ITEMS, 60 + N_USERS - N_ITEMS)])
    return Interactions.from_ids([f"u{u}" for u in users], [f"i{i}" for i in items],
                                 timestamps=rng.integers(0, 1000, len(users)))


def make_model(kind: str = "hlr"):
    torch.manual_seed(0)
    return build_model(ModelConfig(kind=kind, dim=8, n_memory=4, l_max=6), N_USERS,
                       N_ITEMS).eval()


def test_checkpoint_holds_model_args_config_and_state_together(tmp_path: Path,
                                                               train: Interactions) -> None:
    """nanoGPT's checkpoint shape: the model is rebuilt, and the config read, from model.pt."""
    model = make_model()
    config = {"algorithm": "hlr", "trainer": {"epochs": 3}}
    save_run(tmp_path, Run(train, {"k": 10}, config, model=model, known=train))
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    assert ckpt["model_args"] == {"config": model.config.model_dump(mode="json"),
                                  "n_users": N_USERS, "n_items": N_ITEMS}
    assert ckpt["config"] == config and set(ckpt["state_dict"]) == set(model.state_dict())
    (tmp_path / "config.json").unlink()  # the readable copy; the checkpoint is enough
    run = load_run(tmp_path)
    assert run.config == config and run.known is not None
    assert run.known.fingerprint() == train.fingerprint()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(run.model.state_dict()[name], value, rtol=0, atol=0)


def test_bad_run_dirs_are_explained(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="does not exist"):
        load_run(tmp_path / "nope")
    (tmp_path / "metrics.json").write_text(json.dumps({}))
    with pytest.raises(RunDirError, match="not a complete relrec training run"):
        load_run(tmp_path)
    for name in ("train.npz", "user_ids.json", "item_ids.json"):
        (tmp_path / name).write_text("[]")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "model.pt")
    with pytest.raises(RunDirError, match="not a relrec run checkpoint"):
        load_run(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"\x80garbage")
    with pytest.raises(RunDirError, match="cannot read"):
        load_run(tmp_path)


def _write_arrays(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_a_relational_run_written_before_issue_17_loads(tmp_path: Path,
                                                        train: Interactions) -> None:
    """The relrec-run/1 layout: model args at the top of model.pt, the config in config.json
    only, known.npz without weights, text_items.npz."""
    model = make_model("lrml")
    torch.save({"format": "relrec-run/1", "config": model.config.model_dump(mode="json"),
                "n_users": N_USERS, "n_items": N_ITEMS, "state_dict": model.state_dict()},
               tmp_path / "model.pt")
    _write_arrays(tmp_path / "train.npz", user_rows=train.user_rows, item_rows=train.item_rows,
                  weights=train.weights)
    _write_arrays(tmp_path / "known.npz", user_rows=train.user_rows[:5],
                  item_rows=train.item_rows[:5])
    _write_arrays(tmp_path / "text_items.npz", ids=np.array(json.dumps(["t1"])),
                  vectors=np.zeros((1, 8), np.float32), encoder=np.array("hashing-256"))
    (tmp_path / "user_ids.json").write_text(json.dumps(train.users.to_list()))
    (tmp_path / "item_ids.json").write_text(json.dumps(train.items.to_list()))
    (tmp_path / "config.json").write_text(json.dumps({"algorithm": "lrml"}))
    run = load_run(tmp_path)
    assert run.model is not None and run.model.kind == "lrml" and run.config["algorithm"] == "lrml"
    assert run.known is not None and run.known.item_rows.tolist() == train.item_rows[:5].tolist()
    assert run.text_items is not None and run.text_items.ids == ["t1"]
    torch.testing.assert_close(run.model.item_emb.weight, model.item_emb.weight)


def test_a_baseline_run_written_before_issue_17_loads(tmp_path: Path,
                                                      train: Interactions) -> None:
    _write_arrays(tmp_path / "baseline.npz", kind=np.array("pop"),
                  popularity=np.arange(N_ITEMS, dtype=np.float32))
    _write_arrays(tmp_path / "baseline_train.npz", user_rows=train.user_rows,
                  item_rows=train.item_rows, timestamps=train.timestamps)
    (tmp_path / "baseline_ids.json").write_text(json.dumps(
        {"users": train.users.to_list(), "items": train.items.to_list()}))
    (tmp_path / "metrics.json").write_text(json.dumps({"model": "pop"}))
    run = load_run(tmp_path)
    assert run.model is None and run.baseline is not None and str(run.baseline["kind"]) == "pop"
    assert run.train.fingerprint() == train.fingerprint() and run.metrics == {"model": "pop"}


def test_saving_a_run_removes_the_files_of_the_one_before(tmp_path: Path,
                                                          train: Interactions) -> None:
    """A second `relrec train --out` into the same directory leaves one consistent run."""
    vectors = np.zeros((1, 8), np.float32)
    save_run(tmp_path, Run(train, {}, {}, model=make_model(), known=train,
                           text_items=TextItems(["t1"], vectors, "hashing-256")))
    popularity = {"kind": np.array("pop"), "popularity": np.ones(N_ITEMS, np.float32)}
    save_run(tmp_path, Run(train, {"model": "pop"}, {"algorithm": "pop"}, baseline=popularity))
    assert not any((tmp_path / name).exists()
                   for name in ("model.pt", "known.npz", "text_items.npz"))
    run = load_run(tmp_path)
    assert run.model is None and run.known is None and run.text_items is None
    assert run.baseline is not None and run.config == {"algorithm": "pop"}


def test_a_model_and_data_of_different_sizes_are_refused(tmp_path: Path,
                                                         train: Interactions) -> None:
    small = train.select(train.user_rows < N_USERS)  # same maps: fine
    save_run(tmp_path, Run(small, {}, {}, model=make_model()))
    other = Interactions.from_ids(["a", "b"], ["x", "y"])
    with pytest.raises(RunDirError, match="the model has 12 users x 20 items"):
        save_run(tmp_path / "b", Run(other, {}, {}, model=make_model()))
