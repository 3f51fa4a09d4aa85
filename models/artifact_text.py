"""The artifact's records of item text: text-only items, and the text model (issue 20).

Part of the artifact format (`models/artifact.py` holds the `Manifest` that refers to these and
re-exports them): pydantic only, so that the serving image imports it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SCORER_VECTORS", "TEXT_ENCODER", "TEXT_PROJECTION", "TOKENIZER", "TextItemsInfo",
           "TextModelInfo"]

# Optional files of a model trained with item text (`Manifest.text_model`, issue 20): what the
# service needs to place an item from its text alone (PUT /items/{id}).
TEXT_ENCODER = "text_encoder.onnx"  # the pretrained sentence encoder (MiniLM), mean-pooled
TOKENIZER = "tokenizer.json"  # its tokenizer, read by the `tokenizers` package
TEXT_PROJECTION = "text_projection.onnx"  # text vector [B, D] -> item vector [B, d]
SCORER_VECTORS = "scorer_vectors.onnx"  # scorer.onnx with item vectors as inputs, not rows


class TextItemsInfo(BaseModel):
    """Items that have text and no interaction: rows `[first_row, first_row + count)`.

    Their vectors were projected from their text by a map learned in training (the sentence
    encoder named here); they are scored, indexed and recommendable like any other item, have
    popularity 0 and appear in no training history. The service needs no text for them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    first_row: int = Field(ge=0)
    count: int = Field(ge=0)
    encoder: str


class TextModelInfo(BaseModel):
    """How the service places an item from its text (PUT /items/{id}, issue 20).

    The text goes through the sentence encoder the model was trained with (`encoder`:
    `minilm`, run from `text_encoder` and `tokenizer` by onnxruntime and `tokenizers`; or
    `hashing`, a numpy function of `models/text_hashing.py`, no file), then the projection
    learned in training (`projection`, an ONNX graph `[B, text_dim] -> [B, d]`, clipped into the
    unit ball as trained rows are). `scorer` scores such items: `scorer.onnx`'s arithmetic with
    item vectors as inputs (`models/graphs.py` `VectorInputGraph`), since `scorer.onnx` holds
    the trained item table only. File names are keys of `Manifest.files` (checksummed).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoder: Literal["minilm", "hashing"]
    encoder_name: str  # as training named it: "all-MiniLM-L6-v2@…", "hashing-256"
    text_dim: int = Field(gt=0)
    max_tokens: int | None = None  # MiniLM: the tokens read per text (longer ones truncated)
    text_encoder: str | None = None  # file names; None for the hashing encoder
    tokenizer: str | None = None
    projection: str = TEXT_PROJECTION
    scorer: str = SCORER_VECTORS
