"""What every command line of the project does the same way: user errors, signals and closed pipes.

    def main(argv=None) -> int:
        args = parse_args(argv)
        return run(lambda: work(args))

`run` turns what can go wrong into what a Unix tool does, never a traceback:
    a user error (InputError, WeightsError, ValueError)   one `error: ...` line on stderr, exit 2
    a bad option (ArgumentParser, below)                  the same: `error: ...; see prog --help`
    stdout cannot be written (full disk, closed)          `error: cannot write the output: ...`, exit 2
    any other OSError naming a file                       `error: cannot use FILE: ...`, exit 2
    the reader of stdout went away (`| head -1`)          quiet, exit 0
    Ctrl-C                                                `interrupted`, exit 130
    SIGTERM                                               `terminated`, exit 143 (raised as Terminated, so
                                                          it unwinds like Ctrl-C: atomic writes leave nothing)
The shard writer (minilm.corpus.shards) catches both signals itself, to finish the shard in hand first.

It also holds the options and input handling that several commands share (`add_input_arguments`,
`gather_texts`, `check_output_path`, `positive_int`, `number_option`), so no command imports another: entry points
import the library and this module, and the library never imports an entry point.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TextIO

import numpy as np

from .base.numbers import NumberError, parse_number
from .base.textio import (
    RECORD_SUFFIXES,
    BadRecord,
    EmptyLine,
    InputError,
    decoded_lines,
    open_input,
    read_records,
    require_input_file,
)
from .encoders.sentence_encoder import SentenceEncoder, cosine_similarity
from .model.precision import DTYPE_CHOICES
from .text.tokenization import TOKENIZER_KINDS
from .weights import DEFAULT_CHECKPOINT, WeightsError

DEMO_SENTENCES = ["The dog ran across the grass.", "Why is the sky blue?", "The cat jumped into the weeds."]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, as a shell reports a process stopped by Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143
USER_ERRORS: tuple[type[Exception], ...] = (InputError, WeightsError, ValueError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad option is one `error:` line pointing at --help, not the whole usage block."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"error: {message}; see {self.prog} --help\n")


class Terminated(BaseException):
    """SIGTERM, raised where the program is, so that it unwinds as Ctrl-C's KeyboardInterrupt does."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def run(work: Callable[[], int], user_errors: tuple[type[Exception], ...] = USER_ERRORS) -> int:
    """Run a command's work and return its exit status (see the module docstring)."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
    try:
        if sys.stdout is None:  # started with stdout closed (`>&-`): results would go nowhere
            raise InputError("standard output is closed; redirect it to a file, or give --output")
        status = work()
        sys.stdout.flush()  # a closed pipe shows here, inside the try, and not at exit
        return status
    except user_errors as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: not an error; point stdout at /dev/null so the exit flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # what is left: stdout or stderr on a full disk (`> /dev/full`), or a file no check foresaw
        _quiet_stdout()
        what = f"cannot use {e.filename}" if e.filename else "cannot write the output"
        print(f"error: {what}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("terminated", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _quiet_stdout() -> None:
    """Drop what is still buffered for a stdout that cannot take it, so the exit flush raises nothing."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# --------------------------------------------------------------------------- options and inputs shared by the commands


def read_texts(path: str, text_field: str = "text") -> list[str]:
    """Texts from a file or from stdin when path is '-'.

    A .txt file (or stdin) gives one text per line, empty lines included (an empty text is valid),
    unless every line is blank: that is an InputError, as it is for the shard writer.
    .jsonl, .csv, .tsv and .parquet files give their `text_field`, skipping blank lines; any other
    bad record stops with its file:line (minilm.base.textio.read_records).
    """
    return [text for _, text in read_numbered_texts(path, text_field)]


def input_name(path: str) -> str:
    """How messages name an input path: '-' is <stdin>."""
    return "<stdin>" if path == "-" else path


