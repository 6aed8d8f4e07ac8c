"""Q2 of docs/experiments.md: one multi-task model against three single-task models, at prediction time.

    python benchmarks/heads_inference.py --multi runs/q1_full --single runs/trec_only runs/sentiment_only runs/ner_only

Times all three predictions for the same 1,000 real sentences (a third each from the TREC, SST-2 and
CoNLL-2003 test sets): one encoder pass for the multi-task model, three for the separate models.
Also counts parameters and their fp32 memory. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from heads.data import read_conll, read_sst2, read_trec
from heads.predict import MultiTaskPredictor
from heads.training import DEFAULT_DATA_DIR


def sentences(data_dir: Path, n: int) -> list[str]:
    third = n // 3
    trec = [ex.text for ex in read_trec(data_dir / "trec" / "test.txt")][:third]
    sst = [ex.text for ex in read_sst2(data_dir / "sst2" / "test.txt")][:third]
    conll = [" ".join(ex.words) for ex in read_conll(data_dir / "conll2003" / "test.txt")][: n - 2 * third]
    return trec + sst + conll


def timed(predictor: MultiTaskPredictor, texts: list[str], repeats: int) -> float:
    predictor.predict(texts[:64])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict(texts)
        best = min(best, time.perf_counter() - start)
    return best


def parameters(predictor: MultiTaskPredictor) -> int:
    return sum(p.numel() for p in predictor.model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--multi", required=True)
    parser.add_argument("--single", nargs="+", required=True)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    args = parser.parse_args()
    texts = sentences(Path(args.data_dir), args.n)
    multi = MultiTaskPredictor.from_folder(args.multi)
    singles = [MultiTaskPredictor.from_folder(folder) for folder in args.single]
    multi_seconds = timed(multi, texts, args.repeats)
    single_seconds = [timed(p, texts, args.repeats) for p in singles]
    result = {
        "sentences": len(texts),
        "threads": torch.get_num_threads(),
        "multi": {"seconds": round(multi_seconds, 2), "encoder_passes": 1, "parameters": parameters(multi)},
        "separate": {
            "seconds": round(sum(single_seconds), 2),
            "seconds_each": [round(s, 2) for s in single_seconds],
            "encoder_passes": len(singles),
            "parameters": sum(parameters(p) for p in singles),
        },
    }
    for side in ("multi", "separate"):
        result[side]["fp32_weights_mb"] = round(result[side]["parameters"] * 4 / 2**20, 1)
    result["speedup"] = round(result["separate"]["seconds"] / result["multi"]["seconds"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
