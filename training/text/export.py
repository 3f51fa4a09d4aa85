"""Export of what places an item from its text: encoder, projection and vector scorer graphs.

Stage: export (issue 20). A model trained with item text learned a projection from the
sentence encoder's vectors to item vectors (`training/text/items.py`); written into the
artifact with the encoder itself, it lets the service place an item PUT with its text and no
interaction (`service/text_placer.py`), with onnxruntime and no torch:

- `text_encoder.onnx` + `tokenizer.json` (MiniLM only, `training/text/onnx_encoder.py`); the
  hashing encoder has no weights, the service runs `models/text_hashing.py` as training did;
- `text_projection.onnx`: `[B, D] -> [B, d]`, W t + b clipped into the unit ball, exactly what
  `ItemTextObjective.text_only_items` computes for the items exported as text-only rows;
- `scorer_vectors.onnx`: the scorer graph with item vectors as inputs (`VectorInputGraph`),
  checked here against `scorer.onnx` on the trained rows.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from models import artifact as art
from models.graphs import ScorerGraph, VectorInputGraph
from models.scorer_io import OPSET, scorer_feed
from models.text_hashing import HASHING_PREFIX
from training.run_dir import TextItems
from training.scorer_graph import example_inputs

__all__ = ["TextExportError", "VECTOR_INPUTS", "has_projection", "text_model_files",
           "write_text_model"]

VECTOR_INPUTS = ("user_vecs", "hist_vecs", "hist_mask", "cand_vecs")
PARITY_ATOL = 1e-4  # vector vs row scorer, absolute on distances of order 1


class TextExportError(RuntimeError):
    """The text model could not be exported faithfully; nothing is published."""


def has_projection(text_items: TextItems | None) -> bool:
    """Whether a run carries the learned text projection (runs before issue 20 do not)."""
    return (text_items is not None and text_items.projection_weight is not None
            and text_items.projection_bias is not None)


def write_text_model(vdir: Path, text_items: TextItems, graph: ScorerGraph) -> art.TextModelInfo:
    """Write the text model's files into `vdir`; returns their manifest record."""
    assert text_items.projection_weight is not None and text_items.projection_bias is not None
    weight, bias = text_items.projection_weight, text_items.projection_bias
    encoder_files: dict[str, str | int | None] = {"text_encoder": None, "tokenizer": None,
                                                  "max_tokens": None}
    if text_items.encoder.startswith(HASHING_PREFIX):
        kind = "hashing"
    else:
        from training.text.onnx_encoder import export_minilm

        kind = "minilm"
        max_tokens = export_minilm(vdir / art.TEXT_ENCODER, vdir / art.TOKENIZER)
        encoder_files = {"text_encoder": art.TEXT_ENCODER, "tokenizer": art.TOKENIZER,
                         "max_tokens": max_tokens}
    export_projection(weight, bias, vdir / art.TEXT_PROJECTION)
    export_vector_scorer(graph, vdir / art.SCORER_VECTORS)
    check_vector_scorer(graph, vdir / art.SCORER, vdir / art.SCORER_VECTORS)
    return art.TextModelInfo(encoder=kind, encoder_name=text_items.encoder,
                             text_dim=int(weight.shape[1]), **encoder_files)  # type: ignore[arg-type]


def text_model_files(info: art.TextModelInfo | None) -> list[str]:
    """The text model's file names, checksummed with the rest (none without item text)."""
    if info is None:
        return []
    return [name for name in (info.text_encoder, info.tokenizer, info.projection, info.scorer)
            if name is not None]


