"""Markdown tables for docs/experiments.md from the JSON summaries that benchmarks/heads_experiments.sh wrote.

python benchmarks/heads_report.py runs
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(runs: Path, name: str) -> dict | None:
    path = runs / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def cell(run: dict | None, task: str, split: str = "test") -> str:
    if run is None or task not in run["scores"].get(split, {}):
        return "–"
    return f"{run['scores'][split][task]:.2f}"


def minutes(run: dict | None) -> str:
    return f"{run['wall_seconds'] / 60:.1f} min" if run else "–"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(runs: Path) -> None:
    r = {
        name: load(runs, name)
        for name in [
            "q1_frozen",
            "q1_top2",
            "q1_full",
            "trec_only",
            "forget_frozen_bb",
            "forget_unfrozen_bb",
            "sentiment_only",
            "ner_only",
            "q3_proportional",
            "q3_uniform",
            "q3_temp2",
            "q3_temp5",
            "q3_lossweight5",
            "q3_proportional_noclip",
            "q3_lossweight5_noclip",
            "q1_full_more",
        ]
    }
    scores = lambda run: [cell(run, "question_type"), cell(run, "sentiment"), cell(run, "ner")]  # noqa: E731
    print("### Q1: what to freeze (multi-task, all data, test sets)\n")
    print(
        table(
            ["trained", "trainable parameters", "TREC acc", "SST-2 acc", "CoNLL F1", "wall time (2 cores)", "peak RSS"],
            [
                [
                    label,
                    f"{run['trainable_parameters']:,}" if run else "–",
                    *scores(run),
                    minutes(run),
                    f"{run['peak_rss_mb']} MB" if run else "–",
                ]
                for label, run in (
                    ("heads only (backbone frozen)", r["q1_frozen"]),
                    ("top 2 blocks + heads", r["q1_top2"]),
                    ("everything", r["q1_full"]),
                    ("everything, + 1 epoch at lower rates", r["q1_full_more"]),
                )
            ],
        )
    )
    print("\n### Q1b: train NER after the question classifier, classifier head frozen (test sets)\n")
    before = cell(r["trec_only"], "question_type")
    rows = []
    for label, run in (("frozen", r["forget_frozen_bb"]), ("trained", r["forget_unfrozen_bb"])):
        after = cell(run, "question_type")
        lost = f"{float(before) - float(after):.2f}" if "–" not in (before, after) else "–"
        rows.append([label, before, after, lost, cell(run, "ner"), minutes(run)])
    print(
        table(
            [
                "backbone during NER training",
                "TREC acc before",
                "TREC acc after",
                "forgotten (points)",
                "CoNLL F1",
                "wall time",
            ],
            rows,
        )
    )
    print("\n### Q2: one multi-task model or three single-task models (test sets)\n")
    inference_path = runs / "q2_inference.json"
    inference = json.loads(inference_path.read_text()) if inference_path.is_file() else None
    singles = [r["trec_only"], r["sentiment_only"], r["ner_only"]]
    separate_scores = [
        cell(r["trec_only"], "question_type"),
        cell(r["sentiment_only"], "sentiment"),
        cell(r["ner_only"], "ner"),
    ]
    train_minutes = lambda runs_: (  # noqa: E731
        f"{sum(x['wall_seconds'] for x in runs_) / 60:.1f} min" if all(runs_) else "–"
    )
    rows = [
        ["one multi-task model", *scores(r["q1_full"]), train_minutes([r["q1_full"]])],
        ["three single-task models", *separate_scores, train_minutes(singles)],
    ]
    if inference:
        for row, side in zip(rows, ("multi", "separate")):
            row += [
                f"{inference[side]['parameters']:,}",
                f"{inference[side]['fp32_weights_mb']} MB",
                f"{inference[side]['seconds']:.2f} s "
                f"({inference[side]['encoder_passes']} pass{'es' if inference[side]['encoder_passes'] > 1 else ''})",
            ]
    print(
        table(
            [
                "model",
                "TREC acc",
                "SST-2 acc",
                "CoNLL F1",
                "training time",
                "parameters",
                "fp32 weights",
                f"all 3 predictions, {inference['sentences'] if inference else 1000} sentences",
            ],
            rows,
        )
    )
    print("\n### Q3: NER limited to 500 sentences, TREC and SST-2 in full (top 2 blocks + heads trained; test sets)\n")
    rows = []
    for label, run in (
        ("proportional", r["q3_proportional"]),
        ("uniform", r["q3_uniform"]),
        ("temperature T=2", r["q3_temp2"]),
        ("temperature T=5", r["q3_temp5"]),
        ("proportional, NER loss × 5", r["q3_lossweight5"]),
        ("proportional, no gradient clipping", r["q3_proportional_noclip"]),
        ("proportional, NER loss × 5, no gradient clipping", r["q3_lossweight5_noclip"]),
    ):
        share = f"{run['task_probabilities']['ner']:.3f}" if run else "–"
        rows.append([label, share, cell(run, "ner"), cell(run, "question_type"), cell(run, "sentiment"), minutes(run)])
    print(table(["sampling", "P(NER batch)", "CoNLL F1", "TREC acc", "SST-2 acc", "wall time"], rows))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs"))
