"""heads.predictor and the shipped heads: the exact embedding from the same pass, scores on raw text, entities and offsets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from heads.data import read_conll
from heads.metrics import entity_scores
from heads.predict import json_line
from heads.predictor import MultiTaskPredictor, raw_text_scores, shipped_heads
from heads.tasks import TASKS, encode_examples, predict, read_split, score
from minilm.base.textio import json_vector

from conftest import DATA_DIR, require_data


@pytest.fixture(scope="module")
def shipped():
    return MultiTaskPredictor.from_folder(shipped_heads())


SHIPPED_FLOORS = {"question_type": 90.0, "sentiment": 81.0, "ner": 83.0}


def test_predict_gives_the_exact_embedding_from_the_same_single_pass(shipped, encoder, stsb_sentences):
    """The point of frozen heads: one encoder pass per batch gives every prediction and the embedding
    that SentenceEncoder.encode gives (the shipped heads sit on the stock backbone)."""
    texts = stsb_sentences[:48]
    calls = []
    bert = shipped.model.bert
    parts = [("embeddings", bert.embeddings)] + [(f"block {i}", block) for i, block in enumerate(bert.encoder.layer)]
    hooks = [
        part.register_forward_hook(lambda module, args, output, name=name: calls.append((name, len(output))))
        for name, part in parts
    ]
    try:
        records = shipped.predict(texts, batch_size=16, with_embedding=True)
    finally:
        for hook in hooks:
            hook.remove()
    # the embeddings and each block ran once per batch of 16, in order, for every head and the embedding
    assert calls == [(name, 16) for name, _ in parts] * 3
    embeddings = np.array([r["embedding"] for r in records], dtype=np.float32)
    expected = encoder.encode(texts)
    assert embeddings.shape == expected.shape == (48, 384)
    assert np.abs(embeddings - expected).max() <= 1e-6
    assert "embedding" not in shipped.predict(texts[:1])[0]  # only when asked for
    # the JSON line (heads.predict --with-embedding) holds the same float32 values, written as minilm.embed writes them
    line, vector = json_line(records[0]), records[0]["embedding"]
    assert line.endswith(f', "embedding": {json_vector(vector)}}}')
    assert json.loads(line) == {**records[0], "embedding": [float(f"{v:.9g}") for v in vector]}
    assert np.array_equal(np.array(json.loads(line)["embedding"], dtype=np.float32), embeddings[0])  # exact


@pytest.mark.slow
@pytest.mark.parametrize("task", ["question_type", "sentiment", "ner"])
def test_shipped_heads_score_on_raw_text(shipped, task):
    require_data("")
    measured, _ = raw_text_scores(shipped, task, read_split(task, "test", DATA_DIR)[:500])
    print(f"shipped {task}: first 500 test items through heads.predict {measured:.2f}")
    assert measured >= SHIPPED_FLOORS[task]


@pytest.mark.slow
def test_raw_text_f1_equals_the_training_score_and_seqeval(shipped):
    """heads.train scores NER on the raw-text words with the gold tags carried onto them; heads.predict's
    character spans must give the same F1, and both the F1 seqeval gives on those word tags."""
    from seqeval.metrics import f1_score

    examples = read_conll(require_data("conll2003/test.txt"))[:300]
    by_spans, _ = raw_text_scores(shipped, "ner", examples)
    data = encode_examples(TASKS["ner"], examples, shipped.tokenizer)
    paths = predict(shipped.model, data, None, 0)
    predicted = [[TASKS["ner"].labels[i] for i in path] for path in paths]
    by_words = score(data, paths)
    assert 50 < by_spans < 100  # real, imperfect predictions
    assert by_words == pytest.approx(by_spans, abs=1e-9)
    assert entity_scores(predicted, data.gold)["f1"] == pytest.approx(f1_score(data.gold, predicted), abs=1e-9)


def test_merkel_and_macron_are_whole_people(shipped):
    """The sentence that found two PER entities in "Angela Merkel" with the old linear probes."""
    record = shipped.predict(["Angela Merkel met Emmanuel Macron in Berlin on Tuesday."])[0]
    found = [(e["text"], e["label"]) for e in record["entities"]]
    assert found == [("Angela Merkel", "PER"), ("Emmanuel Macron", "PER"), ("Berlin", "LOC")]


def test_character_offsets_point_at_the_entity_text(shipped):
    texts = [
        "Angela Merkel flew from Berlin to Washington on Monday .",
        "  Shares of  Microsoft and Google fell in New York.",
    ]
    for text, record in zip(texts, shipped.predict(texts)):
        assert record["entities"], text
        for entity in record["entities"]:
            assert text[entity["start"] : entity["end"]] == entity["text"]
            assert entity["label"] in {"PER", "ORG", "LOC", "MISC"} and 0 < entity["score"] <= 1
    found = {(e["text"], e["label"]) for e in shipped.predict(texts[:1])[0]["entities"]}
    assert ("Berlin", "LOC") in found


def test_windowing_finds_an_entity_after_token_300(shipped):
    filler = "the weather was mild and the day passed quietly . " * 35  # 350 word pieces
    text = filler + "Later , Angela Merkel flew to Berlin ."
    assert len(shipped.tokenizer.split([text])[0].ids) > 300
    record = shipped.predict([text])[0]
    found = {(e["text"], e["label"]) for e in record["entities"]}
    assert ("Berlin", "LOC") in found
    berlin = next(e for e in record["entities"] if e["text"] == "Berlin")
    assert berlin["start"] == text.index("Berlin") > len(filler)
    # the sentence heads still see the truncated first window
    assert record["question_type"] == shipped.predict([filler])[0]["question_type"]
