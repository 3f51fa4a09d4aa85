"""Offline subcommands of `relrec`: sample, train, export, demo.

Parses arguments into a `TrainConfig` and calls the pipeline, the exporter or the demo. Imported
lazily by `service/cli.py` so that the serving image needs neither torch nor this module.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from models.config import ModelConfig
from training.config import (
    ALGORITHMS,
    FORMATS,
    ConfigError,
    DataConfig,
    ExportConfig,
    TextConfig,
    TrainerConfig,
    load_config,
)

log = logging.getLogger("relrec")

# CLI flag -> (section, key): the hyper-parameters the issues name as overrides. A flag is
# named like its field (`--n-memory` sets model.n_memory), prefixed by the section where the
# field's name alone would be ambiguous (`--text-encoder`, `--text-cache-dir`).
_FLAG_MAP = {
    "epochs": ("trainer", "epochs"), "lr": ("trainer", "lr"),
    "batch_size": ("trainer", "batch_size"), "patience": ("trainer", "patience"),
    "select_by": ("trainer", "select_by"), "device": ("trainer", "device"),
    "eval_users": ("trainer", "eval_users"), "negatives": ("trainer", "negatives"),
    "n_negatives": ("trainer", "n_negatives"), "lr_memory": ("trainer", "lr_memory"),
    "init_from": ("trainer", "init_from"),
    "temperature": ("trainer", "temperature"),
    "schedule": ("trainer", "schedule"), "threads": ("trainer", "threads"),
    "memory_decay": ("trainer", "memory_decay"), "history_dropout": ("model", "history_dropout"),
    "margin": ("model", "margin"), "dim": ("model", "dim"), "n_memory": ("model", "n_memory"),
    "l_max": ("model", "l_max"), "history_sampling": ("model", "history_sampling"),
    "format": ("data", "format"), "min_rating": ("data", "min_rating"),
    "k_core": ("data", "k_core"), "split": ("data", "split"),
    "min_item_interactions": ("data", "min_item_interactions"),
    "gamma": ("model", "gamma"), "reviews": ("text", "reviews"),
    "item_text": ("text", "item_text"), "text_encoder": ("text", "encoder"),
    "text_cache_dir": ("text", "cache_dir"), "review_encoder": ("text", "review_encoder"),
    "index": ("export", "index"), "index_memory_mb": ("export", "index_memory_mb"),
    "pools": ("export", "pools"),
}
# Earlier spellings, still accepted (README commands and users' scripts) but hidden from --help.
_OLD_FLAGS = {"n-memory": "memories", "l-max": "max-history", "text-cache-dir": "text-cache"}
# The config class of each section: help text and defaults come from its fields, so that
# `--help` cannot drift from what a run does.
_SECTIONS: dict[str, type[BaseModel]] = {"data": DataConfig, "trainer": TrainerConfig,
                                         "model": ModelConfig, "text": TextConfig,
                                         "export": ExportConfig}
_COLUMNS_HELP = ("role=column pairs for a file with a header (user=member,item=show,"
                 "rating=stars,timestamp=ts; roles left out are found by name), or the names "
                 "of a headerless file's columns in order (user,item,rating)")


def _field_help(attr: str) -> str:
    """`description (default: …)` of the config field behind a flag, argparse-escaped."""
    section, key = _FLAG_MAP[attr]
    field = _SECTIONS[section].model_fields[key]
    default = "unset" if field.default is None else field.default
    return f"{field.description} (default: {default})".replace("%", "%%")


def _add_config_flag(p: argparse.ArgumentParser, flag: str, typ: type | None = None,
                     **kwargs: Any) -> None:
    """A flag whose value lands in a config field (`_FLAG_MAP`); help from that field."""
    attr = flag.replace("-", "_")
    if typ is not None:
        kwargs["type"] = typ
    p.add_argument(f"--{flag}", help=_field_help(attr), **kwargs)
    if flag in _OLD_FLAGS:
        p.add_argument(f"--{_OLD_FLAGS[flag]}", dest=attr, help=argparse.SUPPRESS, **kwargs)


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    """The options `train` and `tune` share: what the log is and how it becomes a split."""
    _add_config_flag(p, "format", metavar="FORMAT")
    p.add_argument("--columns", help=_COLUMNS_HELP)
    _add_config_flag(p, "min-rating", float)
    p.add_argument("--no-threshold", action="store_true",
                   help="keep every interaction as a positive (data.min_rating = none)")
    _add_config_flag(p, "k-core", int)
    _add_config_flag(p, "split", choices=["per-user", "global", "leave-one-out"])
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the split, the training and the sampler (default: 0)")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """Where a run executes, and the config sources; shared by `train` and `tune`."""
    _add_config_flag(p, "device")
    _add_config_flag(p, "threads", int)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_train_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train and evaluate a model on an interaction log",
                       description="Train and evaluate a model; flags override --config, "
                       "which overrides the defaults shown.")
    p.add_argument("--data", required=True, help="interaction log: " + ", ".join(FORMATS)
                   + " (see --format)")
    p.add_argument("--model", choices=ALGORITHMS,
                   help="algorithm (default: the --config file's, else hlr)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--topk-out", metavar="FILE",
                   help="write the test users' top-k lists here (CSV user,item,rank; raw ids)")
    p.add_argument("--export-to", metavar="ARTIFACTS_DIR",
                   help="also export the trained run there as the new current version (what "
                   "`relrec export RUN --out ARTIFACTS_DIR` does, without reading RUN back)")
    _add_data_flags(p)
    p.add_argument("--final", action="store_true",
                   help="production run: select epochs on validation, then refit on every "
                   "interaction (whole catalogue, no k-core) and save that model for export")
    _add_config_flag(p, "min-item-interactions", int)
    _add_index_flags(p)
    for flag, typ in (("epochs", int), ("lr", float), ("batch-size", int), ("margin", float),
                      ("dim", int), ("n-memory", int), ("l-max", int),
                      ("patience", int), ("eval-users", int)):
        _add_config_flag(p, flag, typ)
    _add_config_flag(p, "history-sampling", choices=["uniform", "inverse_popularity"])
    _add_config_flag(p, "gamma", float)
    _add_config_flag(p, "reviews")
    _add_config_flag(p, "review-encoder", choices=["hierarchical", "pretrained"])
    _add_config_flag(p, "item-text")
    _add_config_flag(p, "text-encoder", choices=["minilm", "hashing"])
    _add_config_flag(p, "text-cache-dir")
    _add_config_flag(p, "select-by", choices=["ndcg", "loss"])
    _add_config_flag(p, "negatives", choices=["uniform", "hardest", "warp", "mean", "softmax"])
    _add_config_flag(p, "n-negatives", int)
    _add_config_flag(p, "temperature", float)
    _add_config_flag(p, "lr-memory", float)
    _add_config_flag(p, "memory-decay", float)
    _add_config_flag(p, "history-dropout", float)
    _add_config_flag(p, "schedule", choices=["constant", "cosine", "plateau"])
    _add_config_flag(p, "init-from", metavar="RUN_DIR")
    _add_run_flags(p)
    p.add_argument("--config", help="TOML file with [data] [model] [trainer] [eval] sections "
                   "(e.g. a `relrec tune` best.toml)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="set any config key, e.g. trainer.compile=true (repeatable)")
    p.set_defaults(func=cmd_train)
    return p


def _add_index_flags(p: argparse.ArgumentParser) -> None:
    """The export's index choice (issue 21); `train --export-to` and `export` share them."""
    _add_config_flag(p, "index", choices=["auto", "flat", "hnsw", "ivfpq", "ivfpqfs", "pqfs"])
    _add_config_flag(p, "index-memory-mb", float, metavar="MB")
    _add_config_flag(p, "pools", _pools_flag, metavar="auto|off|K")


