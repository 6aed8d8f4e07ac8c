"""Every pooling mode sentence-transformers has, against sentence-transformers itself.

Each case is a random-weight BERT (tests/conftest.py's tiny checkpoint) in the real
sentence-transformers layout, whose 1_Pooling/config.json asks for one mode, in the newer
"pooling_mode" style or the older boolean flags, with or without the Normalize module. Both
libraries load the same folder; the vectors must agree to 1e-6 over STS-B sentences and texts of
300-600 tokens (truncated at 256 by both).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from minilm import SentenceEncoder
from minilm.model.pooling import POOLING_MODES
from minilm.weights import POOLING_FLAGS

from conftest import write_tiny_checkpoint

FLAG_OF = {mode: flag for flag, mode in POOLING_FLAGS.items()}


def pooling_folder(tmp_path, checkpoint_dir, config: dict, normalize: bool):
    folder = write_tiny_checkpoint(tmp_path / "ckpt", checkpoint_dir)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **config}))
    if not normalize:
        modules = json.loads((folder / "modules.json").read_text())
        (folder / "modules.json").write_text(json.dumps([m for m in modules if not m["type"].endswith("Normalize")]))
    return folder


@pytest.fixture(scope="module")
def pooling_texts(stsb_sentences) -> list[str]:
    long_texts = [" ".join(stsb_sentences[i : i + n]) for i, n in ((0, 25), (40, 45))]  # about 300 and 600 tokens
    return stsb_sentences[:300] + long_texts + ["", "a"]


@pytest.mark.slow
@pytest.mark.parametrize("style, normalize", [("pooling_mode", True), ("flags", False)])
@pytest.mark.parametrize("mode", POOLING_MODES)
def test_each_pooling_mode_equals_sentence_transformers(
    tmp_path, checkpoint_dir, pooling_texts, mode, style, normalize
):
    from sentence_transformers import SentenceTransformer

    config = (
        {"pooling_mode": mode}
        if style == "pooling_mode"
        else {flag: flag == FLAG_OF[mode] for flag in FLAG_OF.values()}
    )
    folder = pooling_folder(tmp_path, checkpoint_dir, config, normalize)
    ours = SentenceEncoder.from_pretrained(str(folder), verify=False)
    assert (ours.config.pooling, ours.config.normalize) == (mode, normalize)
    reference = SentenceTransformer(str(folder), device="cpu")
    expected = reference.encode(pooling_texts, batch_size=32, convert_to_numpy=True)
    got = ours.encode(pooling_texts)
    assert np.abs(got - expected).max() <= 1e-6 * max(1.0, float(np.abs(expected).max()))
    packed = ours.use_packed().encode(pooling_texts)  # the server's path
    assert np.abs(packed - expected).max() <= 1e-6 * max(1.0, float(np.abs(expected).max()))


def test_a_config_with_no_mode_pools_by_mean_as_sentence_transformers_does(tmp_path, checkpoint_dir):
    folder = pooling_folder(tmp_path, checkpoint_dir, dict.fromkeys(FLAG_OF.values(), False), True)
    assert SentenceEncoder.from_pretrained(str(folder), verify=False).config.pooling == "mean"


@pytest.mark.parametrize(
    "config, message",
    [
        ({"pooling_mode": ["mean", "max"]}, r"pooling \['mean', 'max'\] is not supported.*concatenated"),
        ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}, r"pooling \['cls', 'mean'\]"),
        ({"pooling_mode": "attention"}, r"pooling \['attention'\] is not supported; one of mean, cls"),
        ({"pooling_mode": "mean", "include_prompt": "no"}, "include_prompt is 'no'"),
        ({"pooling_mode_cls_token": 1}, "pooling_mode_cls_token is 1; it must be true or false"),
    ],
)
def test_pooling_we_do_not_have_is_refused_in_one_line(tmp_path, checkpoint_dir, config, message):
    from minilm.weights import WeightsError

    folder = pooling_folder(tmp_path, checkpoint_dir, config, True)
    with pytest.raises(WeightsError, match=message):
        SentenceEncoder.from_pretrained(str(folder), verify=False)
