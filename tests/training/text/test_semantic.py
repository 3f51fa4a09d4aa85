"""SERML: γ = 0 is LRML bit for bit; planted review sentiment shapes the induced relations,
with the hierarchical encoder and with the pretrained sentence embedding's projection; the
review embeddings are cached; only training pairs' reviews are read; `relrec train --model
serml` then export, end to end; missing text extra or review text is one line, exit 2.

The pretrained target runs the weight-free hashing sentence encoder (deterministic, instant)
through the same interface as MiniLM; one test, marked slow, runs the packaged MiniLM (loading
it takes ~40 s on a busy core)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.registry import build_model
from models.text_encoders import HierarchicalEncoder, ReviewProjection
from training.config import load_config
from training.dataset import TrainDataset
from training.interactions import Interactions
from training.pipeline import build_objective, fit_relational
from training.splits import Split
from training.text.cache import cache_path
from training.text.readers import ReviewTexts
from training.text.semantic import SemanticObjective, build_semantic_objective, review_pairs
from training.text.sentence_encoder import HashingEncoder, text_extra_available
from training.trainer import Trainer

# Every other user is lenient (rates what they like 5 and says "excellent") or strict (4,
# "decent"): a signal independent of the planted communities, so only the reviews tell it.
PRAISE = ("decent", "excellent")
FILLER = ("really", "quite", "this", "one", "nice", "ok", "the", "bought", "again", "item")


def lenient(user_id: str) -> int:
    return int(user_id.split("-")[0][1:]) % 2


def planted_reviews(inter: Interactions, seed: int = 0) -> ReviewTexts:
    """One review per logged pair, filler words around the user's word of praise; liked items
    (rating >= 4) get 5 from lenient users and 4 from strict ones."""
    rng = np.random.default_rng(seed)
    users = inter.users.ids[inter.user_rows]
    items = inter.items.ids[inter.item_rows]
    ratings = inter.weights.copy()
    texts = []
    for row, user in enumerate(users):
        words = rng.choice(FILLER, 6).tolist()
        words.insert(int(rng.integers(0, 4)), PRAISE[lenient(user)])
        texts.append(f"{' '.join(words[:3])}. {' '.join(words[3:])}!")
        if ratings[row] >= 4:
            ratings[row] = 4 + lenient(user)
    return ReviewTexts(users.astype(object), items.astype(object), texts, ratings)


def write_amazon(path: Path, inter: Interactions, reviews: ReviewTexts) -> Path:
    """The log and its reviews as Amazon 5-core JSON lines (gzip)."""
    rows = [{"reviewerID": u, "asin": i, "overall": float(w), "unixReviewTime": int(t),
             "summary": "", "reviewText": text}
            for u, i, w, t, text in zip(reviews.user_ids, reviews.item_ids, reviews.ratings,
                                        inter.timestamps, reviews.texts, strict=True)]
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    return path


@pytest.fixture(scope="module")
def reviews_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.synthetic import planted_interactions

    raw = planted_interactions(n_users=240, n_items=120, n_communities=4, items_per_user=24,
                               noise=0.05, seed=0)
    return write_amazon(tmp_path_factory.mktemp("amazon") / "reviews_Planted_5.json.gz", raw,
                        planted_reviews(raw))


def _cfg(kind: str, reviews: Path, epochs: int = 2, lr: float = 0.01,
         text: dict | None = None, **model):
    return load_config(
        algorithm=kind, data={"path": str(reviews), "k_core": 5},
        model={"dim": 16, "n_memory": 6, "copy": False, **model},
        trainer={"epochs": epochs, "batch_size": 256, "lr": lr, "progress": False,
                 "patience": epochs, "select_by": "loss"},
        text={"word_dim": 8, "hidden": 8, "max_sentences": 3, "max_words": 8, **(text or {})},
        eval={"sampled": False})


def _pretrained(cache_dir: Path) -> dict:
    """The pretrained target, embedded by the hashing encoder (MiniLM's interface)."""
    return {"review_encoder": "pretrained", "encoder": "hashing", "cache_dir": str(cache_dir)}


@pytest.mark.parametrize("pretrained", [False, True], ids=["hierarchical", "pretrained"])
def test_gamma_zero_trains_lrml_exactly(planted_split: Split, reviews_file: Path,
                                        pretrained: bool, tmp_path: Path) -> None:
    text = _pretrained(tmp_path) if pretrained else None
    lrml, _, lrml_log = fit_relational(_cfg("lrml", reviews_file), planted_split)
    serml, _, serml_log = fit_relational(_cfg("serml", reviews_file, gamma=0.0, text=text),
                                         planted_split)
    assert type(serml).__name__ == "SERML"
    lrml_state, serml_state = lrml.state_dict(), serml.state_dict()
    assert lrml_state.keys() == serml_state.keys()  # the encoder is not part of the model
    for name, tensor in lrml_state.items():
        assert torch.equal(tensor, serml_state[name]), name
    # the training loss differs (the encoder still learns the ratings); the model does not
    assert [e.valid for e in lrml_log.epochs] == [e.valid for e in serml_log.epochs]


def _class_accuracy(model, split: Split) -> float:
    """Nearest-centroid accuracy of the training pairs' relations r(u, v) by planted class."""
    users = torch.from_numpy(split.train.user_rows)
    items = torch.from_numpy(split.train.item_rows)
    with torch.no_grad():
        rel = model.relation(model.user_vectors(users), items[:, None])[:, 0].numpy()
    labels = np.array([lenient(u) for u in split.train.users.ids[split.train.user_rows]])
    centroids = np.stack([rel[labels == a].mean(0) for a in range(len(PRAISE))])
    guess = ((rel[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    return float((guess == labels).mean())


def test_planted_review_sentiment_shapes_the_relations(planted_split: Split,
                                                       reviews_file: Path) -> None:
    """The class (lenient or strict) is independent of the interactions, so a relation learned
    from them alone separates it at chance (1/2); with γ > 0 the relations carry it."""
    # LRML's relations start nearly constant (softmax logits (p ⊙ q)K are ~0.05 at init), so
    # separating them takes a few hundred steps: lr 0.05 and 15 epochs of 16 batches, no
    # model selection (an early epoch would be kept by the validation loss).
    cfg = _cfg("serml", reviews_file, epochs=15, lr=0.05, gamma=1.0)
    torch.manual_seed(0)
    model = build_model(cfg.model, planted_split.train.n_users, planted_split.train.n_items)
    objective = build_objective(cfg, planted_split, model)
    dataset = TrainDataset(planted_split.train, cfg.model.l_max, cfg.model.uses_history)
    Trainer(model, cfg.trainer, objective=objective).fit(dataset, None)
    assert _class_accuracy(model, planted_split) > 0.9
    with torch.no_grad():  # and the encoder read the sentiment from the words
        rated = objective.predict_rating(objective.encoder(objective.inputs))
    error = float((rated - objective.ratings).square().mean().sqrt())
    assert error < 0.5 * float(objective.ratings.std())


def test_only_training_pairs_reviews_are_used(planted_split: Split) -> None:
    train, test = planted_split.train, planted_split.test
    users = np.concatenate([train.users.ids[train.user_rows[:3]],
                            test.users.ids[test.user_rows[:2]], ["stranger"]])
    items = np.concatenate([train.items.ids[train.item_rows[:3]],
                            test.items.ids[test.item_rows[:2]], [train.items.ids[0]]])
    texts = ["a", "b", "c", "test one", "test two", "unknown user"]
    keys, idx = review_pairs(ReviewTexts(users, items, texts), planted_split)
    assert sorted(texts[i] for i in idx) == ["a", "b", "c"]
    assert np.all(np.diff(keys) > 0)
    expected = train.user_rows[:3] * train.n_items + train.item_rows[:3]
    assert sorted(keys.tolist()) == sorted(expected.tolist())


def test_cli_train_serml_and_export(reviews_file: Path, tmp_path: Path) -> None:
    from models.artifact import read_manifest
    from training.cli import main

    run_dir, art_dir = tmp_path / "run", tmp_path / "artifacts"
    assert main(["train", "--model", "serml", "--data", str(reviews_file), "--gamma", "0.5",
                 "--k-core", "5", "--epochs", "1", "--dim", "8", "--n-memory", "4",
                 "--no-progress", "--set", "text.hidden=4", "--set", "text.word_dim=4",
                 "--set", "eval.sampled=false", "--out", str(run_dir)]) == 0
    doc = json.loads((run_dir / "metrics.json").read_text())
    assert doc["model"] == "serml"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["gamma"] == 0.5 and config["text"]["hidden"] == 4
    assert main(["export", str(run_dir), "--out", str(art_dir)]) == 0  # includes the parity check
    manifest = read_manifest(art_dir / "current")
    assert manifest.kind == "serml" and manifest.model["gamma"] == 0.5
    assert "attention" not in manifest.onnx.outputs  # LRML's graph


class CountingEncoder(HashingEncoder):
    """The real hashing encoder, recording the texts it was asked to encode."""

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.seen: list[str] = []

    def encode(self, texts):
        self.seen += list(texts)
        return super().encode(texts)


def _objective(cfg, split: Split, **kwargs) -> SemanticObjective:
    torch.manual_seed(0)
    model = build_model(cfg.model, split.train.n_users, split.train.n_items)
    return build_semantic_objective(cfg.text, split, model, cfg.data.path, **kwargs)


def test_pretrained_target_is_a_trained_projection(planted_split: Split, reviews_file: Path,
                                                   tmp_path: Path) -> None:
    cfg = _cfg("serml", reviews_file, gamma=1.0, text=_pretrained(tmp_path))
    objective = _objective(cfg, planted_split)
    assert isinstance(objective.encoder, ReviewProjection)
    assert objective.inputs.dtype == torch.float32 and objective.inputs.shape[1] == 256
    batch = next(iter(TrainDataset(planted_split.train, cfg.model.l_max,
                                   cfg.model.uses_history).batches(np.random.default_rng(0), 64)))
    rows, has = objective.review_rows(batch.user_rows, batch.pos_rows)
    assert bool(has.all())  # every planted training pair has its review
    assert objective.semantic(rows).shape == (64, 16)  # s(u, v): [B, d]
    objective(batch).backward()
    grad = objective.encoder.linear.weight.grad
    assert grad is not None and grad.shape == (16, 256) and float(grad.abs().sum()) > 0
    memory = objective.model.lram.memories.grad
    assert memory is not None and float(memory.abs().sum()) > 0  # r(u, v) is pulled too


def test_pretrained_review_sentiment_shapes_the_relations(planted_split: Split,
                                                          reviews_file: Path,
                                                          tmp_path: Path) -> None:
    """As with the hierarchical encoder: the planted class, which only the reviews' words
    carry, separates the relations once they are regressed onto the projected embeddings."""
    cfg = _cfg("serml", reviews_file, epochs=15, lr=0.05, gamma=1.0, text=_pretrained(tmp_path))
    objective = _objective(cfg, planted_split)
    dataset = TrainDataset(planted_split.train, cfg.model.l_max, cfg.model.uses_history)
    Trainer(objective.model, cfg.trainer, objective=objective).fit(dataset, None)
    assert _class_accuracy(objective.model, planted_split) > 0.9
    with torch.no_grad():
        rated = objective.predict_rating(objective.encoder(objective.inputs))
    error = float((rated - objective.ratings).square().mean().sqrt())
    assert error < 0.5 * float(objective.ratings.std())


def test_review_embeddings_are_cached(planted_split: Split, reviews_file: Path,
                                      tmp_path: Path) -> None:
    cfg = _cfg("serml", reviews_file, text=_pretrained(tmp_path))
    first_encoder, second_encoder = CountingEncoder(), CountingEncoder()
    first = _objective(cfg, planted_split, sentence_encoder=first_encoder)
    assert len(first_encoder.seen) == len(set(first_encoder.seen)) > 0  # each text once
    assert cache_path(tmp_path, first_encoder.name).is_file()
    second = _objective(cfg, planted_split, sentence_encoder=second_encoder)
    assert second_encoder.seen == []  # the second run reads every vector from the cache
    assert torch.equal(first.inputs, second.inputs)
    assert torch.equal(first.pair_keys, second.pair_keys)


def test_hierarchical_stays_the_default(planted_split: Split, reviews_file: Path) -> None:
    objective = _objective(_cfg("serml", reviews_file), planted_split)
    assert isinstance(objective.encoder, HierarchicalEncoder)
    assert objective.inputs.dtype == torch.int64 and objective.inputs.dim() == 3


def _train_serml(data: Path, tmp_path: Path, *extra: str) -> int:
    from training.cli import main

    return main(["train", "--model", "serml", "--data", str(data), "--k-core", "5",
                 "--epochs", "1", "--dim", "8", "--n-memory", "4", "--no-progress",
                 "--set", "eval.sampled=false", "--out", str(tmp_path / "run"), *extra])


def test_cli_review_encoder_pretrained(reviews_file: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert _train_serml(reviews_file, tmp_path, "--review-encoder", "pretrained",
                        "--text-encoder", "hashing", "--text-cache-dir", str(cache)) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["text"]["review_encoder"] == "pretrained"
    assert cache_path(cache, "hashing-256").is_file()


def test_cli_pretrained_without_the_text_extra(reviews_file: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # the extra is installed here: make its check say it is not, as on a plain install
    monkeypatch.setattr("training.text.semantic.text_extra_available", lambda: False)
    assert _train_serml(reviews_file, tmp_path, "--review-encoder", "pretrained") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "`text` extra" in err and "--review-encoder hierarchical" in err


def test_cli_pretrained_without_review_text(sample_csv: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """An interaction log without review text (a CSV) cannot give s(u, v)."""
    assert _train_serml(sample_csv, tmp_path, "--review-encoder", "pretrained",
                        "--text-encoder", "hashing", "--text-cache-dir", str(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "serml needs review text" in err and "--reviews" in err


@pytest.mark.slow
@pytest.mark.skipif(not text_extra_available(),
                    reason="needs the `text` extra (pip install -e '.[text]')")
def test_pretrained_target_with_the_packaged_minilm(planted_split: Split, reviews_file: Path,
                                                    tmp_path: Path) -> None:
    cfg = _cfg("serml", reviews_file, gamma=1.0,
               text={"review_encoder": "pretrained", "cache_dir": str(tmp_path)})
    objective = _objective(cfg, planted_split)
    assert objective.inputs.shape[1] == 384
    norms = objective.inputs.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)  # MiniLM, normalised
    assert any(p.name.startswith("all-MiniLM-L6-v2") for p in tmp_path.iterdir())
    dataset = TrainDataset(planted_split.train, cfg.model.l_max, cfg.model.uses_history)
    log = Trainer(objective.model, cfg.trainer, objective=objective).fit(dataset, None)
    assert all(np.isfinite(e.loss) for e in log.epochs)
