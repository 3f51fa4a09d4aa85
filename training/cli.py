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

from training.config import ALGORITHMS, load_config

log = logging.getLogger("relrec")

# CLI flag -> (section, key): the hyper-parameters the issues name as overrides
_FLAG_MAP = {
    "epochs": ("trainer", "epochs"), "lr": ("trainer", "lr"),
    "batch_size": ("trainer", "batch_size"), "patience": ("trainer", "patience"),
    "select_by": ("trainer", "select_by"), "device": ("trainer", "device"),
    "eval_users": ("trainer", "eval_users"), "negatives": ("trainer", "negatives"),
    "n_negatives": ("trainer", "n_negatives"), "lr_memory": ("trainer", "lr_memory"),
    "schedule": ("trainer", "schedule"), "threads": ("trainer", "threads"),
    "memory_decay": ("trainer", "memory_decay"), "history_dropout": ("model", "history_dropout"),
    "margin": ("model", "margin"), "dim": ("model", "dim"), "memories": ("model", "n_memory"),
    "max_history": ("model", "l_max"), "history_sampling": ("model", "history_sampling"),
    "format": ("data", "format"), "min_rating": ("data", "min_rating"),
    "k_core": ("data", "k_core"), "split": ("data", "split"),
    "min_item_interactions": ("data", "min_item_interactions"),
    "gamma": ("model", "gamma"), "reviews": ("text", "reviews"),
    "item_text": ("text", "item_text"), "text_encoder": ("text", "encoder"),
    "text_cache": ("text", "cache_dir"),
}


def add_train_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train and evaluate a model on an interaction log")
    p.add_argument("--data", required=True, help="interaction log (csv/tsv/parquet/MovieLens/…)")
    p.add_argument("--model", choices=ALGORITHMS,
                   help="algorithm (default: the --config file's, else hlr)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--topk-out", metavar="FILE",
                   help="write the test users' top-k lists here (CSV user,item,rank; raw ids)")
    p.add_argument("--format", help="override format detection (see docs)")
    p.add_argument("--columns", help="names for a headerless file, e.g. user,item,rating")
    p.add_argument("--min-rating", type=float, help="positive threshold (default 4)")
    p.add_argument("--no-threshold", action="store_true", help="keep every interaction")
    p.add_argument("--final", action="store_true",
                   help="production run: select epochs on validation, then refit on every "
                   "interaction (whole catalogue, no k-core) and save that model for export")
    p.add_argument("--min-item-interactions", type=int,
                   help="with --final: keep items with at least this many positives (default 1)")
    p.add_argument("--k-core", type=int, help="iterative k-core (default 10)")
    p.add_argument("--split", choices=["per-user", "global", "leave-one-out"])
    p.add_argument("--seed", type=int, default=0, help="seeds the split and the training")
    for flag, typ in (("epochs", int), ("lr", float), ("batch-size", int), ("margin", float),
                      ("dim", int), ("memories", int), ("max-history", int),
                      ("patience", int), ("eval-users", int)):
        p.add_argument(f"--{flag}", type=typ)
    p.add_argument("--history-sampling", choices=["uniform", "inverse_popularity"])
    p.add_argument("--gamma", type=float,
                   help="serml: weight of the review regression γ‖r − s‖² (default 0.1)")
    p.add_argument("--reviews", help="serml: review JSON lines (default: --data)")
    p.add_argument("--item-text", help="item text (MovieLens/Last.fm dir or file, or a CSV with "
                   "item,text): LRD for hlr/hlr++, and items with no interactions exported")
    p.add_argument("--text-encoder", choices=["minilm", "hashing"])
    p.add_argument("--text-cache", help="embedding cache directory (default .relrec/text-cache)")
    p.add_argument("--select-by", choices=["ndcg", "loss"])
    p.add_argument("--negatives", choices=["uniform", "hardest", "warp", "mean"],
                   help="how sampled negatives make the loss (default uniform: the reference)")
    p.add_argument("--n-negatives", type=int, help="negatives sampled per positive (default 1)")
    p.add_argument("--lr-memory", type=float, help="learning rate of K and M (default: --lr)")
    p.add_argument("--memory-decay", type=float, help="L2 weight decay of K and M (default 0)")
    p.add_argument("--history-dropout", type=float,
                   help="hide each training history slot with this probability (default 0)")
    p.add_argument("--schedule", choices=["constant", "cosine", "plateau"],
                   help="learning-rate schedule (default constant)")
    p.add_argument("--threads", type=int, help="intra-op threads (default 0: every core)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--config", help="TOML file with [data] [model] [trainer] [eval] sections")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.set_defaults(func=cmd_train)
    return p


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
        sections["data"]["columns"] = [c.strip() for c in args.columns.split(",")]
    overrides = list(args.set)
    if args.no_threshold:
        overrides.append("data.min_rating=null")
    if args.no_progress:
        overrides.append("trainer.progress=false")
    if getattr(args, "final", False):
        overrides.append("final=true")
    return load_config(args.config, overrides, algorithm=args.model, **sections)


