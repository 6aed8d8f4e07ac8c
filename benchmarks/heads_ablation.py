"""What each part of the frozen-backbone heads is worth: one heads.train cache, one training run per row.

    python benchmarks/heads_ablation.py                    # rows a-e, the shipped recipe's settings
    python benchmarks/heads_ablation.py --rows a,b --epochs 2

The encoder is frozen throughout, so its states are computed once (heads.train's cache_frozen) and every
row trains its heads on the same cache, with the shipped command's settings (README). The rows add, in turn:
    a  linear probe: the last layer; sentence heads mean-pool and end in one linear layer; NER is a linear
       layer on each word's first sub-token, argmax decoding
    b  + layer mix: every head reads a learned ScalarMix of the 7 hidden states
    c  + casing: the NER head gets each word's shape from the raw text (heads.features)
    d  + contextual layer: a BiLSTM over the tokens (sentence heads, 128 a direction; then mean and max
       pooling and an MLP of 512) and over the words (NER, 256 a direction)
    e  + CRF: NER decodes with an IOB2-constrained CRF; this row is the shipped heads
Scores are heads.train's test scores: accuracy, and for NER the entity F1 on the raw-text words, which
equals the F1 of heads.predict's character spans (tests/heads/test_model.py checks the two agree).
Prints the CPU, the frozen pass's time, one Markdown row per configuration, and the JSON of every row.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from machine import GEMM_SHAPE, cpu_model, gemm_peak

from heads.freezing import apply_freezing
from heads.model import MultiTaskModel
from heads.tasks import TASKS
from heads.training import (
    TrainConfig,
    build,
    cache_frozen,
    evaluate,
    fit,
    head_spec,
    load_data,
)

LINEAR = {"layers": "last", "sentence_lstm": 0, "sentence_pool": "mean", "sentence_hidden": 0}
ROWS = {
    "a": ("linear probe", {**LINEAR, "ner_shapes": False, "ner_lstm": 0, "ner_crf": False}),
    "b": ("+ layer mix", {**LINEAR, "layers": "mix", "ner_shapes": False, "ner_lstm": 0, "ner_crf": False}),
    "c": ("+ casing", {**LINEAR, "layers": "mix", "ner_lstm": 0, "ner_crf": False}),
    "d": ("+ contextual layer (BiLSTM)", {"ner_crf": False}),
    "e": ("+ CRF (the shipped heads)", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", default="a,b,c,d", help="comma-separated rows among a-e (default: a-d; e is the shipped command)"
    )
    parser.add_argument("--epochs", type=int, default=8, help="as the shipped command (default: %(default)s)")
    parser.add_argument("--lr-heads", type=float, default=TrainConfig.lr_heads, help="(default: %(default)s)")
    parser.add_argument("--limit", type=int, default=0, help="training examples per task (0: all; for quick runs)")
    parser.add_argument(
        "--ema", type=float, default=TrainConfig.ema, help="weight-average decay, as heads.train (default: %(default)s)"
    )
    args = parser.parse_args()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    if unknown := [r for r in rows if r not in ROWS]:
        parser.error(f"unknown rows {unknown}; choose among {','.join(ROWS)}")
    print(
        f"CPU: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"fp32 GEMM peak {GEMM_SHAPE}: {gemm_peak(torch.float32):.0f} GFLOP/s",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as scratch:
        base = TrainConfig(
            output=Path(scratch),
            epochs=args.epochs,
            lr_heads=args.lr_heads,
            ema=args.ema,
            eval_test=True,
            limit=dict.fromkeys(TASKS, args.limit) if args.limit else {},
        )
        started = time.perf_counter()
        job = build(base)
        splits = load_data(base, job)
        states = cache_frozen(base, job, splits)
        print(f"frozen pass over every split: {time.perf_counter() - started:.0f} s", flush=True)
        results = {}
        for row in rows:
            label, changes = ROWS[row]
            config = replace(base, **changes)
            specs = [head_spec(config, TASKS[t]) for t in config.tasks]
            model = MultiTaskModel(job.model.bert, specs, job.model.pooling, config.seed, job.model.normalize)
            apply_freezing(model, job.n_frozen, [])
            row_job = replace(job, model=model)
            t0 = time.perf_counter()
            result = fit(config, row_job, splits, states)
            test = evaluate(config, row_job, splits["test"], states, "test")
            results[row] = {
                "row": label,
                "dev": result.best_dev,
                "test": test,
                "best_epochs": result.best_epochs,
                "epochs": config.epochs,
                "trainable_parameters": sum(p.numel() for p in model.heads.parameters()),
                "wall_seconds": round(time.perf_counter() - t0, 1),
            }
            print(json.dumps({row: results[row]}), flush=True)
    print("\n| row | heads | TREC acc | SST-2 acc | CoNLL F1 | head parameters | best epochs (of E) | training (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for row, r in results.items():
        t = r["test"]
        print(
            f"| {row} | {r['row']} | {t['question_type']:.2f} | {t['sentiment']:.2f} | {t['ner']:.2f} | "
            f"{r['trainable_parameters']:,} | {'/'.join(str(e) for e in r['best_epochs'].values())} "
            f"(of {r['epochs']}) | {r['wall_seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
