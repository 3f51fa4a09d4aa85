"""Items with text and no interactions: learned projection, run directory, export, manifest.

Planted data: items of block b have text about topic b; a few items per block are withheld
from the log entirely, so only their text says where they belong. Trained with the hashing
encoder (always available; the MiniLM path is tested in test_text_cache.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.config import ModelConfig
from models.registry import build_model
from training.interactions import DataError, Interactions
from training.run_dir import TextItems, load_run
from training.text.items import extend_with_text_items

TOPICS = ("jazz saxophone", "metal guitar", "folk banjo", "opera soprano")
FILLER = ("great", "classic", "album", "live", "record", "best", "new", "sound")


def block_of(item_id: str) -> int:
    return int(item_id.split("-b")[1])


def community_of(user_id: str) -> int:
    return int(user_id.split("-c")[1])


@pytest.fixture(scope="module")
def planted_cold(tmp_path_factory: pytest.TempPathFactory):
    return planted_cold_data(tmp_path_factory.mktemp("text"))


def planted_cold_data(folder: Path):
    """(split without the withheld items, item-text CSV path, withheld item ids)."""
    from training.filters import binarize, k_core
    from training.splits import per_user
    from training.synthetic import planted_interactions

    raw = planted_interactions(n_users=240, n_items=120, n_communities=4, items_per_user=24,
                               noise=0.05, seed=0)
    withheld = [f"i{v}-b{v // 30}" for b in range(4) for v in (b * 30 + 5, b * 30 + 12)]
    keep = ~np.isin(raw.items.ids[raw.item_rows], withheld)
    log = Interactions.from_ids(raw.users.ids[raw.user_rows[keep]],
                                raw.items.ids[raw.item_rows[keep]], raw.weights[keep],
                                raw.timestamps[keep])
    split = per_user(k_core(binarize(log, 4.0), 5), seed=0)
    rng = np.random.default_rng(0)
    lines = ["item,text"]
    for v in range(120):
        words = [*TOPICS[v // 30].split(), *rng.choice(FILLER, 3)]
        rng.shuffle(words)
        lines.append(f"i{v}-b{v // 30},{' '.join(words)}")
    path = folder / "items.csv"
    path.write_text("\n".join(lines) + "\n")
    return split, path, withheld


def text_config(kind: str, item_text: Path, cache: Path, epochs: int = 8):
    from training.config import load_config

    return load_config(
        algorithm=kind, data={"path": "planted", "k_core": 5},
        model={"dim": 16, "n_memory": 4, "l_max": 8},
        trainer={"epochs": epochs, "batch_size": 256, "lr": 0.02, "progress": False,
                 "patience": epochs},
        text={"item_text": str(item_text), "encoder": "hashing", "cache_dir": str(cache),
              "align_weight": 0.5},
        eval={"sampled": False})


@pytest.mark.parametrize("kind", ["hlr", "lrml"])
def test_text_only_items_are_exported_and_land_in_their_block(
        kind: str, planted_cold, tmp_path: Path) -> None:
    from models.artifact import read_manifest
    from models.artifact_arrays import read_arrays
    from training.exporter import export_run
    from training.pipeline import run

    split, item_text, withheld = planted_cold
    result = run(text_config(kind, item_text, tmp_path / "cache"), tmp_path / "run",
                 split=split)
    assert result.metrics["text_items"]["count"] == len(withheld)
    saved = load_run(tmp_path / "run").text_items
    assert saved is not None and sorted(saved.ids) == sorted(withheld)
    assert np.all(np.linalg.norm(saved.vectors, axis=1) <= 1 + 1e-6)

    vdir = export_run(tmp_path / "run", tmp_path / "artifacts")  # parity-checked
    manifest = read_manifest(vdir)
    n_warm = split.train.n_items
    assert manifest.text_items is not None
    assert (manifest.text_items.first_row, manifest.text_items.count) == (n_warm, len(withheld))
    assert manifest.text_items.encoder == "hashing-256"
    assert manifest.counts.items == n_warm + len(withheld)
    assert manifest.is_text_only(n_warm) and not manifest.is_text_only(n_warm - 1)
    arrays = read_arrays(vdir)
    assert arrays.item_ids.to_list()[n_warm:] == saved.ids
    assert not arrays.popularity[n_warm:].any()

    # Users rank each text-only item of their own block above the other blocks' ones.
    users = arrays.users  # [U, d]
    cold = arrays.items[n_warm:]  # [K, d]
    dist = ((users[:, None, :] - cold[None]) ** 2).sum(-1)  # CML part of the score: [U, K]
    communities = np.array([community_of(u) for u in arrays.user_ids.to_list()])
    blocks = np.array([block_of(i) for i in saved.ids])
    own = dist[communities[:, None] == blocks[None]].mean()
    other = dist[communities[:, None] != blocks[None]].mean()
    assert own < 0.8 * other, (own, other)


def test_extend_with_text_items_keeps_the_trained_rows(planted_split) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="hlr", dim=8, n_memory=4, l_max=4),
                        planted_split.train.n_users, planted_split.train.n_items)
    vecs = np.full((2, 8), 0.1, np.float32)
    bigger, train = extend_with_text_items(model, planted_split.train,
                                           TextItems(["new-a", "new-b"], vecs, "hashing-256"))
    assert bigger.n_items == model.n_items + 2 == train.n_items
    assert train.items.row("new-b") == model.n_items + 1
    assert len(train) == len(planted_split.train)  # no interaction invented
    user = model.user_vectors(torch.tensor([0, 1]))
    rows = torch.tensor([[0, 3], [5, 7]])
    torch.testing.assert_close(bigger.distance(user, rows), model.distance(user, rows))
    torch.testing.assert_close(bigger.item_emb.weight[-2:], torch.from_numpy(vecs))
    known = str(planted_split.train.items.ids[0])
    with pytest.raises(DataError, match="already have a row"):
        extend_with_text_items(model, planted_split.train, TextItems([known], vecs[:1], "x"))


def test_run_without_item_text_has_no_text_items(tiny_run_dir: Path) -> None:
    from models.artifact import read_manifest
    from training.exporter import export_run

    assert load_run(tiny_run_dir).text_items is None
    metrics = json.loads((tiny_run_dir / "metrics.json").read_text())
    assert "text_items" not in metrics
    assert read_manifest(export_run(tiny_run_dir, tiny_run_dir.parent / "a")).text_items is None


def _user_pairs(split, per_user: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """(v, j) item-row pairs of the same user's training items: what HLR relates."""
    heads, tails = [], []
    train = split.train
    for user in range(train.n_users):
        items = train.item_rows[train.user_rows == user][:per_user]
        for v in items:
            heads += [v] * (len(items) - 1)
            tails += [j for j in items if j != v]
    return torch.tensor(heads), torch.tensor(tails)