def format_metrics(doc: dict[str, Any]) -> str:
    """Two markdown tables: full ranking, then sampled (never mixed)."""
    k = doc["k"]
    m = doc["metrics"]
    names = ["precision", "recall", "ndcg", "map", "mrr"]
    lines = [f"full ranking @{k} ({doc['model']}, split {doc['split']})", "",
             "| " + " | ".join(f"{n}@{k}" for n in names) + " | median pop |",
             "|" + "---|" * (len(names) + 1),
             "| " + " | ".join(_cell(m[n], doc["spread"][n]["ci95"]) for n in names)
             + f" | {m['median_popularity']:.0f} |"]
    if "sampled" in doc:
        s = doc["sampled"]
        lines += ["", f"sampled protocol ({s['n_negatives']} negatives)", "",
                  f"| HR@{k} | NDCG@{k} |", "|---|---|", f"| {s['hr']:.4f} | {s['ndcg']:.4f} |"]
    return "\n".join(lines)


def _cell(mean: float, ci95: float | None) -> str:
    return f"{mean:.4f}" if ci95 is None else f"{mean:.4f} ± {ci95:.4f}"


def cmd_train(args: argparse.Namespace) -> int:
    from training.pipeline import run

    cfg = config_from_args(args)
    result = run(cfg, args.out, topk_out=args.topk_out)
    sys.stdout.write(format_metrics(result.metrics) + "\n")
    final = result.metrics.get("final")
    if final:  # the metrics above are the selection run's
        sys.stdout.write(f"\nrefit for export on every interaction: {final['interactions']} "
                         f"({final['users']} users, {final['items']} items), "
                         f"{final['epochs'] or '-'} epochs\n")
    sys.stdout.write(f"\nrun written to {result.run_dir} (metrics.json)\n")
    return 0


def add_tune_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("tune", help="search hyper-parameters on validation (Optuna), write the "
                       "best config as TOML for `relrec train --config`")
    p.add_argument("--data", required=True, help="interaction log, as for `relrec train`")
    p.add_argument("--model", required=True, choices=ALGORITHMS)
    p.add_argument("--trials", required=True, type=int,
                   help="finished trials the study should hold (a rerun resumes up to this)")
    p.add_argument("--out", required=True, help="study directory: study.db, trials.jsonl, "
                   "best.toml")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    for flag, typ in (("epochs", int), ("patience", int), ("eval-users", int),
                      ("k-core", int), ("min-rating", float)):
        p.add_argument(f"--{flag}", type=typ)
    p.add_argument("--format")
    p.add_argument("--columns", help="names for a headerless file, e.g. user,item,rating")
    p.add_argument("--no-threshold", action="store_true", help="keep every interaction")
    p.add_argument("--split", choices=["per-user", "global", "leave-one-out"])
    p.add_argument("--seed", type=int, default=0, help="seeds the split, training and sampler")
    p.add_argument("--device", help="auto (default), cpu, cuda")
    p.add_argument("--threads", type=int, help="intra-op threads (default 0: every core)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--config", help="base TOML: every key the search does not set")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="pin a key: the search leaves it at this value")
    p.set_defaults(func=cmd_tune)
    return p


def cmd_tune(args: argparse.Namespace) -> int:
    from training.config import ConfigError

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

    version_dir = export_run(args.run_dir, args.out)
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


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    add_train_parser(sub)
    add_tune_parser(sub)
    p = sub.add_parser("export", help="export a training run as a served artifact version")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="artifacts directory (versions + current)")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("sample", help="write a synthetic interaction log with planted structure")
    p.add_argument("--out", required=True)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)
    p = sub.add_parser("demo", help="sample -> train HLR -> export -> serve, on embedded defaults")
    p.add_argument("--workdir", default=".relrec/demo")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--no-serve", action="store_true", help="stop after the export")
    p.set_defaults(func=cmd_demo)



def main(argv: list[str] | None = None, prog: str = "relrec") -> int:
    """Parse and run one offline subcommand; errors the user can fix exit 2 with one line."""
    from models.artifact import ArtifactError
    from training.checkpoint import CheckpointError
    from training.config import ConfigError
    from training.exporter import ExportError
    from training.interactions import DataError

    parser = argparse.ArgumentParser(prog=prog, description="relrec offline commands")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, DataError, CheckpointError, ArtifactError, ExportError,
            FileNotFoundError) as exc:
        log.error("%s", exc)
        sys.stderr.write(f"relrec {args.command}: error: {exc}\n")
        return 2
