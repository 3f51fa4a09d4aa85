"""Scorer graphs: every model kind's exact distance, rearranged for ONNX Runtime on a CPU.

One graph per model kind, next to the models they mirror; `models/registry.py` maps each kind
to its builder below, and `training/scorer_graph.py` traces the built graph into the
artifact's `scorer.onnx` with the names of `models/scorer_io.py`. Inputs are user vectors
`[B, d]`, history rows `[B, L_max]` with a float mask, candidate rows `[B, C]`; outputs are
distances `[B, C]` and, for HLR/HLR++, the attention over the history `[B, C, L_max]`.

The graphs compute what `RelationalModel.distance` computes, in an order chosen for speed
(docs/benchmarks.md): for HLR the LRAM logits (q_v ⊙ x_k) K of every candidate and slot are one
matmul q_v @ (x_k ⊙ K), laid out `[N, S, C]` so that every later reduction runs over long
contiguous rows, and the relation is read from M once per candidate. Pad and out-of-range rows
gather row 0 (no out-of-range gather) and are replaced by a zero vector; an out-of-range
candidate gets distance +inf so that it never ranks. The item table is held exactly as the
artifact's `tensors.npz` holds it (no appended row), so that the exporter can make it ONNX
external data over those bytes and every worker maps one copy (issue 21).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from models.base import RelationalModel
from models.scorer_io import ATTENTION, DISTANCES

__all__ = ["SAFE_SHIFT", "AdaCMLGraph", "CMLGraph", "DotGraph", "HLRGraph", "LRMLGraph",
           "ScorerGraph", "VectorInputGraph", "adacml_graph", "cml_graph", "hlr_graph",
           "hlr_plus_graph", "lrml_graph", "masked_softmax", "shift_bound"]

# Largest logit shift for which exp(logit - shift) cannot underflow for a whole row
# (shifted logits >= -2 * shift > -87, the smallest normal float32's log).
SAFE_SHIFT = 40.0
_MASK_BIG = 1e30  # added (negated) to masked logits; finite, so a fully masked row stays finite


def masked_softmax(logits: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Softmax over `dim` where mask (float 0/1, broadcast) is 1; a fully masked row gives 0.

    Same contract as `models.base.masked_softmax` (an empty history contributes nothing),
    written without -inf so that ONNX sees plain arithmetic.
    """
    biased = logits + (mask - 1.0) * _MASK_BIG
    expd = torch.exp(biased - biased.amax(dim, keepdim=True)) * mask
    return expd / expd.sum(dim, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)


