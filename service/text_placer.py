"""Text placer: an item's text -> its vector in the model's space, with the artifact's graphs.

Stage: PUT /items/{id} (issue 20), and at load for the items PUT before. Reads what the
exporter wrote for a model trained with item text (`Manifest.text_model`,
training/text/export.py): the sentence encoder (MiniLM: `text_encoder.onnx` run by
onnxruntime on ids from `tokenizer.json` read by `tokenizers`; hashing: `models/text_hashing.py`,
the numpy code training ran) and the learned projection `text_projection.onnx`. The vector is
the one training would have exported for a text-only item. No torch, no training code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models import artifact as art
from models.text_hashing import HASHING_PREFIX, HashingEncoder
from service.errors import ArtifactRejectedError

__all__ = ["OnnxSentenceEncoder", "TextPlacer"]


class OnnxSentenceEncoder:
    """MiniLM from its exported graph: texts -> `[T, D]` float32, L2-normalised."""

    def __init__(self, graph: Path, tokenizer: Path, max_tokens: int, threads: int = 0) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.no_padding()  # padded here, to the longest text of the call
        self.tokenizer.enable_truncation(max_length=max_tokens)
        self.session = _session(graph, threads)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        encoded = self.tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encoded)
        ids = np.zeros((len(texts), width), np.int64)  # [T, W], 0 = [PAD]
        mask = np.zeros((len(texts), width), np.int64)
        for row, e in enumerate(encoded):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        (vecs,) = self.session.run(["text_vecs"], {"input_ids": ids, "attention_mask": mask})
        return np.asarray(vecs, np.float32)


class TextPlacer:
    """Places items by their text as training placed its text-only items."""

    def __init__(self, encoder: OnnxSentenceEncoder | HashingEncoder,
                 projection: ort.InferenceSession, info: art.TextModelInfo) -> None:
        self.encoder = encoder
        self.projection = projection
        self.info = info

    @classmethod
    def load(cls, vdir: Path, info: art.TextModelInfo, threads: int = 0) -> TextPlacer:
        """The placer of a version directory; `ArtifactRejectedError` if its files fail."""
        try:
            encoder: OnnxSentenceEncoder | HashingEncoder
            if info.encoder == "hashing":
                encoder = HashingEncoder(int(info.encoder_name.removeprefix(HASHING_PREFIX)))
            else:
                if info.text_encoder is None or info.tokenizer is None:
                    raise ValueError("the manifest names no text_encoder or tokenizer file")
                encoder = OnnxSentenceEncoder(vdir / info.text_encoder, vdir / info.tokenizer,
                                              info.max_tokens or 256, threads)
            placer = cls(encoder, _session(vdir / info.projection, threads), info)
            placer.place(["smoke test"])  # a graph that loads but cannot run is refused
        except Exception as exc:  # noqa: BLE001 - ORT and tokenizers raise their own types
            raise ArtifactRejectedError(
                f"artifact {vdir.name}: its text model ({info.encoder}) does not load: {exc}"
            ) from exc
        return placer

    def place(self, texts: Sequence[str]) -> np.ndarray:
        """Item vectors `[T, d]` float32 of non-blank texts."""
        text_vecs = self.encoder.encode(texts)  # [T, D]
        (vecs,) = self.projection.run(["item_vecs"], {"text_vecs": text_vecs})
        return np.ascontiguousarray(vecs, np.float32)


def _session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