def _pools_flag(raw: str) -> str | int:
    """`--pools`: auto, off, or a pool size K."""
    if raw in ("auto", "off"):
        return raw
    try:
        k = int(raw)
    except ValueError:
        k = 0
    if k < 1:
        raise argparse.ArgumentTypeError(f"expected auto, off or a pool size >= 1, not {raw!r}")
    return k


def parse_columns(raw: str) -> list[str] | dict[str, str]:
    """`user,item,rating` (positional names) or `user=member,item=show` (a role mapping)."""
    parts = [c.strip() for c in raw.split(",") if c.strip()]
    pairs = [p for p in parts if "=" in p]
    if not pairs:
        return parts
    if len(pairs) != len(parts):
        raise ConfigError(f"--columns {raw!r} mixes role=column pairs and bare names; use "
                          "either user=member,item=show or user,item,rating")
    return {role.strip(): column.strip() for role, column in
            (p.split("=", 1) for p in pairs)}


def config_from_args(args: argparse.Namespace):
    sections: dict[str, dict[str, Any]] = {"data": {"path": args.data}, "trainer": {},
                                           "model": {}, "text": {}}
    for attr, (section, key) in _FLAG_MAP.items():
        value = getattr(args, attr, None)
        if value is not None:
            sections.setdefault(section, {})[key] = value
    sections["data"]["seed"] = args.seed
    sections["trainer"]["seed"] = args.seed
    if args.columns:
        sections["data"]["columns"] = parse_columns(args.columns)
    overrides = list(args.set)
    if args.no_threshold:
        overrides.append("data.min_rating=null")
    if args.no_progress:
        overrides.append("trainer.progress=false")
    if getattr(args, "final", False):
        overrides.append("final=true")
    return load_config(args.config, overrides, algorithm=args.model, **sections)


