"""Scores for the heads: accuracy for sentence labels, CoNLL entity F1 for NER.

`entity_scores` reproduces conlleval, the CoNLL-2000/2003 shared-task script (and seqeval's default
mode, which follows it): entities are chunked with conlleval's rules (`bio_to_spans`), an entity is
correct only when its type, start and end all match a gold entity, and precision, recall and F1 are
micro-averaged over all entities of all sentences.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from .ner import bio_to_spans


def accuracy(predicted: Sequence[Any], gold: Sequence[Any]) -> float:
    """Fraction of positions where predicted equals gold. Raises on different lengths or no items."""
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions but {len(gold)} gold labels")
    if not gold:
        raise ValueError("accuracy of no examples is undefined")
    return sum(p == g for p, g in zip(predicted, gold)) / len(gold)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0  # conlleval and seqeval report 0 for an empty denominator


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    precision, recall = _ratio(correct, predicted), _ratio(correct, gold)
    f1 = _ratio(2 * correct, predicted + gold)  # = 2PR / (P + R), without dividing 0 by 0 when nothing matches
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_scores(predicted_tags: Sequence[Sequence[str]], gold_tags: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Entity-level micro precision/recall/F1 with strict span matching, over sentences of IOB2 tags.

    Returns {"precision", "recall", "f1": floats in [0, 1]; "correct", "predicted", "gold": entity
    counts; "per_type": {TYPE: the same six keys for that entity type}}. Types are those seen in
    either gold or predicted tags.
    """
    if len(predicted_tags) != len(gold_tags):
        raise ValueError(f"{len(predicted_tags)} predicted sentences but {len(gold_tags)} gold sentences")
    correct: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    gold: Counter[str] = Counter()
    for i, (pred_sentence, gold_sentence) in enumerate(zip(predicted_tags, gold_tags)):
        if len(pred_sentence) != len(gold_sentence):
            raise ValueError(f"sentence {i}: {len(pred_sentence)} predicted tags but {len(gold_sentence)} gold tags")
        # Spans are chunked per sentence, so an entity never runs across a sentence boundary.
        pred_spans, gold_spans = set(bio_to_spans(pred_sentence)), set(bio_to_spans(gold_sentence))
        predicted.update(kind for kind, _, _ in pred_spans)
        gold.update(kind for kind, _, _ in gold_spans)
        correct.update(kind for kind, _, _ in pred_spans & gold_spans)  # same type, start and end
    per_type = {
        kind: {
            **_prf(correct[kind], predicted[kind], gold[kind]),
            "correct": correct[kind],
            "predicted": predicted[kind],
            "gold": gold[kind],
        }
        for kind in sorted(predicted.keys() | gold.keys())
    }
    totals = sum(correct.values()), sum(predicted.values()), sum(gold.values())
    return {**_prf(*totals), "correct": totals[0], "predicted": totals[1], "gold": totals[2], "per_type": per_type}


def span_scores(
    predicted: Sequence[Sequence[tuple[str, int, int]]], gold: Sequence[Sequence[tuple[str, int, int]]]
) -> dict[str, float]:
    """Micro precision/recall/F1 of (type, start, end) entity spans per text, any unit of offsets
    (heads.predict's character offsets). An entity counts only when all three match, as in entity_scores."""
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted texts but {len(gold)} gold texts")
    correct = sum(len(set(p) & set(g)) for p, g in zip(predicted, gold))
    return _prf(correct, sum(len(set(p)) for p in predicted), sum(len(set(g)) for g in gold))
