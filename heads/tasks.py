"""The three tasks, their data, and turning examples into training batches and scores.

    question_type  TREC coarse question classes (Task A)      sentence head, accuracy
    sentiment      SST-2 negative / positive                  sentence head, accuracy
    ner            CoNLL-2003 PER / ORG / LOC / MISC in IOB2  token head, entity-level micro F1 (strict spans)

TREC has no dev split: a fixed, seeded 500 questions of its training file serve as dev, the same
in every run whatever --seed says, so runs stay comparable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from minilm.text.tokenization import SentenceTokenizer, length_sorted_batches, right_pad

from .data import CONLL_TAGS, SST2_LABELS, TREC_LABELS, SentenceExample, TokenExample, read_conll, read_sst2, read_trec
from .metrics import accuracy, entity_scores
from .model import MultiTaskModel, TaskSpec
from .ner import IGNORE_INDEX, align_labels, first_subtoken_predictions

TASKS = {
    "question_type": TaskSpec("question_type", "sentence", TREC_LABELS),
    "sentiment": TaskSpec("sentiment", "sentence", SST2_LABELS),
    "ner": TaskSpec("ner", "token", CONLL_TAGS),
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
    """One task split, tokenized: token ids (with [CLS]/[SEP]) and labels per example."""

    task: TaskSpec
    ids: list[list[int]]
    labels: list[int] | list[list[int]]  # a label id per sentence, or per token (IGNORE_INDEX off first sub-tokens)
    word_ids: list[list[int | None]] | None = None  # token tasks: to read predictions back per word
    gold: list | None = None  # sentence label ids, or word tag sequences

    def __len__(self) -> int:
        return len(self.ids)


def encode_examples(task: TaskSpec, examples: list, tokenizer: SentenceTokenizer) -> Encoded:
    if task.kind == "sentence":
        encodings, _ = tokenizer.encode([ex.text for ex in examples])
        labels = [task.labels.index(ex.label) for ex in examples]
        return Encoded(task, [e.ids for e in encodings], labels, gold=labels)
    encodings, _ = tokenizer.encode_words([list(ex.words) for ex in examples])
    word_ids = [e.word_ids for e in encodings]
    labels = [align_labels(w, [task.labels.index(t) for t in ex.tags]) for w, ex in zip(word_ids, examples)]
    return Encoded(task, [e.ids for e in encodings], labels, word_ids, gold=[list(ex.tags) for ex in examples])


def batch_labels(data: Encoded, indices: list[int], T: int) -> torch.Tensor:
    if data.task.kind == "sentence":
        return torch.tensor([data.labels[i] for i in indices], dtype=torch.long)
    padded, _ = right_pad([data.labels[i] for i in indices], IGNORE_INDEX)
    return padded[:, :T]


@torch.no_grad()
def predict_logits(
    model: MultiTaskModel, data: Encoded, states: list[torch.Tensor] | None, first_layer: int, batch_size: int = 64
) -> list[torch.Tensor]:
    """Every example's logits for its task, longest first in batches, returned in input order (unpadded)."""
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = [torch.empty(0)] * len(data)
    for indices in length_sorted_batches([len(ids) for ids in data.ids], batch_size):
        if states is None:
            ids, mask = right_pad([data.ids[i] for i in indices])
            logits = model(ids, mask).logits[data.task.name]
        else:
            x, mask = right_pad([states[i] for i in indices])
            logits = model.forward_from_layer(x, mask, first_layer).logits[data.task.name]
        for row, i in enumerate(indices):
            out[i] = logits[row, : len(data.ids[i])] if data.task.kind == "token" else logits[row]
    model.train(was_training)
    return out


def score(data: Encoded, logits: list[torch.Tensor]) -> float:
    """Accuracy for sentence tasks; entity-level micro F1 (CoNLL strict spans) for NER. Both as 0..100."""
    if data.task.kind == "sentence":
        return 100 * accuracy([int(l.argmax()) for l in logits], data.gold)
    predicted = []
    for word_ids, gold_tags, l in zip(data.word_ids, data.gold, logits):
        label_ids = first_subtoken_predictions(word_ids, l.argmax(-1).tolist(), num_words=len(gold_tags))
        predicted.append([data.task.labels[i] for i in label_ids])
    return 100 * entity_scores(predicted, data.gold)["f1"]
