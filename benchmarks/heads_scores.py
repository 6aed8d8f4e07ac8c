"""A heads model scored as a user meets it: the full test sets as raw text through heads.predict.

    python benchmarks/heads_scores.py                 # the shipped weights/heads/
    python benchmarks/heads_scores.py runs/probe      # a model saved by python -m heads.train

TREC and SST-2: accuracy of the predicted labels. CoNLL-2003: entity F1 of the predicted character spans
on each test sentence joined by single spaces (heads.predictor.raw_text_scores). Also prints the record
for the sentence of issue 15, "Angela Merkel met Emmanuel Macron in Berlin on Tuesday."
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from machine import cpu_model

from heads.predictor import MultiTaskPredictor, raw_text_scores
from heads.tasks import read_split
from heads.training import DEFAULT_DATA_DIR

EXAMPLE = "Angela Merkel met Emmanuel Macron in Berlin on Tuesday."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default=None, help="a heads.train folder (default: weights/heads)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--limit", type=int, default=0, help="score the first N test items of each set (0: all)")
    args = parser.parse_args()
    predictor = MultiTaskPredictor.from_folder(args.model)
    print(f"CPU: {cpu_model()}; model {args.model or 'weights/heads'}")
    print("| test set | items | score | seconds |\n|---|---|---|---|")
    for task, name in (("question_type", "TREC accuracy"), ("sentiment", "SST-2 accuracy"), ("ner", "CoNLL-2003 F1")):
        examples = read_split(task, "test", args.data_dir)[: args.limit or None]
        start = time.perf_counter()
        score, _ = raw_text_scores(predictor, task, examples)
        print(f"| {name} | {len(examples)} | {score:.2f} | {time.perf_counter() - start:.1f} |", flush=True)
    print("\n" + json.dumps(predictor.predict([EXAMPLE])[0], ensure_ascii=False))


if __name__ == "__main__":
    main()
