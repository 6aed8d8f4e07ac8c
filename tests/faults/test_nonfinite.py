"""Nothing non-finite passes: a NaN or an infinity in the model's output is an error, never a vector.

Damaged weights (a NaN in a --no-verify checkpoint), a zero int8 scale or a float16 overflow gave NaN
vectors with status 0: `--format jsonl` wrote `[nan, ...]`, which is not JSON, and the server answered
`null` embeddings while /health said ok. The checkpoint checks refuse the damage they can see at load
(tests/faults/test_checkpoints.py); this guard, at the end of every encode, catches whatever is left.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from minilm import SentenceEncoder
from minilm.encoders.sentence_encoder import NonFiniteOutput


@pytest.fixture
def damaged(tiny_checkpoint) -> SentenceEncoder:
    """The tiny model with one NaN in layer 1's feed-forward output weights, as a damaged file would hold it."""
    encoder = SentenceEncoder.from_pretrained(str(tiny_checkpoint), verify=False)
    with torch.no_grad():
        encoder.model.encoder.layer[1].output.dense.weight[3, 5] = float("nan")
    return encoder


def test_a_nan_in_the_output_is_an_error_naming_the_text(damaged, tiny_encoder):
    texts = ["First.", "Second text.", "Third."]
    assert np.isfinite(tiny_encoder.encode(texts)).all()  # the same texts, undamaged: finite
    with pytest.raises(NonFiniteOutput, match=r"^the model gave NaN or infinite values for text 0 \(dtype float32\)"):
        damaged.encode(texts)
    with pytest.raises(NonFiniteOutput):
        damaged.encode_encodings(damaged.tokenizer.encode(texts)[0])  # the server's path too


def test_heads_that_hold_nan_are_not_saved(tmp_path: Path, encoder):
    """heads.train --lr-heads nan saved all-NaN heads with status 0; save_model refuses them, whatever made them."""
    from heads.model import MultiTaskModel
    from heads.storage import save_model
    from heads.tasks import TASKS

    model = MultiTaskModel(encoder.model, [TASKS["sentiment"]])
    with torch.no_grad():
        next(model.heads.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match=r"^the sentiment\.\S+ weights hold NaN or infinity"):
        save_model(model, tmp_path / "m", backbone_sha256="0" * 64, backbone_trained=False)
    assert not (tmp_path / "m").exists()


def test_a_nan_score_is_not_printed_as_json():
    from heads.predict import json_line

    assert json.loads(json_line({"text": "a", "sentiment": {"label": "positive", "score": 0.5}}))
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        json_line({"text": "a", "sentiment": {"label": "positive", "score": float("nan")}})


def test_shards_name_the_file_line_of_a_text_with_non_finite_output(tmp_path: Path, damaged):
    """The shard writer said "text 39" (its place in the window); it names the file and line."""
    from minilm.corpus.shards import CorpusSettings, embed_corpus

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\nSecond line.\nThird line.\n", encoding="utf-8")
    settings = CorpusSettings(skip_bad_lines=True)  # the blank line 1 is skipped: text 0 is line 2
    with pytest.raises(NonFiniteOutput, match=rf"^the model gave NaN or infinite values for {corpus}:2 \(dtype"):
        embed_corpus(damaged, corpus, tmp_path / "out", settings)
