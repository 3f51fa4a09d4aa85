"""Issue 19: every user error is one line on stderr, printed once, exit 2; help and --version
answer without the heavy imports; `--columns role=column` end to end."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

import training.cli
from service.cli import main


def one_error_line(err: str, command: str) -> str:
    """The single `relrec COMMAND: error:` line of stderr (no traceback, not repeated)."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"relrec {command}: error: ")
    return lines[0]


def test_parquet_format_on_a_csv_file(sample_csv: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(sample_csv), "--format", "parquet", "--model", "pop",
                 "--out", str(tmp_path / "o")]) == 2
    line = one_error_line(capsys.readouterr().err, "train")
    assert "as Parquet" in line and "--format" in line


def test_config_with_a_toml_syntax_error(sample_csv: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[trainer\nepochs = 3\n")
    assert main(["train", "--data", str(sample_csv), "--config", str(bad),
                 "--out", str(tmp_path / "o")]) == 2
    line = one_error_line(capsys.readouterr().err, "train")
    assert "bad.toml is not valid TOML" in line and "line 1" in line


def test_a_cuda_device_torch_does_not_have(sample_csv: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    # cuda:99 is missing on the CPU build and on any real machine alike
    assert main(["train", "--data", str(sample_csv), "--model", "cml", "--k-core", "5",
                 "--epochs", "1", "--no-progress", "--device", "cuda:99",
                 "--out", str(tmp_path / "o")]) == 2
    line = one_error_line(capsys.readouterr().err, "train")
    assert "--device cuda:99" in line and "CUDA device(s)" in line and "--device cpu" in line


def test_a_device_that_is_not_one(sample_csv: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(sample_csv), "--model", "cml", "--k-core", "5",
                 "--epochs", "1", "--no-progress", "--device", "gpu",
                 "--out", str(tmp_path / "o")]) == 2
    assert "'gpu' is not a device" in one_error_line(capsys.readouterr().err, "train")


@pytest.mark.parametrize("value", ["nope", "0", "-3"])
def test_a_pool_size_that_is_not_one(value: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "a"), "--pools", value])
    assert exc.value.code == 2
    line = one_error_line(capsys.readouterr().err, "export")
    assert "--pools" in line and "auto, off or a pool size" in line


def test_serve_with_an_unknown_history_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--history-url", "postgres://x"]) == 2
    line = one_error_line(capsys.readouterr().err, "serve")
    assert "history_url" in line and "'postgres'" in line and "sqlite:///" in line


def test_a_handled_error_is_printed_once(sample_csv: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(sample_csv), "--model", "pop", "--k-core", "500",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("k-core with k=500") == 1
    one_error_line(err, "train")


def test_an_internal_error_keeps_its_traceback(sample_csv: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("training.pipeline.run", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["train", "--data", str(sample_csv), "--model", "pop", "--out", str(tmp_path)])


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("relrec 0.")


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relrec")
    sub = parser.add_subparsers()
    return training.cli.add_train_parser(sub)


def test_train_help_shows_each_fields_description_and_default(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The help is the config field's description and default, so the two cannot drift."""
    from models.config import ModelConfig
    from training.config import DataConfig, TrainerConfig

    helps = {a.dest: a.help for a in train_parser()._actions if a.help != argparse.SUPPRESS}
    for attr, cls, key in (("epochs", TrainerConfig, "epochs"), ("lr", TrainerConfig, "lr"),
                           ("dim", ModelConfig, "dim"), ("margin", ModelConfig, "margin"),
                           ("n_memory", ModelConfig, "n_memory"),
                           ("l_max", ModelConfig, "l_max"),
                           ("patience", TrainerConfig, "patience"),
                           ("eval_users", TrainerConfig, "eval_users"),
                           ("format", DataConfig, "format"), ("k_core", DataConfig, "k_core")):
        field = cls.model_fields[key]
        assert field.description and helps[attr].startswith(field.description), attr
        default = "unset" if field.default is None else field.default
        assert helps[attr].endswith(f"(default: {default})"), attr
    assert "parquet" in helps["format"] and helps["epochs"].endswith("(default: 30)")
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0 and "Adam learning rate (default: 0.001)" in out


def test_flags_are_named_like_their_config_fields_and_old_spellings_still_work(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 17: `--n-memory` sets model.n_memory, `--l-max` model.l_max; the earlier
    `--memories`, `--max-history` and `--text-cache` parse to the same config, unlisted."""
    new = ["--data", "log.csv", "--out", "run", "--n-memory", "6", "--l-max", "9",
           "--text-cache-dir", "c/"]
    old = ["--data", "log.csv", "--out", "run", "--memories", "6", "--max-history", "9",
           "--text-cache", "c/"]
    configs = [training.cli.config_from_args(train_parser().parse_args(argv))
               for argv in (new, old)]
    assert configs[0] == configs[1]
    assert (configs[0].model.n_memory, configs[0].model.l_max) == (6, 9)
    assert configs[0].text.cache_dir == "c/"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--n-memory" in out and "--l-max" in out and "--text-cache-dir" in out
    assert "--memories" not in out and "--max-history" not in out
    assert "--text-cache " not in out and "--text-cache\n" not in out


def test_every_option_of_every_offline_command_has_help() -> None:
    parser = argparse.ArgumentParser(prog="relrec")
    sub = parser.add_subparsers()
    training.cli.add_subcommands(sub)
    for name, command in sub.choices.items():
        bare = [a.dest for a in command._actions if not a.help]
        assert not bare, (name, bare)


def test_the_cli_module_imports_nothing_heavy() -> None:
    heavy = ("torch", "faiss", "onnxruntime", "pandas", "pyarrow")
    code = ("import sys, training.cli, service.cli; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[2]).stdout
    assert out.strip() == "[]"


def test_columns_mapping_for_a_headed_file(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    rows = ["member,show,stars,ts"] + [f"m{u},s{(u * 7 + j) % 40},5,{j}" for u in range(60)
                                       for j in range(12)]
    data = tmp_path / "shows.csv"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "pop", "--k-core", "2",
                 "--columns", "user=member,item=show,rating=stars,timestamp=ts",
                 "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["model"] == "pop"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"]["columns"] == {"user": "member", "item": "show", "rating": "stars",
                                      "timestamp": "ts"}


def test_columns_that_mix_both_forms_are_refused(sample_csv: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(sample_csv), "--columns", "user=member,item",
                 "--out", str(tmp_path / "o")]) == 2
    assert "mixes" in one_error_line(capsys.readouterr().err, "train")
