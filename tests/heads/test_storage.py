"""heads.storage: save then load gives the same predictions; bad configs and a trained backbone."""

from __future__ import annotations

import copy
import hashlib
import json
import re

import pytest
import torch
from headkit import fresh_model, words_of

from heads.storage import load_model, save_model
from heads.tasks import TASKS
from minilm.weights import WeightsError, read_safetensors


@pytest.fixture(scope="module")
def stock_sha(encoder) -> str:
    return encoder.checkpoint.sha256


def test_save_then_load_gives_identical_predictions(tmp_path, encoder, stock_sha):
    model = fresh_model(encoder)
    with torch.no_grad():
        for p in model.heads.parameters():
            p.add_(torch.randn_like(p)).copy_(p.half())  # weights that float16 holds exactly, as a saved model has
    save_model(model, tmp_path, backbone_sha256=stock_sha, backbone_trained=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "heads.safetensors"]
    stored = read_safetensors(tmp_path / "heads.safetensors")
    assert {v.dtype for v in stored.values()} == {torch.float16, torch.bool}  # the CRF's masks stay bool
    loaded, config = load_model(tmp_path, copy.deepcopy(encoder.model), stock_sha)
    assert config["backbone"] == {"sha256": stock_sha, "file": None}
    ids, mask, words = words_of(encoder, ["Save me, Anna.", "And load me again, please."])
    a, b = model(ids, mask, words), loaded(ids, mask, words)
    assert set(a.logits) == set(TASKS) and all(torch.equal(a.logits[k], b.logits[k]) for k in a.logits)
    # a folder saved before BiLSTM, with nn.LSTM(bidirectional=True)'s tensor names, loads to the same model
    from safetensors.torch import save_file

    old_names = {
        re.sub(
            r"\.lstm\.(left_to_right|right_to_left)\.(\w+)",
            lambda m: f".lstm.{m[2]}" + ("_reverse" if m[1] == "right_to_left" else ""),
            k,
        ): v
        for k, v in stored.items()
    }
    assert "ner.lstm.weight_hh_l0_reverse" in old_names and len(old_names) == len(stored)
    save_file(old_names, tmp_path / "heads.safetensors")
    config = json.loads((tmp_path / "config.json").read_text())
    config["heads_sha256"] = hashlib.sha256((tmp_path / "heads.safetensors").read_bytes()).hexdigest()
    (tmp_path / "config.json").write_text(json.dumps(config))
    older, _ = load_model(tmp_path, copy.deepcopy(encoder.model), stock_sha)
    c = older(ids, mask, words)
    assert all(torch.equal(a.logits[k], c.logits[k]) for k in a.logits)


def test_a_config_with_bad_head_options_is_one_clear_error(tmp_path, encoder, stock_sha):
    save_model(fresh_model(encoder), tmp_path, backbone_sha256=stock_sha, backbone_trained=False)
    good = json.loads((tmp_path / "config.json").read_text())
    cases = [
        ("layers", None, "older heads.train"),  # an entry of the first, linear heads: no "layers"
        ("lstm", "256", "invalid head options lstm='256'"),
        ("pool", "max", "invalid head options pool='max'"),
        ("dropout", None, "invalid head options dropout=None"),
        ("bidirectional", True, "does not know"),
    ]
    for key, value, message in cases:
        config = copy.deepcopy(good)
        entry = config["tasks"][0]
        if value is None and key == "layers":
            del entry[key]
        else:
            entry[key] = value
        (tmp_path / "config.json").write_text(json.dumps(config))
        with pytest.raises(WeightsError, match=message):
            load_model(tmp_path, encoder.model, stock_sha)  # refused before the model is built or filled


def test_a_trained_backbone_is_saved_and_its_hash_checked(tmp_path, encoder, stock_sha):
    model = fresh_model(encoder)
    with torch.no_grad():
        model.bert.encoder.layer[5].output.dense.bias.add_(0.01)
    save_model(model, tmp_path, backbone_sha256=stock_sha, backbone_trained=True)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["backbone"]["file"] == "backbone.safetensors" and config["backbone"]["base_sha256"] == stock_sha
    loaded, _ = load_model(tmp_path, copy.deepcopy(encoder.model), stock_sha)
    assert torch.equal(loaded.bert.encoder.layer[5].output.dense.bias, model.bert.encoder.layer[5].output.dense.bias)
    data = bytearray((tmp_path / "backbone.safetensors").read_bytes())
    data[-10] ^= 1
    (tmp_path / "backbone.safetensors").write_bytes(bytes(data))
    with pytest.raises(Exception, match="sha256 mismatch"):
        load_model(tmp_path, copy.deepcopy(encoder.model), stock_sha)
