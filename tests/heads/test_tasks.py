"""heads.tasks: a CoNLL sentence becomes the raw text heads.predict sees, with its tags carried over."""

from __future__ import annotations

from heads.data import TokenExample
from heads.features import SHAPE_IDS
from heads.ner import bio_to_spans
from heads.tasks import TASKS, encode_examples


def test_ner_examples_are_raw_text_words_with_the_tags_carried_over(encoder):
    """A CoNLL sentence becomes the raw text heads.predict would see; "U.S." is four words there."""
    example = TokenExample(("U.S.", "troops", "left", "Kabul", "."), ("B-LOC", "O", "O", "B-LOC", "O"))
    data = encode_examples(TASKS["ner"], [example], encoder.tokenizer)
    assert data.gold == [["B-LOC", "I-LOC", "I-LOC", "I-LOC", "O", "O", "B-LOC", "O"]]
    assert len(data.starts[0]) == len(data.labels[0]) == 8 and data.starts[0][0] == 1  # after [CLS]
    first_word_shape = data.shapes[0][0]
    assert first_word_shape[SHAPE_IDS["X"]] == 1  # "U" of "U.S." read through the offsets
    spans = bio_to_spans(data.gold[0])
    assert spans == [("LOC", 0, 4), ("LOC", 6, 7)]