def cmd_train(args: argparse.Namespace) -> int:
    from training.evaluator import format_metrics
    from training.pipeline import run

    cfg = config_from_args(args)
    result = run(cfg, args.out, topk_out=args.topk_out, export_to=args.export_to)
    sys.stdout.write(format_metrics(result.metrics) + "\n")
    final = result.metrics.get("final")
    if final:  # the metrics above are the selection run's
        sys.stdout.write(f"\nrefit for export on every interaction: {final['interactions']} "
                         f"({final['users']} users, {final['items']} items), "
                         f"{final['epochs'] or '-'} epochs\n")
    sys.stdout.write(f"\nrun written to {result.run_dir} (metrics.json)\n")
    if result.version_dir is not None:
        sys.stdout.write(f"exported {result.version_dir}; {Path(args.export_to) / 'current'} -> "
                         f"{result.version_dir.name}\n")
    return 0


def add_tune_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("tune", help="search hyper-parameters on validation (Optuna), write the "
                       "best config as TOML for `relrec train --config`")
    p.add_argument("--data", required=True, help="interaction log, as for `relrec train`")
    p.add_argument("--model", required=True, choices=ALGORITHMS, help="algorithm to tune")
    p.add_argument("--trials", required=True, type=int,
                   help="finished trials the study should hold (a rerun resumes up to this)")
    p.add_argument("--out", required=True, help="study directory: study.db, trials.jsonl, "
                   "best.toml")
    p.add_argument("--timeout", type=float,
                   help="stop starting trials after this many seconds (default: no limit)")
    for flag, typ in (("epochs", int), ("patience", int), ("eval-users", int)):
        _add_config_flag(p, flag, typ)
    _add_data_flags(p)
    _add_run_flags(p)
    p.add_argument("--config", help="base TOML: every key the search does not set")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="pin a key: the search leaves it at this value")
    p.set_defaults(func=cmd_tune)
    return p