class ClippedProjection(nn.Module):
    """W t + b, scaled into the unit ball as `Tensor.renorm(maxnorm=1)` does."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(weight))
            self.linear.bias.copy_(torch.from_numpy(bias))

    def forward(self, text_vecs: Tensor) -> Tensor:
        vecs = self.linear(text_vecs)  # [B, d]
        norm = vecs.norm(dim=1, keepdim=True)
        return torch.where(norm > 1.0, vecs / (norm + 1e-7), vecs)


def export_projection(weight: np.ndarray, bias: np.ndarray, path: Path) -> None:
    """`text_projection.onnx`: text_vecs `[B, D]` -> item_vecs `[B, d]`."""
    module = ClippedProjection(weight, bias).eval()
    example = torch.randn(2, weight.shape[1])
    _export(module, (example,), path, ["text_vecs"], ["item_vecs"],
            {"text_vecs": {0: "B"}, "item_vecs": {0: "B"}})
    expected = module(example).detach().numpy()
    got = _session(path).run(None, {"text_vecs": example.numpy()})[0]
    if not np.allclose(got, expected, atol=1e-5):
        raise TextExportError(f"{path.name} disagrees with the projection: max error "
                              f"{np.abs(got - expected).max():.2e}")


def export_vector_scorer(graph: ScorerGraph, path: Path) -> None:
    """`scorer_vectors.onnx`: `scorer.onnx` with item vectors in place of item rows."""
    wrapper = VectorInputGraph(graph).eval()
    axes = {"user_vecs": {0: "B"}, "hist_vecs": {0: "B"}, "hist_mask": {0: "B"},
            "cand_vecs": {0: "B", 1: "C"}}
    axes.update({name: ({0: "B", 1: "C"}) for name in wrapper.output_names})
    _export(wrapper, _vector_inputs(graph), path, list(VECTOR_INPUTS),
            list(wrapper.output_names), axes)
    proto = onnx.load(str(path))
    _declare_inputs(proto, graph)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def check_vector_scorer(graph: ScorerGraph, scorer: Path, vector_scorer: Path) -> float:
    """Max absolute difference of the two graphs' distances on trained rows; raises beyond
    PARITY_ATOL (the vector graph must rank trained items as `scorer.onnx` does)."""
    user_vecs, hist_rows, hist_mask, cand_rows = example_inputs(graph, batch=4, n_cand=16)
    (by_rows,) = _session(scorer).run(["distances"], scorer_feed(
        user_vecs.numpy(), hist_rows.numpy(), hist_mask.numpy(), cand_rows.numpy()))
    vec_feed = dict(zip(VECTOR_INPUTS, (t.numpy() for t in _as_vectors(
        graph, user_vecs, hist_rows, hist_mask, cand_rows)), strict=True))
    (by_vecs,) = _session(vector_scorer).run(["distances"], vec_feed)
    err = float(np.abs(by_rows - by_vecs).max())
    if not err <= PARITY_ATOL:
        raise TextExportError(f"{vector_scorer.name} disagrees with {scorer.name} by {err:.2e} "
                              f"(tolerance {PARITY_ATOL:.0e})")
    return err


def _vector_inputs(graph: ScorerGraph) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _as_vectors(graph, *example_inputs(graph))


def _as_vectors(graph: ScorerGraph, user_vecs: Tensor, hist_rows: Tensor, hist_mask: Tensor,
                cand_rows: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    items = graph.items  # [V, d]
    return user_vecs, items[hist_rows], hist_mask, items[cand_rows]


def _declare_inputs(proto: onnx.ModelProto, graph: ScorerGraph) -> None:
    """Every vector scorer takes the four inputs, read or not (CML ignores the history)."""
    present = {i.name: i for i in proto.graph.input}
    shapes: dict[str, list[int | str]] = {
        "user_vecs": ["B", graph.dim], "hist_vecs": ["B", graph.l_max, graph.dim],
        "hist_mask": ["B", graph.l_max], "cand_vecs": ["B", "C", graph.dim]}
    ordered = [present.get(name) or onnx.helper.make_tensor_value_info(
        name, onnx.TensorProto.FLOAT, shapes[name]) for name in VECTOR_INPUTS]
    del proto.graph.input[:]
    proto.graph.input.extend(ordered)


def _export(module: nn.Module, inputs: tuple[Tensor, ...], path: Path, input_names: list[str],
            output_names: list[str], axes: dict[str, dict[int, str]]) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        torch.onnx.export(module, inputs, str(path), dynamo=False, opset_version=OPSET,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes=axes, do_constant_folding=True)


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
