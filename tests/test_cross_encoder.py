"""Parity of minilm.CrossEncoder with sentence-transformers' CrossEncoder on cross-encoder layouts.

No reranker can be downloaded here, so each test builds one: a `transformers`
`BertForSequenceClassification` randomly initialised (seeded, with a wide initialisation so the
scores spread out) in the layer count of cross-encoder/ms-marco-MiniLM-L-{2,4,6,12}-v2, saved with
the real uncased WordPiece tokenizer files and the metadata each layout carries. Both libraries
load the same folder; predict and rank must agree to 1e-5 on STS-B sentence pairs and on pairs
long enough (300-600 tokens) to be truncated longest-first.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from minilm import CrossEncoder
from minilm.weights import WeightsError

from conftest import read_stsb
from test_model_families import save_small_bert

IDENTITY = "torch.nn.modules.linear.Identity"
SIGMOID = "torch.nn.modules.activation.Sigmoid"
LAYOUTS = {  # config.json extras and the sentence-transformers files of each layout
    # the ms-marco rerankers: config.json names Identity (scores are logits), tokenizer_config.json's 512
    "ms-marco-MiniLM-L-2-v2": dict(layers=2, config={"sbert_ce_default_activation_function": IDENTITY}),
    "ms-marco-MiniLM-L-4-v2": dict(layers=4, config={"sbert_ce_default_activation_function": IDENTITY}),
    "ms-marco-MiniLM-L-6-v2": dict(layers=6, config={"sbert_ce_default_activation_function": IDENTITY}),
    "ms-marco-MiniLM-L-12-v2": dict(layers=12, config={"sbert_ce_default_activation_function": IDENTITY}),
    # sentence-transformers 4.x kept the activation in config.json under "sentence_transformers"
    "saved by sentence-transformers 4": dict(
        layers=2, config={"sentence_transformers": {"activation_fn": IDENTITY, "version": "4.0.1"}}
    ),
    # as sentence-transformers 5+ saves a CrossEncoder: modules.json, its own config, a shorter length
    "saved by sentence-transformers 6": dict(
        layers=2,
        modules=[
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"}
        ],
        st_config={"activation_fn": SIGMOID, "model_type": "CrossEncoder", "prompts": {}, "default_prompt_name": None},
        sbert={"max_seq_length": 128, "transformer_task": "sequence-classification"},
    ),
    "no activation named: sigmoid": dict(layers=2, config={}),
    "three labels: identity": dict(layers=2, config={}, num_labels=3),
}


def write_cross_encoder(folder, checkpoint_dir, layout: dict, seed: int = 0):
    import transformers

    save_small_bert(
        transformers.BertForSequenceClassification,
        folder,
        checkpoint_dir,
        layout["layers"],
        seed,
        num_labels=layout.get("num_labels", 1),
        initializer_range=0.2,  # logits of a few units, not all ~0: a real spread of scores to compare
        **layout.get("config", {}),
    )
    if "edit_config" in layout:  # what transformers would not write itself (architectures, model_type)
        saved = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**saved, **layout["edit_config"]}))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "model_max_length": 512}))
    for name, key in (("modules.json", "modules"), ("config_sentence_transformers.json", "st_config")):
        if key in layout:
            (folder / name).write_text(json.dumps(layout[key]))
    if "sbert" in layout:
        (folder / "sentence_bert_config.json").write_text(json.dumps(layout["sbert"]))
    return folder


@pytest.fixture(scope="module")
def stsb_pairs() -> list[tuple[str, str]]:
    _, first, second = read_stsb("test")
    pairs = list(zip(first[:300], second[:300]))
    long = [" ".join(first[i : i + n]) for i, n in ((0, 25), (100, 35), (200, 45))]  # 300-600 tokens each
    return pairs + [(first[0], long[0]), (long[1], second[1]), (long[1], long[2])]  # truncated longest-first


def assert_close(got, expected) -> float:
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape
    error = float(np.abs(got - expected).max())
    assert error <= 1e-5, error
    return error


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_each_layout_equals_sentence_transformers(tmp_path, checkpoint_dir, stsb_pairs, name):
    import torch
    from sentence_transformers import CrossEncoder as Reference

    layout = LAYOUTS[name]
    folder = write_cross_encoder(tmp_path / "model", checkpoint_dir, layout)
    ours = CrossEncoder.from_pretrained(str(folder), verify=False)
    reference = Reference(str(folder), device="cpu")
    assert ours.max_length == reference.max_seq_length == layout.get("sbert", {}).get("max_seq_length", 512)
    assert ours.config.activation == type(reference.activation_fn).__name__
    error = assert_close(ours.predict(stsb_pairs), reference.predict(stsb_pairs))
    identity = torch.nn.Identity()
    logits = ours.predict(stsb_pairs, activation_fn=identity)
    logit_error = assert_close(logits, reference.predict(stsb_pairs, activation_fn=identity))
    print(f"{name}: scores {error:.1e}, logits {logit_error:.1e} off; logits std {logits.std():.3f}")
    assert logits.std() > 0.1  # the logits are spread, so agreement means something
    if ours.num_labels > 1:
        assert_close(ours.predict(stsb_pairs, apply_softmax=True), reference.predict(stsb_pairs, apply_softmax=True))
        return
    query, documents = stsb_pairs[0][0], [b for _, b in stsb_pairs[:60]] + [stsb_pairs[-1][1]]
    ranked, expected = ours.rank(query, documents, top_k=10), reference.rank(query, documents, top_k=10)
    # by text: STS-B repeats sentences ("A man is playing a guitar." is documents 17 and 55), and
    # the order of equal scores is float noise in sentence-transformers
    assert [documents[r["corpus_id"]] for r in ranked] == [documents[r["corpus_id"]] for r in expected]
    assert_close([r["score"] for r in ranked], [r["score"] for r in expected])
    assert ours.predict(stsb_pairs[0]).shape == ()  # one pair, one score, as sentence-transformers


@pytest.fixture(scope="module")
def tiny_reranker(tmp_path_factory, checkpoint_dir):
    layout = LAYOUTS["ms-marco-MiniLM-L-2-v2"] | {"layers": 1}
    return write_cross_encoder(tmp_path_factory.mktemp("ce") / "model", checkpoint_dir, layout)


def test_rank_orders_by_score_and_keeps_the_texts(tiny_reranker):
    reranker = CrossEncoder.from_pretrained(str(tiny_reranker), verify=False)
    documents = ["A man is playing a flute.", "A man plays the guitar.", "A dog runs.", "A man plays the guitar."]
    scores = reranker.predict([("A man is playing music.", d) for d in documents])
    ranked = reranker.rank("A man is playing music.", documents, return_documents=True)
    assert [r["corpus_id"] for r in ranked] == sorted(range(4), key=lambda i: -scores[i])
    assert [r["text"] for r in ranked] == [documents[r["corpus_id"]] for r in ranked]
    assert [r["score"] for r in ranked] == sorted(scores.tolist(), reverse=True)
    duplicates = [r["corpus_id"] for r in ranked if r["text"] == "A man plays the guitar."]
    assert duplicates == [1, 3]  # equal scores keep input order
    assert len(reranker.rank("q", documents, top_k=2)) == 2
    assert reranker.predict([]).shape == (0,)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (["just a text"], TypeError, r"pairs\[0\] is 'just a text', expected a pair of two texts"),
        ([("a", "b", "c")], TypeError, r"pairs\[0\] is .*expected a pair"),
        ([("a", 3)], TypeError, r"pairs\[0\]\[1\] is int, expected str"),
    ],
)
def test_malformed_pairs_are_named(tiny_reranker, bad, error, message):
    reranker = CrossEncoder.from_pretrained(str(tiny_reranker), verify=False)
    with pytest.raises(error, match=message):
        reranker.predict(bad)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"edit_config": {"architectures": ["BertModel"]}}, r"architectures \['BertModel'\] is not a cross-encoder"),
        (
            {"config": {"sbert_ce_default_activation_function": "my.module.Swish"}},
            "activation 'my.module.Swish' is not",
        ),
        ({"st_config": {"prompts": {"query": "q: "}}}, "cross-encoder prompts are not supported"),
        (
            {"modules": [{"type": "sentence_transformers.models.Transformer"}, {"type": "x.Dense"}]},
            r"modules \['Transformer', 'Dense'\] are not supported",
        ),
        ({"edit_config": {"model_type": "roberta"}}, "model_type='roberta' is not supported"),
    ],
)
def test_what_we_cannot_follow_is_refused_in_one_line(tmp_path, checkpoint_dir, change, message):
    layout = {"layers": 1, **change}
    folder = write_cross_encoder(tmp_path / "model", checkpoint_dir, layout)
    with pytest.raises(WeightsError, match=message) as refused:
        CrossEncoder.from_pretrained(str(folder), verify=False)
    assert "\n" not in str(refused.value)


def test_a_sentence_encoder_folder_is_not_a_cross_encoder(checkpoint_dir):
    with pytest.raises(WeightsError, match="is not a cross-encoder"):
        CrossEncoder.from_pretrained(str(checkpoint_dir))
