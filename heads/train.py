"""python -m heads.train: train task heads (and optionally the backbone) on one shared minilm encoder.

    python -m heads.train --output runs/heads          # the shipped heads' recipe is in the README
    python -m heads.train --tasks ner --ner-lstm 0 --no-ner-crf --output runs/probe   # a lighter NER head
    python -m heads.train --freeze layers:4 --sampling temperature --temperature 2 --limit ner=500 --output runs/q3
    python -m heads.train --init-from runs/trec --tasks ner --freeze-heads question_type --output runs/forget

What each option does, and the recipe of the shipped heads: heads/training.py's docstring (the library
this command parses options for) and docs/heads.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

from minilm.base.numbers import NumberError, parse_number
from minilm.cli import USER_ERRORS, ArgumentParser, number_option, run

from .data import DataFormatError
from .tasks import TASKS
from .training import NUMBER_OPTIONS, TrainConfig, train

# --------------------------------------------------------------------------- command line


def checked_option(field: str):
    """The argparse type of the option for TrainConfig's `field`: its NUMBER_OPTIONS range."""
    return number_option(**NUMBER_OPTIONS[field])


def parse_assignments(items: list[str], option: str, cast) -> dict[str, float]:
    """['ner=500', ...] -> {'ner': 500}, with errors that name the option (TrainConfig checks the task names)."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in TASKS or not value:  # named as typed; TrainConfig checks the dicts it is given directly
            raise ValueError(f"{option} {item!r}: expected TASK=VALUE with TASK in {', '.join(TASKS)}")
        try:
            out[name] = parse_number(value, option, integer=cast is int, minimum=0)
        except NumberError as e:
            raise ValueError(f"{option} {item!r}: {e.problem}") from None
    return out


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The job that parse_args' Namespace describes; a bad TASK=VALUE is a ValueError naming the option."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values |= {
        "output": Path(args.output),
        "tasks": [t.strip() for t in args.tasks.split(",") if t.strip()],
        "data_dir": Path(args.data_dir),
        "init_from": Path(args.init_from) if args.init_from else None,
        "limit": parse_assignments(args.limit, "--limit", int),
        "loss_weight": parse_assignments(args.loss_weight, "--loss-weight", float),
        "command": "python -m heads.train " + shlex.join(args.argv),
    }
    return TrainConfig(**values)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m heads.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks to train (default: all three)")
    parser.add_argument(
        "--data-dir",
        default=str(TrainConfig.data_dir),
        help="folder with trec/, sst2/, conll2003/ (default: ../shared/data)",
    )
    parser.add_argument(
        "--output", "-o", required=True, help="folder to save heads.safetensors, config.json (and backbone.safetensors)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing --output folder's model")
    parser.add_argument("--backbone", default=None, help="minilm checkpoint name or folder (default: all-MiniLM-L6-v2)")
    parser.add_argument(
        "--init-from", metavar="DIR", help="start from a model saved by heads.train (its backbone and heads)"
    )
    parser.add_argument(
        "--freeze",
        default=TrainConfig.freeze,
        help="backbone | layers:K | embeddings | none (default: %(default)s: the embedding stays exact)",
    )
    parser.add_argument(
        "--freeze-heads",
        default="",
        type=lambda s: [h for h in s.split(",") if h],
        help="comma-separated heads to keep fixed",
    )
    parser.add_argument(
        "--limit", action="append", default=[], metavar="TASK=N", help="use N training examples of TASK (seeded sample)"
    )
    parser.add_argument("--sampling", default=TrainConfig.sampling, choices=["proportional", "uniform", "temperature"])
    parser.add_argument(
        "--temperature",
        type=checked_option("temperature"),
        default=TrainConfig.temperature,
        help="T for --sampling temperature (default: %(default)s)",
    )
    parser.add_argument("--loss-weight", action="append", default=[], metavar="TASK=W", help="scale TASK's loss by W")
    parser.add_argument("--epochs", type=checked_option("epochs"), default=TrainConfig.epochs)
    parser.add_argument(
        "--max-steps",
        type=checked_option("max_steps"),
        default=TrainConfig.max_steps,
        help="stop after this many steps (0: epochs decide)",
    )
    parser.add_argument("--batch-size", type=checked_option("batch_size"), default=TrainConfig.batch_size)
    parser.add_argument("--lr-backbone", type=checked_option("lr_backbone"), default=TrainConfig.lr_backbone)
    parser.add_argument("--lr-heads", type=checked_option("lr_heads"), default=TrainConfig.lr_heads)
    parser.add_argument("--weight-decay", type=checked_option("weight_decay"), default=TrainConfig.weight_decay)
    parser.add_argument(
        "--max-grad-norm",
        type=checked_option("max_grad_norm"),
        default=TrainConfig.max_grad_norm,
        help="clip each step's gradient norm to this (0: no clipping; default: %(default)s)",
    )
    parser.add_argument(
        "--ema",
        type=checked_option("ema"),
        default=TrainConfig.ema,
        metavar="DECAY",
        help="score, keep and save a moving average of the trained weights with this decay, each tensor's "
        "moving on the steps that train it (0: the weights themselves; default: %(default)s)",
    )
    parser.add_argument(
        "--warmup",
        type=checked_option("warmup"),
        default=TrainConfig.warmup,
        help="fraction of steps for linear warmup (default: %(default)s)",
    )
    heads = parser.add_argument_group(
        "heads",
        "the parts of each head; left out, each keeps the shipped heads' (heads.tasks.TASKS). "
        "docs/experiments.md measures what each part is worth",
    )
    heads.add_argument(
        "--dropout",
        type=checked_option("dropout"),
        help="head dropout (shipped: 0.1 sentence heads, 0.4 NER)",
    )
    heads.add_argument(
        "--layers",
        choices=["mix", "last"],
        help="read a learned mix of every hidden state, or the last one (shipped: mix)",
    )
    heads.add_argument(
        "--sentence-lstm",
        type=checked_option("sentence_lstm"),
        metavar="N",
        help="BiLSTM units per direction over the tokens of sentence heads; 0: none (shipped: 128)",
    )
    heads.add_argument(
        "--sentence-pool",
        choices=["mean", "attention", "meanmax"],
        help="how sentence heads pool the tokens (shipped: meanmax, the mean and the maximum)",
    )
    heads.add_argument(
        "--sentence-hidden",
        type=checked_option("sentence_hidden"),
        metavar="N",
        help="units of the sentence heads' hidden layer; 0: one linear layer (shipped: 512)",
    )
    heads.add_argument(
        "--ner-shapes",
        action=argparse.BooleanOptionalAction,
        help="give the NER head each word's casing shape (shipped: on)",
    )
    heads.add_argument(
        "--ner-lstm",
        type=checked_option("ner_lstm"),
        metavar="N",
        help="BiLSTM units per direction over the words; 0: none (shipped: 256)",
    )
    heads.add_argument(
        "--ner-crf",
        action=argparse.BooleanOptionalAction,
        help="decode NER with a CRF constrained to valid IOB2 (shipped: on)",
    )
    parser.add_argument("--seed", type=checked_option("seed"), default=TrainConfig.seed)
    parser.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast on CPU (fast only where the CPU has AMX or AVX512-BF16)"
    )
    parser.add_argument("--eval-test", action="store_true", help="also score the best model on the test sets")
    parser.add_argument(
        "--dev-limit",
        type=checked_option("dev_limit"),
        default=TrainConfig.dev_limit,
        metavar="N",
        help="score only the first N dev examples per task (quick runs; default: all)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines on stderr")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in the saved config
    return args


def check_output_folder(output: Path, force: bool) -> None:
    """Refuse, before any training, an --output that could not take the model at the end."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file; give a folder for the model")
    if (output / "config.json").exists() and not force:
        raise ValueError(f"{output} already holds a model; pass --force to overwrite it")
    existing = next(p for p in [output, *output.parents] if p.exists())  # where the folder will be made
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ValueError(
            f"--output {output}: cannot write in {existing} ({e.strerror or e}); choose a writable folder"
        ) from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> int:
        config = config_from_args(args)
        check_output_folder(config.output, args.force)
        print(json.dumps(train(config)))
        return 0

    return run(work, user_errors=(*USER_ERRORS, DataFormatError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