def cmd_tune(args: argparse.Namespace) -> int:
    try:
        from training.tune import fixed_keys, summary, tune
    except ModuleNotFoundError as exc:
        raise ConfigError(f"relrec tune needs optuna ({exc}): pip install optuna") from None
    if args.trials < 1:
        raise ConfigError("--trials must be >= 1")
    cfg = config_from_args(args)
    cfg.trainer.progress = False  # one bar for the study; per-epoch bars would flood it
    command = "relrec " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["tune"] else ""
    study = tune(cfg, args.out, args.trials, timeout_s=args.timeout,
                 progress=not args.no_progress,
                 header=f"written by: {command}" if command else "written by relrec tune",
                 fixed=fixed_keys(cfg, args.set))
    doc = summary(study)
    sys.stdout.write(f"{args.model}: {doc['complete']} complete, {doc['pruned']} pruned, "
                     f"{doc['fail']} failed trials\n")
    if doc["complete"]:
        best = Path(args.out) / "best.toml"
        sys.stdout.write(f"best trial {doc['best_trial']}: validation NDCG@{cfg.eval.k} "
                         f"{doc['best_value']:.4f} {json.dumps(doc['best_params'])}\n"
                         f"config written to {best}; train it with: relrec train --data "
                         f"{args.data} --config {best} --out RUN\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from training.exporter import export_run

    flags = {k: getattr(args, k) for k in ("index", "index_memory_mb", "pools")
             if getattr(args, k, None) is not None}
    try:
        ExportConfig.model_validate(flags)
    except ValueError as exc:
        raise ConfigError(f"invalid export option: {exc}") from None
    version_dir = export_run(args.run_dir, args.out, **flags)
    sys.stdout.write(f"exported {version_dir}; {Path(args.out) / 'current'} -> "
                     f"{version_dir.name}\n")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from training.synthetic import write_sample

    path = write_sample(args.out, n_users=args.users, n_items=args.items, seed=args.seed)
    sys.stdout.write(f"wrote {path}\n")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from training.demo import run_demo

    return run_demo(Path(args.workdir), host=args.host, port=args.port, serve=not args.no_serve,
                    epochs=args.epochs)


def cmd_report(args: argparse.Namespace) -> int:
    try:
        import matplotlib  # noqa: F401  (the figures; an extra: pip install -e ".[report]")

        from training.report import write_report
    except ModuleNotFoundError as exc:
        raise ConfigError(f"relrec report needs matplotlib ({exc}): pip install matplotlib") \
            from None
    out = write_report(args.runs, args.out, title=args.title)
    sys.stdout.write(f"report written to {out}\n")
    return 0


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    add_train_parser(sub)
    add_tune_parser(sub)
    p = sub.add_parser("export", help="export a training run as a served artifact version")
    p.add_argument("run_dir", help="a `relrec train` run directory")
    p.add_argument("--out", required=True, help="artifacts directory (versions + current)")
    _add_index_flags(p)
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("sample", help="write a synthetic interaction log with planted structure")
    p.add_argument("--out", required=True, help="CSV file to write (user,item,rating,timestamp)")
    p.add_argument("--users", type=int, default=2000, help="users (default: 2000)")
    p.add_argument("--items", type=int, default=1000, help="items (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(func=cmd_sample)
    p = sub.add_parser("demo", help="sample -> train HLR -> export -> serve, on embedded defaults")
    p.add_argument("--workdir", default=".relrec/demo",
                   help="sample, run and artifacts go here (default: .relrec/demo)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--epochs", type=int, default=10, help="HLR training epochs (default: 10)")
    p.add_argument("--no-serve", action="store_true", help="stop after the export")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("report", help="one self-contained HTML page of figures from run "
                       "directories: learning curves, metrics with CIs, popularity, coverage")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="a run directory (relrec train --out), or a folder of them")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.add_argument("--title", default="relrec report", help="page title (default: relrec report)")
    p.set_defaults(func=cmd_report)



def main(argv: list[str] | None = None, prog: str = "relrec") -> int:
    """Parse and run one offline subcommand; errors the user can fix exit 2 with one line.

    Parsing imports nothing heavy (torch, faiss, pandas load with the command that needs
    them), so `--help` and argparse mistakes answer at once.
    """
    parser = argparse.ArgumentParser(prog=prog, description="relrec offline commands")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    from models.artifact import ArtifactError
    from training.exporter import ExportError
    from training.interactions import DataError
    from training.run_dir import RunDirError

    try:
        return int(args.func(args))
    except (ConfigError, DataError, RunDirError, ArtifactError, ExportError,
            FileNotFoundError) as exc:
        # one line, once: the log handler would print it a second time (issue 19)
        one_line = " ".join(str(exc).split())
        sys.stderr.write(f"relrec {args.command}: error: {one_line}\n")
        return 2
