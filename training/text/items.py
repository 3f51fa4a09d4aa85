"""Item text in training: LRD for HLR, and vectors for items with no interactions.

Stage: training and export. `build_item_text_objective` reads the item text named by
`--item-text` (`training/text/readers.py`), embeds it with a pretrained sentence encoder (cached,
`training/text/cache.py`) and wraps the run's objective in an `ItemTextObjective`: besides the
ranking loss, a linear projection of each batch item's text is regressed onto its vector q_v
(and, for HLR/HLR++, LRD's relation discovery, `models/relation_discovery.py`). After
training, `text_only_items()` projects the text of the items that have text but no row in the
model (never interacted with, or dropped by the k-core), and the exporter appends them to the
item table (`extend_with_text_items`), so they are indexed, scored and served like any other
item: the service reads no text. The run directory keeps them (`training/run_dir.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from models import registry
from models.base import RelationalModel
from models.idmap import IdMap
from models.registry import build_model
from models.relation_discovery import RelationDiscovery, slot_guidance_loss
from models.text_encoders import ItemTextProjection
from training.config import TextConfig
from training.dataset import Batch
from training.interactions import DataError, Interactions
from training.run_dir import TextItems
from training.splits import Split
from training.text.cache import embed_texts
from training.text.readers import read_item_text
from training.text.sentence_encoder import load_encoder
from training.trainer import TripletObjective, resolve_device

__all__ = ["ItemTextFeatures", "ItemTextObjective", "TextItems", "build_item_text_objective",
           "extend_with_text_items", "item_text_features"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemTextFeatures:
    """Text vectors of the items that have text: warm (a model row) and text-only."""

    encoder: str
    warm_rows: np.ndarray  # [Tw] int64 item rows
    warm_vecs: np.ndarray  # [Tw, D] float32
    cold_ids: np.ndarray  # [Tc] object str: items with text and no row
    cold_vecs: np.ndarray  # [Tc, D] float32


def item_text_features(text: TextConfig, items: IdMap, device: str = "cpu",
                       progress: bool = False) -> ItemTextFeatures:
    """Read and embed the item text of `text.item_text`, split by whether `items` has a row.

    `device` is the trainer's (`auto`, `cpu`, `cuda:1`): the sentence encoder runs there.
    """
    assert text.item_text is not None
    texts = read_item_text(text.item_text)
    encoder = load_encoder(text.encoder, device=resolve_device(device).type)
    vecs = embed_texts(texts.texts, encoder, text.cache_dir, progress=progress)
    rows = np.fromiter((items.get(i) for i in texts.item_ids), np.int64, count=len(texts))
    warm = rows >= 0
    if not warm.any():
        raise DataError(f"no item of {text.item_text} is in the training data: the item "
                        f"text must use the interaction log's item ids")
    log.info("item text (%s): %d of %d items have text; %d text-only items", encoder.name,
             int(warm.sum()), len(items), int((~warm).sum()))
    return ItemTextFeatures(encoder.name, rows[warm], vecs[warm], texts.item_ids[~warm],
                            vecs[~warm])


class ItemTextObjective(nn.Module):
    """base(batch) + λ Σ ‖W t_v + b − q_v‖² over the batch's positives and negatives with text,
    + μ Σ [LRD reconstruction + KL(π(v, j) ‖ w(v, j))] over (positive, history item) pairs.

    Summed over the batch like the hinge, so λ and μ weigh the terms per item or pair. The
    regression is joint: it also pulls q_v toward what its text predicts, which is what lets a
    projected text-only item land among the items it resembles. LRD (`lrd` given: HLR, HLR++)
    takes one history item per row, the first sampled slot (slots are drawn at random), so its
    cost is one small MLP per batch row, not per history slot.
    """

    def __init__(self, base: nn.Module, model: RelationalModel, features: ItemTextFeatures,
                 align_weight: float, lrd: RelationDiscovery | None = None,
                 lrd_weight: float = 0.0) -> None:
        super().__init__()
        self.lrd, self.lrd_weight = lrd, lrd_weight
        self.base = base
        self.model = model
        self.encoder_name = features.encoder
        self.cold_ids = features.cold_ids.tolist()
        self.cold_vecs = features.cold_vecs
        self.projection = ItemTextProjection(features.warm_vecs.shape[1], model.config.dim)
        self.align_weight = align_weight
        index = np.full(model.n_items, -1, np.int64)
        index[features.warm_rows] = np.arange(len(features.warm_rows))
        self.register_buffer("text_index", torch.from_numpy(index), persistent=False)
        self.register_buffer("text_vecs", torch.from_numpy(features.warm_vecs),
                             persistent=False)

    def forward(self, batch: Batch) -> Tensor:
        loss = self.base(batch)
        items = torch.cat([batch.pos_rows, batch.neg_rows])  # [2B]
        slot = self.text_index[items]  # [2B]
        has = slot >= 0
        predicted = self.projection(self.text_vecs[slot[has]])  # [b, d]
        error = predicted - self.model.item_emb(items[has])
        loss = loss + self.align_weight * (error * error).sum()
        if self.lrd is not None and batch.hist_rows.shape[1] > 0:
            loss = loss + self.lrd_weight * self.discovery_loss(batch)
        return loss

    def discovery_loss(self, batch: Batch) -> Tensor:
        """LRD on (v, j) = (positive, first history item), where both have text."""
        assert self.lrd is not None and self.model.lram is not None
        head_slot = self.text_index[batch.pos_rows]  # [B]
        tail_slot = self.text_index[batch.hist_rows[:, 0]]  # [B]
        ok = batch.hist_mask[:, 0] & (head_slot >= 0) & (tail_slot >= 0)
        if not bool(ok.any()):  # DDP still expects a gradient for every LRD parameter
            return 0.0 * sum(p.sum() for p in self.lrd.parameters())
        log_pi, recon = self.lrd(self.text_vecs[head_slot[ok]], self.text_vecs[tail_slot[ok]])
        head = self.model.item_emb(batch.pos_rows[ok])  # [b, d]
        tail = self.model.item_emb(batch.hist_rows[ok, 0])  # [b, d]
        slot_logits = (head * tail) @ self.model.lram.keys  # [b, N]: HLR's LRAM(q_v, q_j)
        # π teaches, HLR learns: with gradients both ways, the cheapest KL is a flat π that
        # copies the (near-uniform at init) slot weights, and π would never discover anything.
        return recon + slot_guidance_loss(log_pi.detach(), slot_logits)

    @torch.no_grad()
    def relation_posterior(self, head_rows: Tensor, tail_rows: Tensor) -> Tensor:
        """π(v, j) `[b, N]` for item rows that have text (for analysis and tests)."""
        assert self.lrd is not None
        head, tail = self.text_vecs[self.text_index[head_rows]], self.text_vecs[
            self.text_index[tail_rows]]
        return self.lrd.log_posterior(head, tail).exp()

    @torch.no_grad()
    def text_only_items(self) -> TextItems:
        """Projected vectors of the text-only items, clipped into the unit ball as every
        trained row is (`RelationalModel.project_`)."""
        device = self.text_vecs.device
        vecs = self.projection(torch.from_numpy(self.cold_vecs).to(device))  # [K, d]
        vecs = vecs.renorm(p=2, dim=0, maxnorm=1.0) if len(vecs) else vecs
        linear = self.projection.linear
        return TextItems(list(self.cold_ids), vecs.float().cpu().numpy(), self.encoder_name,
                         linear.weight.detach().float().cpu().numpy(),
                         linear.bias.detach().float().cpu().numpy())


def build_item_text_objective(text: TextConfig, split: Split, model: RelationalModel,
                              base: nn.Module | None = None, device: str = "cpu",
                              progress: bool = False) -> ItemTextObjective:
    """Wrap `base` (the plain hinge when None) with the item-text terms of `text`."""
    features = item_text_features(text, split.train.items, device, progress)
    base = TripletObjective(model) if base is None else base
    lrd = None
    if registry.spec(model.kind).item_text_lrd and text.lrd_weight > 0:
        lrd = RelationDiscovery(features.warm_vecs.shape[1], model.config.n_memory,
                                text.lrd_hidden)
    return ItemTextObjective(base, model, features, text.align_weight, lrd, text.lrd_weight)


# -- the export ------------------------------------------------------------------------------


def extend_with_text_items(model: RelationalModel, train: Interactions, text_items: TextItems
                           ) -> tuple[RelationalModel, Interactions]:
    """A copy of `model` whose item table has the text-only items appended as rows
    `[V, V + K)`, and `train` with the same item map extended (no interaction added)."""
    known = [i for i in text_items.ids if i in train.items]
    if known:
        raise DataError(f"text-only items {known[:3]} already have a row in the model")
    bigger = build_model(model.config, model.n_users, model.n_items + len(text_items))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    extra = torch.from_numpy(text_items.vectors).to(state["item_emb.weight"].dtype)
    state["item_emb.weight"] = torch.cat([state["item_emb.weight"], extra])
    bigger.load_state_dict(state)
    items = IdMap.from_ids(train.items.to_list() + list(text_items.ids))
    extended = Interactions(train.user_rows, train.item_rows, train.weights, train.timestamps,
                            train.users, items)
    return bigger.eval(), extended
