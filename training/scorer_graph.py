"""Scorer export: trace a model kind's scoring graph (`models/graphs.py`) into `scorer.onnx`.

Stage: export. `models.registry.build_scorer_graph` builds the graph of a trained model's kind;
this module traces it with the I/O contract of `models/scorer_io.py` (names, dtypes, opset),
declaring every input even where a graph does not read it, and checks the ONNX file. The item
table is then made ONNX external data over the artifact's `tensors.npz` (`externalize_table`):
ONNX Runtime maps it from there, so the scorer holds no copy of its own and every worker shares
the page cache's (issue 21).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import external_data_helper, numpy_helper
from torch import Tensor

from models import scorer_io
from models.graphs import ScorerGraph
from models.mapped_tables import member_extent
from models.scorer_io import INPUTS, OPSET

__all__ = ["example_inputs", "export_onnx", "externalize_table", "finish_onnx", "io_spec"]

INLINE_MAX_BYTES = 256 * 2**20  # tensors torch wrote beside a large graph go back inside below this

log = logging.getLogger(__name__)


def io_spec(graph: ScorerGraph) -> tuple[dict[str, Any], dict[str, Any]]:
    """Input and output specs (dtype, shape with "B"/"C" dynamic) of a graph."""
    return scorer_io.io_spec(graph.dim, graph.l_max, graph.has_attention)


def example_inputs(graph: ScorerGraph, batch: int = 2, n_cand: int = 7,
                   seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random valid inputs (histories of varied length) for tracing and quick checks."""
    gen = torch.Generator().manual_seed(seed)
    user_vecs = torch.randn(batch, graph.dim, generator=gen) * graph.dim**-0.5
    hist_rows = torch.randint(0, graph.n_items, (batch, graph.l_max), generator=gen)
    lengths = torch.linspace(0, graph.l_max, batch).round().long()
    hist_mask = (torch.arange(graph.l_max)[None, :] < lengths[:, None]).float()
    cand_rows = torch.randint(0, graph.n_items, (batch, n_cand), generator=gen)
    return user_vecs, hist_rows, hist_mask, cand_rows


def export_onnx(graph: ScorerGraph, path: str | Path, opset: int = OPSET) -> Path:
    """Trace `graph` into an ONNX file with dynamic B and C and a fixed L_max.

    Uses the TorchScript exporter (`dynamo=False`): on torch 2.13 it emits plain Gather and
    MatMul nodes for this graph and no data-dependent shapes. Inputs the graph does not read
    (CML, LRML ignore the history) are declared anyway, so that every scorer takes the same
    four inputs.
    """
    path = Path(path)
    dynamic = scorer_io.dynamic_axes(graph.has_attention)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        torch.onnx.export(graph, example_inputs(graph), str(path), dynamo=False,
                          opset_version=opset, input_names=list(INPUTS),
                          output_names=list(graph.output_names), dynamic_axes=dynamic,
                          do_constant_folding=True)
    finish_onnx(path, graph)
    return path


def finish_onnx(path: Path, graph: ScorerGraph) -> None:
    """Declare every input, and check the file. A graph over 2 GB (an item table of 10M
    items) is written by torch with each tensor in a file of its own beside it and cannot be
    held in one protobuf message: it is read without that data, the small tensors are put
    back inside (their files removed), the large ones stay external (`externalize_table`
    then points the item table at `tensors.npz`), and the check reads the file by path."""
    proto = onnx.load(str(path), load_external_data=False)
    for init in proto.graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = external_data_helper.ExternalDataInfo(init)
        size = info.length or (path.parent / info.location).stat().st_size
        if size > INLINE_MAX_BYTES:
            continue
        external_data_helper.load_external_data_for_tensor(init, str(path.parent))
        init.data_location = onnx.TensorProto.DEFAULT
        del init.external_data[:]
        (path.parent / info.location).unlink(missing_ok=True)
    _declare_all_inputs(proto, graph)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))


def _declare_all_inputs(proto: onnx.ModelProto, graph: ScorerGraph) -> None:
    """Append the inputs the tracer dropped, in the order of INPUTS."""
    present = {i.name: i for i in proto.graph.input}
    types = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64}
    specs, _ = io_spec(graph)
    ordered = []
    for name in INPUTS:
        if name in present:
            ordered.append(present[name])
        else:
            spec = specs[name]
            ordered.append(onnx.helper.make_tensor_value_info(name, types[spec["dtype"]],
                                                              spec["shape"]))
    del proto.graph.input[:]
    proto.graph.input.extend(ordered)


def externalize_table(path: Path, name: str, table: np.ndarray, tensors_path: Path
                      ) -> dict[str, str]:
    """Point initializer `name` of the ONNX file at member `name` of `tensors_path` (same
    directory) instead of holding the bytes; returns {name: file} where it did, {} where the
    graph's table is not `table` bit for bit (then the file is left whole, and the export's
    parity check judges the graph as it is)."""
    proto = onnx.load(str(path), load_external_data=False)  # the table may be over 2 GB
    init = next((i for i in proto.graph.initializer if i.name == name), None)
    if init is None or tuple(init.dims) != table.shape:
        log.warning("%s has no initializer %r of shape %s: the table stays inside the graph",
                    path.name, name, table.shape)
        return {}
    was_beside = (external_data_helper.ExternalDataInfo(init).location
                  if init.data_location == onnx.TensorProto.EXTERNAL else None)
    if not np.array_equal(numpy_helper.to_array(init, str(path.parent)), table):
        if was_beside:
            raise ValueError(f"{path.name}: initializer {name!r} differs from "
                             f"{tensors_path.name}'s and lies in {was_beside}, outside the "
                             f"artifact's files")
        log.warning("%s: initializer %r differs from %s's; kept inside the graph", path.name,
                    name, tensors_path.name)
        return {}
    offset, length, shape, _ = member_extent(tensors_path, name)
    if shape != table.shape:
        raise ValueError(f"{tensors_path.name}:{name} is {shape}, the graph's table {table.shape}")
    init.ClearField("raw_data")
    init.ClearField("float_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    del init.external_data[:]
    for key, value in (("location", tensors_path.name), ("offset", str(offset)),
                       ("length", str(length))):
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))
    if was_beside and was_beside != tensors_path.name:
        (path.parent / was_beside).unlink(missing_ok=True)  # torch's copy of the table
    return {name: tensors_path.name}