class ScorerGraph(nn.Module):
    """Shared part: the item table, row validation, zero vectors and +inf for bad rows."""

    has_attention = False
    items: Tensor  # buffers, declared for the type checker
    first_row: Tensor

    def __init__(self, items: Tensor, l_max: int) -> None:
        super().__init__()
        n_items, dim = items.shape
        self.n_items, self.dim, self.l_max = n_items, dim, l_max
        self.register_buffer("items", items.contiguous())  # [V, d]: the artifact's own table
        self.register_buffer("first_row", torch.tensor(0, dtype=torch.int64))

    def gather(self, rows: Tensor, ok: Tensor) -> Tensor:
        """Item vectors of `rows` `[..., d]` where `ok`, zero vectors elsewhere."""
        vecs = self.items[torch.where(ok, rows, self.first_row)]
        return torch.where(ok[..., None], vecs, torch.zeros_like(vecs))

    @property
    def output_names(self) -> tuple[str, ...]:
        return (DISTANCES, ATTENTION) if self.has_attention else (DISTANCES,)

    def forward(self, user_vecs: Tensor, hist_rows: Tensor, hist_mask: Tensor,
                cand_rows: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        cand_ok = (cand_rows >= 0) & (cand_rows < self.n_items)  # [B, C]
        cand = self.gather(cand_rows, cand_ok)  # [B, C, d]
        dist, attn = self.score(user_vecs, hist_rows, hist_mask, cand)
        dist = torch.where(cand_ok, dist, torch.full_like(dist, float("inf")))
        return dist if attn is None else (dist, attn)

    def history(self, hist_rows: Tensor, hist_mask: Tensor) -> tuple[Tensor, Tensor]:
        """History vectors `[B, L, d]` (pads and bad rows -> zero row) and the float mask.

        Float `hist_rows` `[B, L, d]` are the vectors themselves (`VectorInputGraph`)."""
        if hist_rows.is_floating_point():
            real = (hist_mask > 0.5).float()  # [B, L]
            return hist_rows * real[..., None], real
        ok = (hist_mask > 0.5) & (hist_rows >= 0) & (hist_rows < self.n_items)  # [B, L]
        return self.gather(hist_rows, ok), ok.float()

    def score(self, user_vecs: Tensor, hist_rows: Tensor, hist_mask: Tensor,
              cand: Tensor) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError


class VectorInputGraph(nn.Module):
    """A scorer graph fed item vectors instead of rows: (user_vecs `[B, d]`, hist_vecs
    `[B, L, d]`, hist_mask `[B, L]`, cand_vecs `[B, C, d]`) -> distances (and attention).

    The same `score` arithmetic as the row graph; what differs is where q_v comes from. The
    service scores items placed from their text at run time with it (PUT /items, issue 20),
    which the row graph cannot: its item table is a constant of the trained catalogue.
    """

    def __init__(self, graph: ScorerGraph) -> None:
        super().__init__()
        self.graph = graph

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.graph.output_names

    def forward(self, user_vecs: Tensor, hist_vecs: Tensor, hist_mask: Tensor,
                cand_vecs: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        dist, attn = self.graph.score(user_vecs, hist_vecs, hist_mask, cand_vecs)
        return dist if attn is None else (dist, attn)


def _distance(user_vecs: Tensor, relation: Tensor | None, cand: Tensor) -> Tensor:
    """‖p_u + r − q_v‖² `[B, C]` in the direct form (no ‖a‖² − 2ab + ‖b‖² cancellation)."""
    diff = user_vecs[:, None, :] - cand  # [B, C, d]
    if relation is not None:
        diff = diff + relation
    return (diff * diff).sum(-1)


class CMLGraph(ScorerGraph):
    """‖p_u − q_v‖²."""

    def score(self, user_vecs: Tensor, hist_rows: Tensor, hist_mask: Tensor,
              cand: Tensor) -> tuple[Tensor, Tensor | None]:
        return _distance(user_vecs, None, cand), None


class DotGraph(ScorerGraph):
    """−⟨x_u, y_v⟩: the baselines' scores as distances (smaller is better), so that ALS
    (x_u, y_v its factors) and most popular (x_u = 1, y_v = popularity) are served by the same
    service as the relational models (issue 16). The history is not read."""

    def score(self, user_vecs: Tensor, hist_rows: Tensor, hist_mask: Tensor,
              cand: Tensor) -> tuple[Tensor, Tensor | None]:
        return -(cand * user_vecs[:, None, :]).sum(-1), None  # [B, C]


class AdaCMLGraph(ScorerGraph):
    """r = Σ_j softmax_j⟨q_v, q_j⟩ q_j over the real history items."""

    def score(self, user_vecs: Tensor, hist_rows: Tensor, hist_mask: Tensor,
              cand: Tensor) -> tuple[Tensor, Tensor | None]:
        hist, ok = self.history(hist_rows, hist_mask)  # [B, L, d], [B, L]
        attn = masked_softmax(torch.matmul(cand, hist.transpose(1, 2)), ok[:, None, :], -1)
        return _distance(user_vecs, torch.matmul(attn, hist), cand), None  # attn [B, C, L]


class LRMLGraph(ScorerGraph):
    """r = softmax((p_u ⊙ q_v) K) M, the logits as q_v @ (p_u ⊙ K): one matmul per user."""

    keys: Tensor
    memories: Tensor

    def __init__(self, items: Tensor, keys: Tensor, memories: Tensor, l_max: int) -> None:
        super().__init__(items, l_max)
        self.register_buffer("keys", keys.clone())  # [d, N]
        self.register_buffer("memories", memories.clone())  # [N, d]

    def score(self, user_vecs: Tensor, hist_rows: Tensor, hist_mask: Tensor,
              cand: Tensor) -> tuple[Tensor, Tensor | None]:
        keyed = user_vecs[:, :, None] * self.keys  # [B, d, N]
        weights = torch.softmax(torch.matmul(cand, keyed), dim=-1)  # [B, C, N]
        return _distance(user_vecs, torch.matmul(weights, self.memories), cand), None


class HLRGraph(ScorerGraph):
    """HLR (and HLR++ with `plus`) for many candidates at once.

    Slots S = L+1: x = [p_u, q_j1 … q_jL]. E[n, s, c] = exp((q_c ⊙ x_s) K_n − shift) comes from
    ONE matmul of `[N·S, d+1] x [d+1, C]`: K is folded into the slots (x_s ⊙ K_n) and the
    shift rides along as an extra column against a column of ones in the candidates, so the
    subtraction costs nothing. With shift = max_c‖q_c‖ · max_n‖x_s ⊙ K_n‖ (Cauchy-Schwarz) no
    logit exceeds it, so no exp overflows, and `SAFE_SHIFT` bounds it so that none underflows
    a whole row; models outside that bound get the exact per-row max (`shift="max"`, slower).
    Then s = Σ_n E, ⟨a_s, M p_u⟩ = (M p_u)·E / s and Σ_s β_s a_s = E·(β/s) are two passes over
    E, and r = (Σ_s β_s a_s) M is read once per candidate: nothing of size `[C, S, d]` exists.
    """

    has_attention = True
    keys: Tensor
    memories: Tensor
    keys_t: Tensor
    keys_sq: Tensor
    item_norm: Tensor
    keys_t1: Tensor

    def __init__(self, items: Tensor, keys: Tensor, memories: Tensor, l_max: int,
                 plus: bool = False, shift: str = "bound") -> None:
        super().__init__(items, l_max)
        if shift not in ("bound", "max"):
            raise ValueError(f"shift must be 'bound' or 'max', got {shift!r}")
        n_mem = keys.shape[1]
        self.plus, self.shift_mode, self.n_memory = plus, shift, n_mem
        self.register_buffer("keys", keys.clone())  # [d, N]
        self.register_buffer("memories", memories.clone())  # [N, d]
        self.register_buffer("keys_t", keys.t()[:, None, :].contiguous())  # [N, 1, d]
        self.register_buffer("keys_sq", (keys * keys).contiguous())  # [d, N]
        self.register_buffer("item_norm", items.norm(dim=1).max().reshape(()))  # R = max‖q‖
        ones = keys.new_ones(n_mem, 1, 1)
        self.register_buffer("keys_t1", torch.cat([self.keys_t, ones], 2))  # [N, 1, d+1]

    def score(self, user_vecs: Tensor, hist_rows: Tensor, hist_mask: Tensor,
              cand: Tensor) -> tuple[Tensor, Tensor | None]:
        hist, ok = self.history(hist_rows, hist_mask)  # [B, L, d], [B, L]
        batch, n_cand, n_mem, slots = cand.shape[0], cand.shape[1], self.n_memory, self.l_max + 1
        x = torch.cat([user_vecs[:, None, :], hist], 1)  # [B, S, d]
        expd = self._slot_exp(x, cand).reshape(batch, n_mem, slots * n_cand)  # [B, N, S·C]
        user_mem = torch.matmul(user_vecs, self.memories.t())  # [B, N]: M p_u
        stats = torch.matmul(torch.stack([user_mem, torch.ones_like(user_mem)], 1), expd)
        stats = stats.reshape(batch, 2, slots, n_cand)  # [B, 2, S, C]
        total = stats[:, 1].clamp_min(torch.finfo(torch.float32).tiny)  # [B, S, C]: Σ_n E
        beta_logits = stats[:, 0] / total  # [B, S, C]: ⟨LRAM(q_v, x_s), p_u⟩
        expd = expd.reshape(batch, n_mem, slots, n_cand)  # [B, N, S, C]
        user_slot = torch.ones_like(ok[:, :1])  # [B, 1]
        if not self.plus:
            beta = masked_softmax(beta_logits, torch.cat([user_slot, ok], 1)[:, :, None], 1)
            mixed = (expd * (beta / total)[:, None]).sum(2)  # [B, N, C]: Σ_s β_s a_s
        else:
            beta, mixed = self._plus_branches(user_vecs, hist, ok, cand, expd, total,
                                              beta_logits)
        relation = torch.matmul(mixed.transpose(1, 2), self.memories)  # [B, C, d]
        return _distance(user_vecs, relation, cand), beta[:, 1:].transpose(1, 2)  # [B, C, L]

    def _slot_exp(self, x: Tensor, cand: Tensor) -> Tensor:
        """E = exp((q_c ⊙ x_s) K_n − shift_s) `[B, N·S, C]` (rows n-major, then s)."""
        batch, slots, dim = x.shape
        if self.shift_mode == "max":
            keyed = (self.keys_t * x[:, None]).reshape(batch, -1, dim)  # [B, N·S, d]
            logits = torch.matmul(keyed, cand.transpose(1, 2))  # [B, N·S, C]
            logits = logits.reshape(batch, self.n_memory, -1)  # [B, N, S·C]
            return torch.exp(logits - logits.amax(1, keepdim=True))
        # ‖x_s ⊙ K_n‖² = (x_s²)·(K_n²): a [S, d] x [d, N] matmul instead of touching x ⊙ K
        shift = torch.sqrt(torch.matmul(x * x, self.keys_sq).amax(-1, keepdim=True))
        x1 = torch.cat([x, -shift * self.item_norm], 2)  # [B, S, d+1]
        keyed = (self.keys_t1 * x1[:, None]).reshape(batch, -1, dim + 1)  # [B, N·S, d+1]
        cand1 = torch.cat([cand, torch.ones_like(cand[:, :, :1])], 2)  # [B, C, d+1]
        return torch.exp(torch.matmul(keyed, cand1.transpose(1, 2)))  # [B, N·S, C]

    def _plus_branches(self, user_vecs: Tensor, hist: Tensor, ok: Tensor, cand: Tensor,
                       expd: Tensor, total: Tensor, beta_logits: Tensor
                       ) -> tuple[Tensor, Tensor]:
        """HLR++: β over the history slots only, plus the user-preference branch α.

        Slot 0 of E is LRAM(p_u, q_v)'s own weights (the product is symmetric), so α_0 joins
        the β weights of the shared pass over E; the history slots LRAM(p_u, q_j) do not
        depend on the candidate and cost one small matmul per user. Every α logit reads M q_v
        (`[N, C]`) instead of `[C, d]` relation vectors.
        """
        user_slot = torch.ones_like(ok[:, :1])  # [B, 1]
        beta = masked_softmax(beta_logits, torch.cat([user_slot * 0.0, ok], 1)[:, :, None], 1)
        cand_mem = torch.matmul(self.memories, cand.transpose(1, 2))  # [B, N, C]: M q_v
        cand_logit = (expd[:, :, 0] * cand_mem).sum(1) / total[:, 0]  # [B, C]
        hist_w = torch.softmax(torch.matmul(user_vecs[:, None, :] * hist, self.keys), -1)
        hist_logits = torch.matmul(hist_w, cand_mem)  # [B, L, C]: ⟨w_j M, q_v⟩ = w_j · M q_v
        alpha_logits = torch.cat([cand_logit[:, None, :], hist_logits], 1)  # [B, S, C]
        alpha = masked_softmax(alpha_logits, torch.cat([user_slot, ok], 1)[:, :, None], 1)
        weights = torch.cat([alpha[:, :1], beta[:, 1:]], 1) / total  # [B, S, C]
        mixed = (expd * weights[:, None]).sum(2)  # [B, N, C]
        mixed = mixed + torch.matmul(hist_w.transpose(1, 2), alpha[:, 1:])  # [B, N, C]
        return beta, mixed


def shift_bound(items: np.ndarray, users: np.ndarray, keys: np.ndarray) -> float:
    """Largest `HLRGraph` shift over the trained users and items (and so over their convex
    combinations, e.g. a cold user's mean of item vectors): R · max_x max_n ‖x ⊙ K_n‖."""
    key_sq = keys.astype(np.float64) ** 2  # [d, N]
    rows = np.concatenate([items, users]).astype(np.float64)
    worst = 0.0
    for start in range(0, len(rows), 65536):
        part = rows[start:start + 65536]
        worst = max(worst, float(np.sqrt(((part * part) @ key_sq).max(initial=0.0))))
    return float(np.linalg.norm(items, axis=1).max(initial=0.0)) * worst


# -- one builder per kind (models/registry.py): a trained model -> its graph ------------------


def _items(model: RelationalModel) -> Tensor:
    """The item table as float32 on the CPU (the graph holds a copy)."""
    return model.item_emb.weight.detach().float().cpu()


def _memory(model: RelationalModel) -> tuple[Tensor, Tensor]:
    """K `[d, N]` and M `[N, d]` of the model's LRAM."""
    if model.lram is None:
        raise ValueError(f"a {model.kind} model needs an LRAM (keys and memories)")
    return model.lram.keys.detach().float().cpu(), model.lram.memories.detach().float().cpu()


def cml_graph(model: RelationalModel, shift: str = "auto") -> ScorerGraph:
    return CMLGraph(_items(model), model.config.l_max)


def adacml_graph(model: RelationalModel, shift: str = "auto") -> ScorerGraph:
    return AdaCMLGraph(_items(model), model.config.l_max)


def lrml_graph(model: RelationalModel, shift: str = "auto") -> ScorerGraph:
    """LRML's relation (also SERML's, which serves LRML's relation: models/serml.py)."""
    return LRMLGraph(_items(model), *_memory(model), model.config.l_max)


def hlr_graph(model: RelationalModel, shift: str = "auto", plus: bool = False) -> ScorerGraph:
    """`shift="auto"` picks the cheap bound shift when `shift_bound` is within SAFE_SHIFT."""
    items, (keys, memories) = _items(model), _memory(model)
    if shift == "auto":
        users = model.user_emb.weight.detach().float().cpu().numpy()
        bound = shift_bound(items.numpy(), users, keys.numpy())
        shift = "bound" if bound <= SAFE_SHIFT else "max"
    return HLRGraph(items, keys, memories, model.config.l_max, plus=plus, shift=shift)


def hlr_plus_graph(model: RelationalModel, shift: str = "auto") -> ScorerGraph:
    return hlr_graph(model, shift, plus=True)
