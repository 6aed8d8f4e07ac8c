"""docs/walkthrough-heads.md must match what docs/make_walkthrough_heads.py writes today (timings masked),
and the page's hand-made steps must be the library's: Viterbi is CRF.decode, the entities are
MultiTaskPredictor.predict's, the embedding is SentenceEncoder.encode's."""

from __future__ import annotations

import pytest
import torch

from conftest import ROOT, docs_module


@pytest.fixture(scope="module")
def generator():
    return docs_module("make_walkthrough_heads")


@pytest.fixture(scope="module")
def predictor():
    from heads.predictor import MultiTaskPredictor

    return MultiTaskPredictor.from_folder()


@pytest.fixture(scope="module")
def walk(generator, predictor):
    return generator.trace(predictor)


@pytest.mark.slow  # the page times 33 heads.predict and 30 encode calls: about 20 s on 2 cores
def test_walkthrough_heads_is_up_to_date(generator, predictor, encoder):
    fresh = generator.render(predictor, encoder)
    diff = docs_module("make_walkthrough").stale_diff(ROOT / "docs" / "walkthrough-heads.md", fresh)
    assert not diff, (
        f"docs/walkthrough-heads.md is out of date: run .venv/bin/python docs/make_walkthrough_heads.py\n{diff}"
    )
    assert "{{" not in fresh and "<!--m-->" in fresh  # every placeholder filled; the timings marked


def test_the_step_by_step_viterbi_path_is_crf_decode(walk, predictor):
    crf = predictor.model.heads["ner"].crf
    (decoded,) = crf.decode(walk.emissions[None], torch.ones(1, len(walk.path), dtype=torch.bool))
    assert walk.path == decoded
    assert int(walk.final.argmax()) == walk.path[-1]  # the path ends in the best final score
    labels = predictor.model.tasks["ner"].labels
    assert labels[walk.argmax[0]] == "I-PER" and labels[walk.path[0]] == "B-PER"  # the difference the page shows


def test_the_entities_are_what_predict_returns(walk, predictor, generator):
    (record,) = predictor.predict([generator.TEXT])
    assert walk.entities == record["entities"]
    assert [(e["text"], e["label"]) for e in walk.entities] == [
        ("Angela Merkel", "PER"),
        ("Emmanuel Macron", "PER"),
        ("Berlin", "LOC"),
    ]


def test_the_embedding_of_the_pass_is_encodes(walk, encoder, generator):
    expected = torch.from_numpy(encoder.encode(generator.TEXT))
    assert torch.equal(walk.embedding, expected)


def test_the_sentence_steps_are_the_heads(walk, predictor):
    ids = walk.ids
    out = predictor.model(ids, torch.ones_like(ids))
    for name, steps in walk.sentence_steps.items():
        torch.testing.assert_close(steps["logits"], out.logits[name], rtol=0, atol=1e-5)