def _slot_agreement(model, posterior: torch.Tensor, heads, tails) -> tuple[float, float]:
    """(mean KL(π ‖ w), share of pairs whose top slot is π's top relation)."""
    from models.relation_discovery import slot_guidance_loss

    with torch.no_grad():
        head, tail = model.item_emb(heads), model.item_emb(tails)
        logits = (head * tail) @ model.lram.keys  # [P, N]: HLR's LRAM(q_v, q_j) logits
        kl = float(slot_guidance_loss(posterior.log(), logits)) / len(heads)
    return kl, float((logits.argmax(1) == posterior.argmax(1)).float().mean())


def test_lrd_posterior_guides_hlr_item_item_slots(planted_cold, tmp_path: Path) -> None:
    """With item text, HLR's slot weights for an item pair follow LRD's relation posterior;
    trained without it (same seed, same data), they do not."""
    from training.dataset import TrainDataset
    from training.pipeline import build_objective
    from training.trainer import Trainer

    split, item_text, _ = planted_cold
    heads, tails = _user_pairs(split)
    models = {}
    for name, weight in (("lrd", 1.0), ("plain", 0.0)):
        cfg = text_config("hlr", item_text, tmp_path / "cache", epochs=8)
        cfg.text.lrd_weight = weight
        torch.manual_seed(0)
        model = build_model(cfg.model, split.train.n_users, split.train.n_items)
        objective = build_objective(cfg, split, model)
        assert (objective.lrd is not None) == (weight > 0)
        dataset = TrainDataset(split.train, cfg.model.l_max, cfg.model.uses_history)
        Trainer(model, cfg.trainer, objective=objective).fit(dataset, None)
        models[name] = (model, objective)
    posterior = models["lrd"][1].relation_posterior(heads, tails)  # [P, N]
    assert posterior.max(1).values.mean() > 0.4  # LRD decided (a flat posterior is 1/N = 0.25)
    guided = _slot_agreement(models["lrd"][0], posterior, heads, tails)
    unguided = _slot_agreement(models["plain"][0], posterior, heads, tails)
    assert guided[0] < 0.5 * unguided[0], (guided, unguided)  # KL(π ‖ w) per pair
    assert guided[1] > unguided[1] + 0.15, (guided, unguided)  # top slot = top relation


def test_cli_text_flags_reach_the_config() -> None:
    import argparse

    from training.cli import add_train_parser, config_from_args

    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    args = parser.parse_args(["train", "--data", "r.csv", "--out", "o", "--model", "hlr++",
                              "--item-text", "ml/", "--text-encoder", "hashing",
                              "--text-cache-dir", "cache/", "--set", "text.lrd_weight=0.5"])
    cfg = config_from_args(args)
    assert (cfg.text.item_text, cfg.text.encoder, cfg.text.cache_dir) == ("ml/", "hashing",
                                                                          "cache/")
    assert cfg.text.lrd_weight == 0.5 and cfg.model is not None and cfg.model.kind == "hlr++"

