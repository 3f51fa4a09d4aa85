"""SERML, semantic-enhanced relational metric learning (arXiv 2406.10246).

The scoring model is LRML's: r(u, v) = LRAM(p_u, q_v), d(u, v) = ‖p_u + r − q_v‖². What SERML
adds is a training signal: for each reviewed training pair a review encoder
(`models.text_encoders.HierarchicalEncoder`) gives a semantic vector s(u, v), and the loss adds
γ‖r(u, v) − s(u, v)‖² (`models.losses.semantic_loss`) so that the relations the memory induces
carry what reviewers wrote. The encoder belongs to the training objective
(`training/text/semantic.py`), not to this module: at serving time no review exists, the relation is
still read from the memory, and the artifact is an LRML artifact with kind "serml".
"""

from __future__ import annotations

from models.lrml import LRML


class SERML(LRML):
    """LRML whose relations were trained toward review semantics; same parameters, same graph.

    A separate class (not `LRML` with a flag) so that the registry, the checkpoint and the
    manifest say which objective trained the memory.
    """
