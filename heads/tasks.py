"""The three tasks, their data, and turning examples into training batches and scores.

    question_type  TREC coarse question classes (Task A)      sentence head, accuracy
    sentiment      SST-2 negative / positive                  sentence head, accuracy
    ner            CoNLL-2003 PER / ORG / LOC / MISC in IOB2  token head, entity-level micro F1 (strict spans)

NER examples are the CoNLL sentences as raw text (words joined by single spaces), tagged on the words
the tokenizer finds in that text: what heads.predict reads.

TREC has no dev split: a fixed, seeded 500 questions of its training file serve as dev, the same
in every run whatever --seed says, so runs stay comparable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from minilm.text.tokenization import SentenceTokenizer, length_sorted_batches, right_pad
from minilm.text.windows import text_offsets

from .data import CONLL_TAGS, SST2_LABELS, TREC_LABELS, SentenceExample, TokenExample, read_conll, read_sst2, read_trec
from .features import word_features
from .metrics import accuracy, entity_scores
from .model import Features, MultiTaskModel, TaskSpec, Words
from .ner import IGNORE_INDEX, joined_text, project_tags

TASKS = {
    # the heads heads.train builds by default (docs/experiments.md measures each part)
    "question_type": TaskSpec("question_type", "sentence", TREC_LABELS, hidden=512, lstm=128, pool="meanmax"),
    "sentiment": TaskSpec("sentiment", "sentence", SST2_LABELS, hidden=512, lstm=128, pool="meanmax"),
    "ner": TaskSpec("ner", "token", CONLL_TAGS, shapes=True, lstm=256, crf=True, dropout=0.4),
}
TREC_DEV_SIZE = 500
TREC_DEV_SEED = 1234


def read_split(task: str, split: str, data_dir: Path) -> list[SentenceExample] | list[TokenExample]:
    """Examples of one split ("train", "dev" or "test") of a task, from ../shared/data's layout."""
    if task == "question_type":
        if split == "test":
            return read_trec(data_dir / "trec" / "test.txt")
        train = read_trec(data_dir / "trec" / "train.txt")
        if len(train) <= TREC_DEV_SIZE:
            raise ValueError(
                f"{data_dir / 'trec' / 'train.txt'} holds {len(train)} questions; more than {TREC_DEV_SIZE} are needed "
                f"(a fixed {TREC_DEV_SIZE} are the dev split)"
            )
        dev_rows = set(random.Random(TREC_DEV_SEED).sample(range(len(train)), TREC_DEV_SIZE))
        return [ex for i, ex in enumerate(train) if (i in dev_rows) == (split == "dev")]
    if task == "sentiment":
        return read_sst2(data_dir / "sst2" / f"{split}.txt")
    if task == "ner":
        return read_conll(data_dir / "conll2003" / f"{split}.txt")
    raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")


@dataclass
class Encoded:
    """One task split, tokenized as heads.predict tokenizes raw text: token ids (with [CLS]/[SEP]) and labels.

    Token tasks work on the words the tokenizer finds in the raw text (a CoNLL sentence joined by spaces,
    its tags carried onto those words by heads.ner.project_tags), so training and prediction see the same words.
    """

    task: TaskSpec
    ids: list[list[int]]
    labels: list[int] | list[list[int]]  # a label id per sentence, or per word
    starts: list[list[int]] | None = None  # token tasks: each word's first token position in ids
    shapes: list[torch.Tensor] | None = None  # token tasks: each word's shape features (W_i, F)
    gold: list | None = None  # sentence label ids, or word tag sequences

    def __len__(self) -> int:
        return len(self.ids)


def encode_examples(task: TaskSpec, examples: list, tokenizer: SentenceTokenizer) -> Encoded:
    if task.kind == "sentence":
        encodings, _ = tokenizer.encode([ex.text for ex in examples])
        labels = [task.labels.index(ex.label) for ex in examples]
        return Encoded(task, [e.ids for e in encodings], labels, gold=labels)
    texts = [joined_text(ex.words) for ex in examples]
    encodings, _ = tokenizer.encode([text for text, _ in texts])  # truncated: words past 254 pieces are left out
    starts, shapes, gold = [], [], []
    for (text, word_starts), example, encoding in zip(texts, examples, encodings):
        offsets = text_offsets(text, encoding, lowercased=tokenizer.lowercase)
        positions, features = word_features(text, encoding, offsets=offsets)
        starts.append(positions)
        shapes.append(features)
        gold.append(project_tags(word_starts, example.tags, [offsets[p][0] for p in positions]))
    labels = [[task.labels.index(t) for t in tags] for tags in gold]
    return Encoded(task, [e.ids for e in encodings], labels, starts, shapes, gold)


def batch_labels(data: Encoded, indices: list[int]) -> torch.Tensor:
    """(B,) label ids for a sentence task; (B, W) tag ids for a token task, IGNORE_INDEX on padding."""
    if data.task.kind == "sentence":
        return torch.tensor([data.labels[i] for i in indices], dtype=torch.long)
    return right_pad([data.labels[i] for i in indices], IGNORE_INDEX)[0]


def batch_words(data: Encoded, indices: list[int]) -> Words | None:
    """The Words of a batch of a token task (None for a sentence task)."""
    if data.starts is None:
        return None
    positions, mask = right_pad([data.starts[i] for i in indices])
    shapes, _ = right_pad([data.shapes[i] for i in indices])
    return Words(positions, mask.bool(), shapes)


@torch.no_grad()
def predict(
    model: MultiTaskModel, data: Encoded, cache: list[Features] | None, first_layer: int, batch_size: int = 64
) -> list:
    """Every example's prediction for its task, in input order: logits (K,) for a sentence task,
    the decoded tag ids of its words for a token task. From the cached frozen Features where given."""
    was_training = model.training
    model.eval()
    name = data.task.name
    out: list = [None] * len(data)
    for indices in length_sorted_batches([len(ids) for ids in data.ids], batch_size):
        words = batch_words(data, indices)
        if cache is None:
            ids, mask = right_pad([data.ids[i] for i in indices])
            logits = model(ids, mask, words).logits[name]
        else:
            below = Features.batch([cache[i] for i in indices])
            logits = model.forward_from_layer(below, first_layer, words, tasks=[name]).logits[name]
        if data.task.kind == "token":
            predicted, _ = model.heads[name].decode(logits, words.mask, scores=False)
        else:
            predicted = list(logits)
        for i, value in zip(indices, predicted):
            out[i] = value
    model.train(was_training)
    return out


def score(data: Encoded, predictions: list) -> float:
    """Accuracy for sentence tasks; entity-level micro F1 (CoNLL strict spans) for NER. Both as 0..100.

    The NER words are the raw-text words, each gold entity carried onto them whole, so an entity is
    right exactly when its character span and type are: the F1 of heads.predict's spans on the joined text.
    """
    if data.task.kind == "sentence":
        return 100 * accuracy([int(p.argmax()) for p in predictions], data.gold)
    predicted = [[data.task.labels[i] for i in path] for path in predictions]
    return 100 * entity_scores(predicted, data.gold)["f1"]
