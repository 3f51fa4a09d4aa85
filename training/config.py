"""TrainConfig: the one typed configuration of a training run.

Composes the components' own config classes (minGPT style): data preparation, the model
(`models.config.ModelConfig`), the optimiser (`TrainerConfig`), evaluation and baselines.
Built from defaults, an optional TOML file and `section.key=value` overrides; unknown keys
raise, and the resolved config is written next to every run and into every artifact.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from models import registry
from models.config import ModelConfig

# Log formats `training.readers.read_log` knows; kept here so that `relrec --help` lists them
# without importing pandas.
FORMATS: tuple[str, ...] = (
    "ml-100k", "ml-1m", "ml-latest", "amazon", "lastfm", "csv", "tsv", "parquet",
)
RELATIONAL = tuple(registry.KINDS)  # the relational model kinds (models/registry.py)
BASELINES = ("pop", "als", "ease")
ALGORITHMS = BASELINES + RELATIONAL


def _known_algorithm(algorithm: str) -> str:
    if algorithm not in BASELINES and algorithm not in registry.KINDS:
        raise ValueError(f"unknown algorithm {algorithm!r}; known: "
                         f"{', '.join(BASELINES + tuple(registry.KINDS))}")
    return algorithm


# A baseline or a kind of `models.registry.KINDS`, checked when validated (not a Literal: the
# registry is the one list of kinds, and a test may register a kind after this import).
Algorithm = Annotated[str, AfterValidator(_known_algorithm)]


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainerConfig(_Section):
    """Optimisation settings; defaults are the reference code's (DESIGN §1).

    Lives here rather than in `training/trainer.py` so that reading a config (and `relrec
    --help`, which takes its help text from these descriptions) never imports torch.
    """

    epochs: int = Field(30, ge=1, description="maximum training epochs (the best on "
                        "validation is kept)")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    batch_size: int = Field(1000, ge=1, description="positives per training batch")
    patience: int = Field(5, ge=1, description="epochs without improvement before stopping")
    select_by: Literal["ndcg", "loss"] = Field("ndcg", description="what picks the best epoch: "
                                               "validation NDCG or training loss")
    eval_users: int = Field(2000, ge=0, description="validation users sampled; 0 = all")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:1")
    seed: int = Field(0, description="seeds the sampler and the initialisation")
    progress: bool = Field(True, description="show progress bars")
    threads: int = Field(0, ge=0, description="intra-op threads; 0 = the available cores "
                         "(shared among the ranks of one machine)")
    prefetch: int = Field(2, ge=0, description="batches built ahead by a background thread; "
                          "0 builds each batch inline")
    compile: bool = Field(False, description="torch.compile the training objective "
                          "(docs/benchmarks.md: where it wins)")
    negatives: Literal["uniform", "hardest", "warp", "mean", "softmax"] = Field(
        "uniform", description="uniform: each sampled negative a triplet (the reference, with "
        "n_negatives 1); hardest: the closest of n (history models: by ‖p − q‖²); warp: "
        "rank-weighted hinge on the closest; mean: hinge averaged over n; softmax: sampled "
        "softmax over n distinct negatives shared by the batch (logits −distance/temperature; "
        "the margin is unused)")
    n_negatives: int = Field(1, ge=1, le=1000, description="negatives sampled per positive "
                             "(softmax: per batch, shared by its positives)")
    temperature: float = Field(0.1, gt=0, le=10, description="with softmax: τ in the logits "
                               "−d/τ (distances lie in [0, 4] inside the unit ball)")
    lr_memory: float | None = Field(None, gt=0, description="learning rate of K and M; None: lr")
    memory_decay: float = Field(0.0, ge=0, description="L2 weight decay of K and M (pulls the "
                                "relations toward 0, i.e. toward CML)")
    schedule: Literal["constant", "cosine", "plateau"] = Field(
        "constant", description="cosine: anneal to lr/100 over `epochs`; plateau: halve the "
        "learning rate after an epoch without validation gain")
    init_from: str | None = Field(None, description="warm start: a run directory trained on "
                                  "the same data (e.g. CML) whose tables this model starts "
                                  "from; a relation memory the run lacks starts at zero")

    @model_validator(mode="after")
    def _negatives_need_several(self) -> TrainerConfig:
        if self.negatives in ("hardest", "warp", "softmax") and self.n_negatives < 2:
            raise ValueError(f"negatives={self.negatives!r} picks among sampled negatives: "
                             "set n_negatives >= 2")
        return self


class DataConfig(_Section):
    """How the interaction log becomes a split (DESIGN §2)."""

    path: str | None = Field(None, description="interaction log")
    format: str | None = Field(None, description="log format, detected from the file name "
                               "when unset: " + ", ".join(FORMATS))
    columns: list[str] | dict[str, str] | None = Field(
        None, description="a list names a headerless file's columns in order (user,item,"
        "rating); a mapping role -> column picks them in a file with a header "
        "(user=member,item=show)")
    min_rating: float | None = Field(4.0, description="positive threshold; None keeps all")
    k_core: int = Field(10, ge=0, description="iterative k-core on users and items "
                        "(evaluation runs)")
    split: Literal["per-user", "global", "leave-one-out"] = Field(
        "per-user", description="how interactions become train/valid/test")
    seed: int = Field(0, description="seeds the split")
    # A production run (`final`) keeps every item with at least this many positives and every
    # user with one; the k-core is the evaluation protocol only (issue 16).
    min_item_interactions: int = Field(1, ge=1, description="with final: keep items with at "
                                       "least this many positives")


class EvalConfig(_Section):
    k: int = Field(10, ge=1)
    sampled_negatives: int = Field(100, ge=1)
    batch_size: int = Field(256, ge=1)
    sampled: bool = True


class BaselineConfig(_Section):
    """ALS through `implicit` and EASE; defaults chosen on ML-1M validation (bench/tune_als.py)."""

    factors: int = Field(300, ge=1)
    iterations: int = Field(20, ge=1)
    regularization: float = Field(100.0, ge=0)
    alpha: float = Field(10.0, ge=0, description="Hu et al.'s α: a positive has confidence 1 + α "
                         "(an unobserved cell 1)")
    ease_l2: float = Field(500.0, gt=0, description="EASE's λ on the diagonal of XᵀX")


class TextConfig(_Section):
    """Text for the semantic relations (DESIGN §1 "Later"; SERML, LRD, text-only items)."""

    reviews: str | None = Field(None, description="review JSON lines for serml; default data.path")
    item_text: str | None = Field(None, description="item text: LRD for hlr/hlr++, text-only items")
    encoder: Literal["minilm", "hashing"] = Field(
        "minilm", description="sentence encoder of item text, and of reviews with "
        "review_encoder=pretrained")
    cache_dir: str | None = Field(".relrec/text-cache", description="None: no embedding cache")
    review_encoder: Literal["hierarchical", "pretrained"] = Field(
        "hierarchical", description="serml's semantic target s(u, v): hierarchical (word and "
        "sentence BiLSTMs trained from scratch on the training reviews) or pretrained (the "
        "sentence encoder's embedding of the review, computed once and cached, through a "
        "learned linear map to d)")
    # SERML's hierarchical review encoder
    vocab_size: int = Field(20_000, ge=3)
    max_sentences: int = Field(10, ge=1)
    max_words: int = Field(30, ge=1)
    word_dim: int = Field(64, ge=1)
    hidden: int = Field(50, ge=1)
    rating_weight: float = Field(1.0, ge=0, description="serml: weight of the rating supervision")
    # item text: the text -> item vector regression that places text-only items
    align_weight: float = Field(0.1, ge=0, description="weight of ‖W t_v + b − q_v‖²")
    # LRD relation discovery (hlr, hlr++ with item text); 0 turns it off
    lrd_weight: float = Field(1.0, ge=0, description="weight of LRD's reconstruction + KL")
    lrd_hidden: int = Field(128, ge=1)


class ExportConfig(_Section):
    """How a run becomes an artifact: the FAISS index (training/index_builder.py, issue 21)."""

    index: Literal["auto", "flat", "hnsw", "ivfpq", "ivfpqfs", "pqfs"] = Field(
        "auto", description="FAISS index kind; auto: flat for small catalogues, then hnsw, "
        "then ivfpq (IVF-PQ), the first fitting --index-memory-mb, and pqfs where hnsw misses "
        "the recall target; ivfpqfs: IVF-PQ with 4-bit fast-scan codes (less search CPU, a "
        "copy in each worker); pqfs: 4-bit fast scan of every item, its best re-ordered "
        "exactly (for probes an HNSW graph serves badly)")
    index_memory_mb: float | None = Field(
        None, gt=0, description="memory budget of the index in MB (shared by the workers); "
        "unset: flat up to 10k items, hnsw above")
    pools: Literal["auto", "off"] | Annotated[int, Field(ge=1, le=100_000)] = Field(
        "auto", description="per-user candidate pools, K nearest unseen items a trained user, "
        "served where provably exact; auto: 256 above 10k items, within budgets; off: none")


class TrainConfig(_Section):
    algorithm: Algorithm = "hlr"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig | None = Field(default_factory=lambda: ModelConfig(kind="hlr"),
                                      description="None for the baselines")
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    # Production run: select on validation as usual, then refit on every interaction (all
    # splits, the whole catalogue) for the selected epochs; that model is what gets exported.
    final: bool = False

    @property
    def is_relational(self) -> bool:
        return self.algorithm in registry.KINDS

    @model_validator(mode="after")
    def _text_objectives_take_one_negative(self) -> TrainConfig:
        """SERML's and the item-text objectives read one negative per positive."""
        several = self.trainer.negatives in ("warp", "mean") or (
            self.trainer.negatives == "uniform" and self.trainer.n_negatives > 1)
        if several and (self.algorithm == "serml" or self.text.item_text):
            raise ValueError(f"negatives={self.trainer.negatives!r} with n_negatives="
                             f"{self.trainer.n_negatives} needs the plain hinge objective; with "
                             "review or item text use uniform with one negative, or hardest")
        return self

    @model_validator(mode="after")
    def _warm_start_needs_the_same_rows(self) -> TrainConfig:
        """A final refit covers every interaction, so its rows are not the warm-start run's."""
        if self.final and self.trainer.init_from:
            raise ValueError("trainer.init_from with --final: the refit's rows (every "
                             "interaction, no k-core) are not the run's; warm-start an "
                             "evaluation run, then refit without init_from")
        return self


def _parse_value(raw: str) -> Any:
    """`--set` values are JSON when they parse (numbers, true, null, lists), else strings."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one `section.key=value` to a nested dict (nanoGPT's configurator, typed later)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.key=value")
    dotted, raw = assignment.split("=", 1)
    node = tree
    *parents, leaf = dotted.strip().split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
    node[leaf] = _parse_value(raw.strip())


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                **sections: dict[str, Any]) -> TrainConfig:
    """Defaults <- TOML file <- keyword sections <- `--set` overrides; validated at the end."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            tree = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
    for name, values in sections.items():
        if isinstance(values, dict):
            tree.setdefault(name, {}).update({k: v for k, v in values.items() if v is not None})
        elif values is not None:
            tree[name] = values
    for assignment in overrides or []:
        apply_override(tree, assignment)
    algorithm = tree.get("algorithm", "hlr")
    if algorithm in registry.KINDS:
        tree.setdefault("model", {})["kind"] = algorithm
    else:
        tree["model"] = None  # baselines have no relational model section
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err["loc"])
        parts.append(f"{where}: {err['msg']}")
    return "invalid configuration: " + "; ".join(parts)
