"""The `relrec` entry point: serving subcommands here, offline ones from `training.cli`.

Offline subcommands import torch; they are loaded only when asked for, so the serving image,
which carries neither torch nor `training/`, runs `relrec serve` with this module alone.
"""

from __future__ import annotations

import argparse
import logging
import sys

OFFLINE = ("train", "tune", "export", "sample", "demo", "report")
SERVING = ("serve", "export-interactions", "publish-milvus")


def _serving_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relrec",
        description="relrec: relational metric learning recommender. Offline: "
                    + ", ".join(OFFLINE) + ". Online: " + ", ".join(SERVING) + ".")
    parser.add_argument("--version", action="version", version=f"relrec {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve the current artifact over HTTP (uvicorn)")
    p.add_argument("--host", default=None, help="default: RELREC_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: RELREC_PORT or 8000")
    p.add_argument("--workers", type=int, default=None, help="uvicorn worker processes")
    p.add_argument("--artifact-dir", default=None, help="default: RELREC_ARTIFACT_DIR")
    p.add_argument("--history-url", default=None, help="redis://… or sqlite:///path")
    p = sub.add_parser("export-interactions",
                       help="write the durable interaction log as a CSV for the next training")
    p.add_argument("--out", required=True, help="CSV file to write (positives)")
    p.add_argument("--negatives", default=None,
                   help="CSV file for negative feedback (not written without it)")
    p.add_argument("--history-url", default=None, help="default: RELREC_HISTORY_URL")
    p = sub.add_parser("publish-milvus",
                       help="write a version's item vectors into its Milvus collection "
                       "(before serving it with RELREC_RETRIEVER=milvus)")
    p.add_argument("version", help="a version directory, or an artifacts root (its current)")
    p.add_argument("--milvus-uri", default=None, help="default: RELREC_MILVUS_URI")
    p.add_argument("--index-type", default=None,
                   help="Milvus index of the collection: FLAT, HNSW, IVF_PQ, AUTOINDEX ... "
                   "(default: AUTOINDEX on a server, FLAT in a Milvus Lite file)")
    for name in OFFLINE:
        sub.add_parser(name, help=f"offline: see `relrec {name} --help`", add_help=False)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("relrec")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _settings(args: argparse.Namespace):
    from service.settings import Settings

    overrides = {k: v for k, v in {
        "host": getattr(args, "host", None), "port": getattr(args, "port", None),
        "workers": getattr(args, "workers", None),
        "artifact_dir": getattr(args, "artifact_dir", None),
        "history_url": getattr(args, "history_url", None),
        "milvus_uri": getattr(args, "milvus_uri", None)}.items() if v is not None}
    return Settings(**overrides)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s", stream=sys.stderr)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its AVX probing is noise
    if argv and argv[0] in OFFLINE:
        try:
            from training.cli import main as offline_main
        except ModuleNotFoundError as exc:  # the serving image carries neither torch nor training/
            sys.stderr.write(f"relrec {argv[0]}: needs the training install ({exc}); use the "
                             "training image (docker build --target train) or pip install "
                             "relrec with torch\n")
            return 2
        return offline_main(argv)
    args = _serving_parser().parse_args(argv)
    from pydantic import ValidationError

    try:
        settings = _settings(args)
    except ValidationError as exc:  # a bad flag or RELREC_ variable: its message, one line
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        sys.stderr.write(f"relrec {args.command}: error: {' '.join(problems.split())}\n")
        return 2
    if args.command == "serve":
        from service.server import serve

        serve(settings)
        return 0
    if args.command == "publish-milvus":
        return _publish_milvus(args, settings)
    from service.export_interactions import export_interactions

    summary = export_interactions(settings.history_url, args.out, negatives_out=args.negatives)
    sys.stdout.write(f"wrote {summary.rows} interactions to {summary.path}\n")
    if args.negatives:
        sys.stdout.write(f"wrote {summary.negatives} negatives to {args.negatives}\n")
    return 0


def _publish_milvus(args: argparse.Namespace, settings) -> int:
    from pathlib import Path

    from models.artifact import ArtifactError
    from service.errors import ArtifactRejectedError
    from service.retriever_milvus import publish

    if not settings.milvus_uri:
        sys.stderr.write("relrec publish-milvus: error: no Milvus to publish to: pass "
                         "--milvus-uri or set RELREC_MILVUS_URI\n")
        return 2
    try:
        name = publish(Path(args.version), settings.milvus_uri,
                       settings.milvus_token.get_secret_value(),
                       prefix=settings.milvus_collection_prefix, index_type=args.index_type)
    except (ArtifactError, ArtifactRejectedError) as exc:
        sys.stderr.write(f"relrec publish-milvus: error: {' '.join(str(exc).split())}\n")
        return 2
    sys.stdout.write(f"published {args.version} into Milvus collection {name}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
