#!/usr/bin/env bash
# Every training run behind docs/experiments.md, then its tables.
#
#   bash benchmarks/heads_experiments.sh [RUNS_DIR]      # default runs/ (git-ignored)
#
# Each run is `python -m heads.train ... --eval-test`; its JSON summary (dev and test scores, wall
# time, peak RSS) lands in RUNS_DIR/NAME.json and its model in RUNS_DIR/NAME/. A finished run is
# not repeated, so the script can be stopped and started again. Seed 0 throughout.
# Q1-Q3 were measured with the first, linear heads; LINEAR builds them again (the default heads are
# the shipped frozen-backbone ones of benchmarks/heads_ablation.py). Since issue 15 NER trains and is
# scored on the CoNLL sentences as raw text, so its F1 can differ a little from the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
R="${1:-runs}"
mkdir -p "$R"
# The heads and the training these runs were measured with: linear heads, and the raw weights of the best
# dev epoch (--ema 0; weight averaging came later, with the frozen-backbone heads).
LINEAR=(--layers last --sentence-lstm 0 --sentence-pool mean --sentence-hidden 0 --no-ner-shapes --ner-lstm 0 --no-ner-crf --dropout 0.1 --ema 0)

run() {
  local name=$1; shift
  if [ -s "$R/$name.json" ]; then echo "== $name: done already" >&2; return; fi
  echo "== $name: python -m heads.train $*" >&2
  "$PY" -m heads.train --eval-test --quiet --seed 0 --force "${LINEAR[@]}" --output "$R/$name" "$@" > "$R/$name.json.tmp"
  mv "$R/$name.json.tmp" "$R/$name.json"
}

# Q1: what to freeze (all three tasks, proportional sampling)
run q1_frozen   --freeze backbone --epochs 30 --lr-heads 3e-3
run q1_full     --freeze none     --epochs 2
run q1_top2     --freeze layers:4 --epochs 2
# Q1b: train NER after the question classifier, with the classifier head frozen
run trec_only          --tasks question_type --freeze none --epochs 2
run forget_frozen_bb   --init-from "$R/trec_only" --tasks ner --freeze-heads question_type --freeze backbone --epochs 30 --lr-heads 3e-3
run forget_unfrozen_bb --init-from "$R/trec_only" --tasks ner --freeze-heads question_type --freeze none --epochs 1
# Q2: separate single-task models (trec_only above is the question-type one) against q1_full
run sentiment_only --tasks sentiment --freeze none --epochs 2
run ner_only       --tasks ner       --freeze none --epochs 2
# Q3: NER limited to 500 training sentences; TREC and SST-2 keep all their data.
# The top two blocks train (layers:4), to fit five runs into the 2-core CPU budget.
run q3_proportional --limit ner=500 --freeze layers:4 --epochs 2 --sampling proportional
run q3_uniform      --limit ner=500 --freeze layers:4 --epochs 2 --sampling uniform
run q3_temp2        --limit ner=500 --freeze layers:4 --epochs 2 --sampling temperature --temperature 2
run q3_temp5        --limit ner=500 --freeze layers:4 --epochs 2 --sampling temperature --temperature 5
run q3_lossweight5  --limit ner=500 --freeze layers:4 --epochs 2 --sampling proportional --loss-weight ner=5
# With one task per batch, AdamW plus gradient-norm clipping can cancel a loss weight; without clipping:
run q3_proportional_noclip --limit ner=500 --freeze layers:4 --epochs 2 --sampling proportional --max-grad-norm 0
run q3_lossweight5_noclip  --limit ner=500 --freeze layers:4 --epochs 2 --sampling proportional --loss-weight ner=5 --max-grad-norm 0
# What a further epoch gives the fully fine-tuned multi-task model (continues q1_full at a lower rate)
run q1_full_more --init-from "$R/q1_full" --freeze none --epochs 1 --lr-backbone 2e-5 --lr-heads 2e-4

"$PY" benchmarks/heads_inference.py --multi "$R/q1_full" --single "$R/trec_only" "$R/sentiment_only" "$R/ner_only" > "$R/q2_inference.json"
"$PY" benchmarks/heads_report.py "$R"
