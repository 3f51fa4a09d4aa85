"""The main job of the README: sample -> train a small HLR (--final) -> export -> serve.

Writes everything under one work directory (the sample log, the run, the artifacts, the SQLite
history) so that a newcomer can see the whole offline-to-online path on embedded defaults: no
Docker, no Redis, no download.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from training.config import load_config
from training.evaluator import format_metrics

log = logging.getLogger(__name__)


def run_demo(workdir: Path, host: str = "127.0.0.1", port: int = 8000, serve: bool = True,
             epochs: int = 10) -> int:
    """Run the whole path; returns the process exit code."""
    from training.pipeline import run
    from training.synthetic import write_sample

    workdir.mkdir(parents=True, exist_ok=True)
    sample = write_sample(workdir / "sample.csv", n_users=1500, n_items=800, seed=0)
    cfg = load_config(
        algorithm="hlr",
        data={"path": str(sample), "k_core": 5},
        model={"dim": 32, "n_memory": 10, "l_max": 20},
        # a small log gives few steps per epoch: a larger step than the reference's 1e-3
        trainer={"epochs": epochs, "eval_users": 500, "patience": 3, "batch_size": 500,
                 "lr": 0.01},
        # a production run: epochs selected on validation, then refit on every interaction
        final=True,
    )
    result = run(cfg, workdir / "run", export_to=workdir / "artifacts")
    sys.stdout.write(format_metrics(result.metrics) + "\n\n")
    sys.stdout.write(f"artifact: {result.version_dir}\n")
    if not serve:
        return 0
    user = result.split.train.users.ids[0]
    item = result.split.train.items.ids[0]
    url = f"http://{host}:{port}"
    sys.stdout.write(usage(url, str(user), str(item)))
    sys.stdout.flush()
    from service.server import serve as serve_app
    from service.settings import Settings

    settings = Settings(artifact_dir=str(workdir / "artifacts"),
                        history_url=f"sqlite:///{(workdir / 'history.db').resolve()}",
                        host=host, port=port, workers=1)
    serve_app(settings)
    return 0


def usage(url: str, user: str, item: str) -> str:
    """What to try once the demo serves: curl lines, then the same calls through the typed
    client (`service.client`), whose example tests/training/test_demo.py runs as printed."""
    return (
        f"\nserving on {url}  (docs: {url}/docs)\n"
        f"  curl '{url}/recommend/{user}?k=10&explain=true'\n"
        f"  curl -X POST {url}/interactions -H 'content-type: application/json' "
        f"-d '{{\"user_id\": \"new-user\", \"item_id\": \"{item}\"}}'\n"
        f"  curl '{url}/recommend/new-user?k=5'\n\n"
        f"or from Python:\n\n{client_example(url, user, item)}\n"
    )


def client_example(url: str, user: str, item: str) -> str:
    """The Python equivalent of the curl lines, on `service.client.RelrecClient`."""
    return (
        "from service.client import Interaction, RelrecClient\n"
        "\n"
        f"with RelrecClient({url!r}) as relrec:\n"
        f"    for rec in relrec.recommend({user!r}, k=10, explain=True).items:\n"
        "        print(rec.item_id, round(rec.score, 3), [b.item_id for b in rec.because or []])\n"
        f"    relrec.post_interactions(Interaction('new-user', {item!r}))\n"
        "    print(relrec.recommend('new-user', k=5).source)  # history: fitted to its items\n"
    )
