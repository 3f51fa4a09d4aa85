"""`relrec tune`: an Optuna study on validation only, resumable, whose best config trains."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from service.cli import main
from training.config import TrainerConfig, load_config
from training.tune import search_space, to_toml, tune

TINY = ["--k-core", "5", "--epochs", "2", "--patience", "2", "--no-progress", "--threads", "1"]


def _tune(sample_csv: Path, out: Path, model: str, trials: int) -> int:
    return main(["tune", "--model", model, "--data", str(sample_csv), "--trials", str(trials),
                 "--out", str(out), *TINY])


def test_study_reports_every_epoch_and_resumes(sample_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "cml"
    assert _tune(sample_csv, out, "cml", 2) == 0
    study = optuna.load_study(study_name="cml", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 2
    for trial in study.trials:  # the pruner sees each epoch's validation score
        curve = dict(enumerate(trial.user_attrs["curve"], 1))  # rounded to 1e-6
        assert trial.intermediate_values == pytest.approx(curve, abs=1e-6)
        assert trial.value == pytest.approx(max(curve.values()), abs=1e-6)
    assert _tune(sample_csv, out, "cml", 3) == 0  # same command, one more trial
    study = optuna.load_study(study_name="cml", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 3
    assert len((out / "trials.jsonl").read_text().splitlines()) == 3


def test_best_config_is_what_train_reads(sample_csv: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ease"
    assert _tune(sample_csv, out, "ease", 3) == 0
    study = optuna.load_study(study_name="ease", storage=f"sqlite:///{out / 'study.db'}")
    cfg = load_config(out / "best.toml")
    assert cfg.algorithm == "ease"
    assert cfg.baseline.ease_l2 == pytest.approx(study.best_params["ease_l2"])
    assert f"validation NDCG@10 {study.best_value:.4f}" in capsys.readouterr().out
    # `relrec train --config best.toml` with no --model trains the tuned algorithm
    run = tmp_path / "run"
    assert main(["train", "--data", str(sample_csv), "--config", str(out / "best.toml"),
                 "--k-core", "5", "--out", str(run)]) == 0
    doc = json.loads((run / "config.json").read_text())
    assert doc["algorithm"] == "ease"
    assert doc["baseline"]["ease_l2"] == pytest.approx(study.best_params["ease_l2"])


def test_toml_round_trips_a_relational_config() -> None:
    cfg = load_config(None, ["trainer.negatives=hardest", "trainer.n_negatives=7",
                             "trainer.lr_memory=0.0001", "model.margin=0.3"], algorithm="hlr")
    path_text = to_toml(cfg, "a header")
    again = load_config(None, algorithm="hlr", **_sections(path_text))
    assert again.model == cfg.model and again.trainer == cfg.trainer
    assert "device" not in path_text and "threads" not in path_text  # the trainer's machine


def _sections(text: str) -> dict:
    import tomllib

    tree = tomllib.loads(text)
    tree.pop("algorithm")
    return tree


@pytest.mark.parametrize("algorithm", ["cml", "hlr", "serml", "als", "ease"])
def test_search_space_sets_only_known_keys(algorithm: str) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        params = search_space(study.ask(), algorithm)
        overrides = [f"{k}={json.dumps(v)}" for k, v in params.items()]
        cfg = load_config(None, overrides, algorithm=algorithm)  # validates every value
        if algorithm in ("cml", "hlr"):
            assert {"trainer.negatives", "trainer.n_negatives"} <= set(params)
            assert set(TrainerConfig.model_fields) >= {"negatives", "n_negatives", "lr_memory"}
        assert ("model.n_memory" in params) == (algorithm in ("hlr", "serml"))
        assert cfg.algorithm == algorithm


def test_keys_pinned_with_set_are_not_searched(sample_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "hlr"
    assert main(["tune", "--model", "hlr", "--data", str(sample_csv), "--trials", "2",
                 "--out", str(out), *TINY, "--set", "trainer.negatives=hardest",
                 "--set", "trainer.n_negatives=4", "--set", "model.dim=16"]) == 0
    study = optuna.load_study(study_name="hlr", storage=f"sqlite:///{out / 'study.db'}")
    for trial in study.trials:
        assert not {"negatives", "n_negatives", "dim"} & set(trial.params)
        assert "lr" in trial.params and "n_memory" in trial.params  # the rest is searched
    cfg = load_config(out / "best.toml")
    assert (cfg.trainer.negatives, cfg.trainer.n_negatives, cfg.model.dim) == ("hardest", 4, 16)


def test_pinned_negatives_leave_only_the_count_open() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        params = search_space(study.ask(), "cml", {"trainer.negatives": "hardest"})
        assert "trainer.negatives" not in params and params["trainer.n_negatives"] >= 2


def test_pop_has_nothing_to_tune(sample_csv: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert _tune(sample_csv, tmp_path / "pop", "pop", 2) == 2
    err = capsys.readouterr().err
    assert "no hyper-parameters to tune" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "pop").exists()


def test_the_test_split_is_never_scored(planted_split, tmp_path: Path) -> None:
    """Selection reads validation only: a split whose test part is empty still tunes."""
    import dataclasses

    empty = planted_split.test.select(planted_split.test.user_rows < 0)
    split = dataclasses.replace(planted_split, test=empty)
    base = load_config(None, ["trainer.progress=false"], algorithm="als",
                       baseline={"iterations": 3})
    study = tune(base, tmp_path, 2, split=split, progress=False)
    assert len(study.trials) == 2 and all(t.value > 0 for t in study.trials)
