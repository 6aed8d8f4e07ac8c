"""Reading what sentence-transformers does around the backbone from a checkpoint's JSON files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minilm import SentenceEncoder
from minilm.model.encoder import BertConfig
from minilm.weights import WeightsError, read_sentence_config


def write_folder(tmp_path, pooling: dict, modules: list[str], sbert: dict | None = None):
    (tmp_path / "1_Pooling").mkdir(exist_ok=True)
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    entries = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (kind, path) in enumerate(modules)
    ]
    (tmp_path / "modules.json").write_text(json.dumps(entries))
    if sbert is not None:
        (tmp_path / "sentence_bert_config.json").write_text(json.dumps(sbert))
    return tmp_path


FLAGS = {
    "pooling_mode_cls_token": False,
    "pooling_mode_mean_tokens": False,
    "pooling_mode_max_tokens": False,
    "pooling_mode_mean_sqrt_len_tokens": False,
}
BASE = [("Transformer", ""), ("Pooling", "1_Pooling")]


@pytest.mark.parametrize(
    "flag, mode",
    [("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max")],
)
def test_pooling_flags(tmp_path, flag, mode):
    folder = write_folder(
        tmp_path,
        {**FLAGS, flag: True},
        BASE + [("Normalize", "2_Normalize")],
        {"max_seq_length": 128, "do_lower_case": True},
    )
    config = read_sentence_config(folder, BertConfig())
    assert (config.pooling, config.normalize, config.max_seq_length, config.do_lower_case) == (mode, True, 128, True)


def test_newer_pooling_mode_string_and_no_normalize(tmp_path):
    folder = write_folder(tmp_path, {"pooling_mode": "max"}, BASE)
    config = read_sentence_config(folder, BertConfig(max_position_embeddings=300))
    assert (config.pooling, config.normalize, config.max_seq_length) == (
        "max",
        False,
        300,
    )  # no sbert config: position limit


@pytest.mark.parametrize(
    "pooling, modules, message",
    [
        ({**FLAGS, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}, BASE, "several modes"),
        ({**FLAGS, "pooling_mode_mean_tokens": True}, BASE + [("Dense", "2_Dense")], "Dense"),
    ],
)
def test_unsupported_modules_are_named(tmp_path, pooling, modules, message):
    folder = write_folder(tmp_path, pooling, modules)
    with pytest.raises(WeightsError, match=message):
        read_sentence_config(folder, BertConfig())


def test_checkpoint_with_cls_pooling_and_no_normalize_is_followed(tmp_path, checkpoint_dir, encoder):
    """A copy of the real checkpoint whose configs ask for CLS pooling without Normalize."""
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "sentence_bert_config.json"):
        (tmp_path / name).symlink_to(checkpoint_dir / name)
    write_folder(tmp_path, {**FLAGS, "pooling_mode_cls_token": True}, BASE)
    with pytest.raises(
        WeightsError, match=r"modules.json: sha256 mismatch.*1_Pooling/config.json: sha256 mismatch.*--no-verify"
    ):
        SentenceEncoder.from_pretrained(
            str(tmp_path), verify=True
        )  # the stock weights, but their pooling files are changed
    cls_encoder = SentenceEncoder.from_pretrained(str(tmp_path), verify=False)
    texts = ["The configs decide the pooling.", "short"]
    expected = np.stack([tokens[0] for tokens in encoder.encode_tokens(texts)])
    np.testing.assert_allclose(cls_encoder.encode(texts), expected, atol=1e-6)


def test_unreadable_tokenizer_json_is_a_weights_error(tmp_path, checkpoint_dir):
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        (tmp_path / name).symlink_to(checkpoint_dir / name)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(WeightsError, match="tokenizer.json could not be read"):
        SentenceEncoder.from_pretrained(str(tmp_path), verify=False)


def test_non_bert_architecture_is_refused_in_one_line(tmp_path, tiny_checkpoint):
    """An MPNet or RoBERTa config.json would build a BERT with the wrong maths; it is refused by name."""
    for path in tiny_checkpoint.rglob("*"):
        if path.is_file():
            target = tmp_path / path.relative_to(tiny_checkpoint)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "mpnet"}))
    with pytest.raises(WeightsError, match=r"config.json: model_type='mpnet' is not supported") as refused:
        SentenceEncoder.from_pretrained(str(tmp_path), verify=False)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("kind", ["fast", "python"])
def test_non_wordpiece_tokenizer_is_refused_in_one_line(tmp_path, tiny_checkpoint, kind):
    """A BPE tokenizer.json (as RoBERTa's) would give other ids for every text; both tokenizers refuse it."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    for path in tiny_checkpoint.rglob("*"):
        if path.is_file() and path.name != "tokenizer.json":
            target = tmp_path / path.relative_to(tiny_checkpoint)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    bpe = Tokenizer(models.BPE({"[UNK]": 0, "a": 1, "b": 2, "ab": 3}, [("a", "b")], unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(WeightsError, match=r"tokenizer.json describes a (BPE|.*/BPE) tokenizer") as refused:
        SentenceEncoder.from_pretrained(str(tmp_path), verify=False, tokenizer=kind)
    assert "\n" not in str(refused.value)
