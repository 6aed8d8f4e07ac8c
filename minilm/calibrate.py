"""python -m minilm.calibrate: measure a checkpoint's int8 smoothing scales on calibration text.

    python -m minilm.calibrate --stsb --input ../shared/data/stsbenchmark/sts-dev.csv   # the shipped scales
    python -m minilm.calibrate --model my-checkpoint/ --input texts.txt               # your own checkpoint

It runs the float32 encoder over the texts (`SentenceEncoder.calibrate_int8`), records the largest
|activation| of every input channel of every int8 layer, turns them into SmoothQuant scales
(minilm.model.int8) and writes
them, atomically, as one small safetensors file bound by sha256 to the checkpoint's
model.safetensors. `dtype="int8"` (and "auto") then finds them: by default they go into the
checkpoint folder as int8_scales.safetensors, or for a known checkpoint to the file minilm ships
(weights/int8/NAME.safetensors, whose sha256 minilm.weights.int8_scales pins). Calibrate on
held-out text, never on what you will evaluate on: the shipped scales saw STS-B dev only.

--input is read as every command reads it: one text per line, or the --text-field of a .jsonl, .csv
(comma-separated, with a header), .tsv or .parquet file. --stsb reads an STS Benchmark file instead
(tab-separated despite its .csv name; both sentences of every row).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .base.stsb import read_stsb
from .base.textio import InputError
from .cli import ArgumentParser, number_option, read_texts, run
from .encoders.sentence_encoder import SentenceEncoder
from .model.int8 import SMOOTHING_ALPHA
from .weights import DEFAULT_CHECKPOINT, KNOWN_CHECKPOINTS, file_sha256
from .weights.int8_scales import FILE_NAME, INT8_SCALE_PINS, save_int8_scales, shipped_scales_path


def read_calibration_texts(path: str, stsb: bool = False, text_field: str = "text") -> list[str]:
    """The distinct texts of --input, read as every command reads it (`read_texts`), or with stsb both
    sentences of every row of an STS-B file (`read_stsb`)."""
    if stsb:
        _, first, second = read_stsb(path)
        texts = [text for pair in zip(first, second) for text in pair]
    else:
        texts = read_texts(path, text_field)
    texts = list(dict.fromkeys(t for t in texts if t.strip()))
    if not texts:
        raise InputError(f"{path} holds no texts to calibrate on")
    return texts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m minilm.calibrate",
        description="Measure a checkpoint's int8 smoothing scales on calibration text (for --dtype int8/auto).",
        epilog=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", "-m", default=None, help=f"checkpoint name or folder (default: {DEFAULT_CHECKPOINT})"
    )
    parser.add_argument(
        "--input",
        "-i",
        required=True,
        metavar="FILE",
        help="calibration texts: one per line (.txt), or a .jsonl/.csv/.tsv/.parquet file's --text-field",
    )
    parser.add_argument("--text-field", default="text", help="the text column of a record file (default: text)")
    parser.add_argument(
        "--stsb", action="store_true", help="--input is an STS Benchmark file (sts-*.csv: tab-separated, no header)"
    )
    parser.add_argument(
        "--alpha",
        type=number_option(minimum=0, maximum=1),
        default=SMOOTHING_ALPHA,
        help=f"how much of the activation outliers moves into the weights, 0 to 1 (default {SMOOTHING_ALPHA})",
    )
    parser.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help=f"where to write (default: {FILE_NAME} in the checkpoint folder; the shipped file for a known one)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing scales file")
    parser.add_argument("--no-verify", action="store_true", help="skip the checkpoint's sha256 pins (your own)")
    return parser.parse_args(argv)


def default_output(encoder: SentenceEncoder) -> Path:
    """The shipped scales file for a known checkpoint, else int8_scales.safetensors in its folder."""
    for known in KNOWN_CHECKPOINTS.values():
        if known.name in INT8_SCALE_PINS and known.pins["model.safetensors"].sha256 == encoder.checkpoint.sha256:
            return shipped_scales_path(known.name)
    return encoder.folder / FILE_NAME


def work(args: argparse.Namespace) -> int:
    texts = read_calibration_texts(args.input, args.stsb, args.text_field)
    encoder = SentenceEncoder.from_pretrained(args.model, verify=not args.no_verify)
    output = Path(args.output) if args.output else default_output(encoder)
    if output.exists() and not args.force:
        raise InputError(f"{output} exists; pass --force to overwrite it")
    scales = encoder.calibrate_int8(texts, args.alpha)
    n_tokens = sum(min(n, encoder.max_seq_length) for n in encoder.tokenizer.encode(texts)[1])
    metadata = {
        "model_sha256": encoder.checkpoint.sha256,
        "alpha": str(args.alpha),
        "calibration": f"{Path(args.input).name}: {len(texts)} texts, {n_tokens} tokens",
        "method": "SmoothQuant s_j = max|x_j|^alpha / max|W_j|^(1-alpha); per-token int8 activations",
    }
    save_int8_scales(output, scales, metadata, force=args.force)
    print(f"{output}  sha256 {file_sha256(output)}", file=sys.stderr)
    print(
        f"{len(scales)} layers calibrated on {len(texts)} texts ({n_tokens} tokens), alpha {args.alpha}",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(lambda: work(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