def read_numbered_texts(path: str, text_field: str = "text") -> list[tuple[int, str]]:
    """read_texts with each text's 1-based line in the file (its row, for Parquet)."""
    if path != "-":
        require_input_file(path)
    if path == "-" or Path(path).suffix.lower() not in RECORD_SUFFIXES:
        with open_input(Path(path)) if path != "-" else nullcontext(sys.stdin.buffer) as stream:
            lines = list(decoded_lines(stream, input_name(path)))
        if lines and not any(line.strip() for _, line in lines):
            raise InputError(f"{input_name(path)} holds only blank lines: no texts")
        return lines
    texts = []
    for record in read_records(Path(path), text_field):
        if isinstance(record, EmptyLine):
            continue
        if isinstance(record, BadRecord):
            raise record
        texts.append((record.line, record.text))
    return texts


def number_option(
    *, integer: bool = False, minimum: float | None = None, maximum: float | None = None, above: float | None = None
) -> Callable[[str], int | float]:
    """An argparse type for a number option, checked by minilm.base.numbers (finite, in range): NaN, inf or an
    out-of-range value is `error: argument --lr-heads: must be a finite number > 0, got nan`."""

    def parse(value: str) -> int | float:
        try:
            return parse_number(value, "the value", integer=integer, minimum=minimum, maximum=maximum, above=above)
        except NumberError as e:
            raise argparse.ArgumentTypeError(e.problem) from None

    return parse


def text_option(value: str) -> str:
    """An argparse type for a text option (--prompt, a query): bytes that are not UTF-8 reach Python's argv as lone
    surrogates, which the tokenizer would meet as a TypeError deep inside; they are refused here, by name."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        byte = (
            f" (byte 0x{ord(value[e.start]) - 0xDC00:02x} at character {e.start + 1})"
            if value[e.start] >= "\udc80"
            else ""
        )
        raise argparse.ArgumentTypeError(f"is not valid UTF-8{byte}; pass UTF-8 text") from None
    return value


positive_int = number_option(integer=True, minimum=1)  # counts such as --batch-size
non_negative_int = number_option(integer=True, minimum=0)  # counts where 0 means "off", such as --max-steps


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The `TEXT ...` / `-` / `--input FILE` / `--text-field` options, shared with `python -m heads.predict`."""
    parser.add_argument("texts", nargs="*", help="texts as arguments; '-' reads one text per line from stdin")
    parser.add_argument(
        "--input",
        "-i",
        metavar="FILE",
        help=f"one text per line, or {'/'.join(RECORD_SUFFIXES)} with a text field; '-' for stdin",
    )
    parser.add_argument(
        "--text-field",
        "--text-column",
        default="text",
        help=f'the text field or column of {", ".join(RECORD_SUFFIXES)} input (default: "text")',
    )


def gather_texts(args: argparse.Namespace, default: list[str] | None = DEMO_SENTENCES) -> list[str]:
    """Texts from the arguments, --input or stdin; `default` when none are given (None: that is an error)."""
    if args.texts and args.input:
        raise InputError("give texts either as arguments or with --input, not both")
    if args.input:
        texts = read_texts(args.input, args.text_field)
    elif args.texts == ["-"]:
        texts = read_texts("-")
    elif args.texts:
        texts = args.texts
        for number, text in enumerate(texts, start=1):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InputError(
                    f"text argument {number} is not valid UTF-8; pass UTF-8 text, or the texts in a file with --input"
                ) from None
    elif default is None:
        raise InputError("no texts given: pass them as arguments, with --input FILE, or '-' for stdin")
    else:
        texts = default
    if not texts:
        raise InputError(f"{args.input or '<stdin>'} holds no texts")
    return texts


def check_output_path(output: str | None, force: bool) -> Path | None:
    """An --output that can be written: not a folder, in an existing writable folder, not there yet unless --force."""
    if not output:
        return None
    path = Path(output)
    if path.is_dir() or output.endswith(("/", os.sep)):
        raise InputError(f"--output {output} is a folder; give a file name")
    if not path.parent.is_dir():
        raise InputError(f"--output folder {path.parent} does not exist; create it first")
    if path.exists() and not force:
        raise InputError(f"{path} already exists; pass --force to overwrite it")
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"--output folder {path.parent} is not writable; choose another --output")
    return path


