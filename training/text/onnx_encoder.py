"""all-MiniLM-L6-v2 as an ONNX graph and a tokenizer file, for the service (issue 20).

Stage: export. The service places an item PUT with its text by the sentence encoder the model
was trained with, but never imports torch: the transformer of the packaged MiniLM
(`training/text/sentence_encoder.py`) is traced here with its mean pooling and L2
normalisation into one graph `(input_ids, attention_mask) [B, T] int64 -> text_vecs [B, 384]`,
and its `tokenizer.json` is copied beside it for the `tokenizers` package. Parity with
sentence-transformers is tests/training/text/test_onnx_encoder.py (cosine >= 0.9999).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from models.scorer_io import OPSET

__all__ = ["TEXT_INPUTS", "MeanPooled", "export_minilm"]

TEXT_INPUTS = ("input_ids", "attention_mask")


class MeanPooled(nn.Module):
    """The transformer's token states, averaged over the real tokens and L2-normalised: what
    sentence-transformers' Pooling(mean) + Normalize compute for all-MiniLM-L6-v2."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        states = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)  # [B, T, 1]
        pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1e-9)  # [B, H]
        return pooled / pooled.norm(dim=1, keepdim=True).clamp_min(1e-12)


def export_minilm(graph_path: Path, tokenizer_path: Path) -> int:
    """Write the packaged MiniLM's graph and tokenizer; returns its max tokens per text."""
    from training.text.sentence_encoder import MiniLMEncoder

    encoder = MiniLMEncoder()
    first = encoder.model[0]  # sentence-transformers' Transformer module
    transformer = first.auto_model
    transformer.config._attn_implementation = "eager"  # plain MatMul/Softmax for the tracer
    module = MeanPooled(transformer).eval()
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.int64)
    mask = (ids > 0).to(torch.int64)
    axes = {"input_ids": {0: "B", 1: "T"}, "attention_mask": {0: "B", 1: "T"},
            "text_vecs": {0: "B"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        torch.onnx.export(module, (ids, mask), str(graph_path), dynamo=False,
                          opset_version=OPSET, input_names=list(TEXT_INPUTS),
                          output_names=["text_vecs"], dynamic_axes=axes,
                          do_constant_folding=True)
    source = Path(str(first.tokenizer.name_or_path)) / "tokenizer.json"
    if not source.is_file():  # the tokenizer as loaded, when the package ships none
        first.tokenizer.backend_tokenizer.save(str(tokenizer_path))
    else:
        shutil.copyfile(source, tokenizer_path)
    return int(encoder.model.max_seq_length)