# --------------------------------------------------------------------------- output shared by the commands


def shorten(text: str, width: int = 48) -> str:
    """One line of at most `width` characters, for tables and titles."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def write_table(out: TextIO, texts: list[str], embeddings: np.ndarray) -> None:
    """The embedding shape, then every pair's cosine similarity, highest first (as in the project's seed demo)."""
    out.write(f"Embeddings shape: {embeddings.shape}\n")
    if len(texts) < 2:
        out.write("(one text: no pairs to compare)\n")
        return
    sims = cosine_similarity(embeddings, embeddings)  # (N, N)
    pairs = sorted(itertools.combinations(range(len(texts)), 2), key=lambda p: -sims[p])
    width = max(len(shorten(texts[i])) for i, _ in pairs)
    out.write(f"{'cosine_sim':>10}  {'sentence_1':<{width}}  sentence_2\n")
    for i, j in pairs:
        out.write(f"{sims[i, j]:>10.6f}  {shorten(texts[i]):<{width}}  {shorten(texts[j])}\n")


# --------------------------------------------------------------------------- model options (minilm.embed, minilm.serve)


def add_model_arguments(group) -> None:
    """--model, --device, --dtype, --tokenizer, --no-verify, --download: which encoder to load, and how."""
    group.add_argument("--model", "-m", default=None, help=f"checkpoint name or folder (default: {DEFAULT_CHECKPOINT})")
    group.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    group.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        default="float32",
        help="compute precision, what the model runs in: float32 is exact (default); "
        "bfloat16/float16 are faster on GPUs and on CPUs with AVX512-BF16/AMX; int8 on CPUs with VNNI or "
        "AMX-INT8 (min cosine to float32 >= 0.99); each falls back to float32 with a note where it would be "
        "emulated. auto picks the fastest of these for this machine and prints what it chose",
    )
    group.add_argument(
        "--fuse",
        action="store_true",
        help="with --dtype int8 (or auto picking it): compile the steps between its matmuls into one loop each "
        "(minilm.model.fused); faster, after about 15 s of compiling on the first batch (3 s once cached)",
    )
    group.add_argument(
        "--tokenizer",
        choices=TOKENIZER_KINDS,
        default="fast",
        help="fast: the Rust tokenizers library (default); "
        "python: minilm.text.wordpiece, the same ids in plain Python (slower)",
    )
    group.add_argument("--no-verify", action="store_true", help="skip the sha256 check (for your own checkpoints)")
    group.add_argument(
        "--download", action="store_true", help="if the checkpoint is not found locally, download it from the hub"
    )


def add_prompt_arguments(group) -> None:
    """--prompt-name / --prompt: the text put before every input (a checkpoint's named prompt, or your own)."""
    choice = group.add_mutually_exclusive_group()
    choice.add_argument(
        "--prompt-name",
        metavar="NAME",
        help="put the checkpoint's prompt NAME (config_sentence_transformers.json, e.g. query) before every text; "
        "without it or --prompt, the checkpoint's default prompt, if it has one",
    )
    choice.add_argument("--prompt", metavar="TEXT", type=text_option, help='put TEXT before every text, e.g. "query: "')


def load_encoder(args: argparse.Namespace) -> SentenceEncoder:
    if args.fuse and args.dtype not in ("int8", "auto"):
        raise InputError(
            f"--fuse compiles int8's steps between its matmuls: add --dtype int8 (or auto), not {args.dtype}"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the precision fallback is printed below, as one line
        encoder = SentenceEncoder.from_pretrained(
            args.model,
            device=args.device,
            verify=not args.no_verify,
            download=args.download,
            dtype=args.dtype,
            tokenizer=args.tokenizer,
            fuse=args.fuse,
        )
    for note in (encoder.auto_choice, encoder.precision_note, encoder.fuse_note and f"--{encoder.fuse_note}"):
        if note:
            print(f"note: {note}", file=sys.stderr)
    return encoder
