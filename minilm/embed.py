"""python -m minilm.embed: embed sentences from the command line, a file or stdin.

    python -m minilm.embed                                   # the built-in demo sentences, cosine table
    python -m minilm.embed "First sentence." "Second one."
    python -m minilm.embed --input texts.txt --format jsonl  # one text per line (or .jsonl with "text")
    cat texts.txt | python -m minilm.embed - --format npy --output vectors.npy
    python -m minilm.embed --input corpus.txt --output vectors/  # streamed, resumable shards (minilm.corpus.shards)
    python -m minilm.embed --engine ray --input corpus.txt --output vectors/  # Parquet, on Ray (minilm.corpus.ray)

    python -m minilm.embed --verify vectors/                     # check a shard folder's files against its manifest

Results go to stdout (or --output, written atomically); progress and warnings go to stderr.
User errors print one line and exit with status 2 (minilm.cli).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from .base.textio import RECORD_SUFFIXES, InputError, atomic_output, json_vector
from .cli import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    ArgumentParser,
    add_input_arguments,
    add_model_arguments,
    add_prompt_arguments,
    check_output_path,
    gather_texts,
    load_encoder,
    positive_int,
    run,
    write_table,
)
from .corpus.quantize import STORED_PRECISIONS
from .encoders.batching import CPU_BATCH_TOKENS, DEFAULT_BATCH_TEXTS, GPU_BATCH_TEXTS
from .encoders.sentence_encoder import EncodeResult

TABLE_MAX_TEXTS = 1000  # the table compares every pair; beyond this, jsonl or npy is the useful output


# --------------------------------------------------------------------------- writing output


def write_jsonl(out: TextIO, texts: list[str], result: EncodeResult) -> None:
    for text, vector, n_tokens, truncated in zip(texts, result.embeddings, result.n_tokens, result.truncated):
        out.write(
            f'{{"text": {json.dumps(text, ensure_ascii=False)}, "embedding": {json_vector(vector.tolist())}, '
            f'"n_tokens": {n_tokens}, "truncated": {json.dumps(truncated)}}}\n'
        )


def output_format(output: str | None) -> str:
    """The format when --format is not given: what a .npy or .jsonl --output names, else the table.

    An --output with no suffix at all is most often a folder meant for shards whose trailing / was left
    out; it is refused with both spellings rather than guessed.
    """
    suffix = Path(output).suffix.lower() if output else ".txt"
    if suffix in (".npy", ".jsonl"):
        return suffix[1:]
    if not suffix:
        raise InputError(
            f"--output {output} names neither a folder nor a file format: "
            "for streamed, resumable shards of an --input file "
            f"give a folder, --output {output}/; "
            f"for all texts at once give {output}.npy or {output}.jsonl (or pass --format)"
        )
    return "table"


def check_output(args: argparse.Namespace, n_texts: int) -> Path | None:
    """Validate --format/--output before any work is done."""
    if args.format == "npy" and not args.output:
        raise InputError("--format npy needs --output FILE.npy")
    if args.format == "table" and n_texts > TABLE_MAX_TEXTS:
        raise InputError(
            f"{n_texts} texts is too many for the pairwise table (at most {TABLE_MAX_TEXTS}); use --format jsonl, "
            "--output FILE.npy, or --input FILE --output DIR/ for resumable shards"
        )
    return check_output_path(args.output, args.force)


def write_result(args: argparse.Namespace, output: Path | None, texts: list[str], result: EncodeResult) -> None:
    try:
        _write_result(args, output, texts, result)
    except OSError as e:
        if output is None or isinstance(e, BrokenPipeError):
            raise
        raise InputError(f"cannot write {output}: {e.strerror or e}") from None


def _write_result(args: argparse.Namespace, output: Path | None, texts: list[str], result: EncodeResult) -> None:
    if args.format == "npy":
        with atomic_output(output, binary=True) as f:
            np.save(f, result.embeddings)
        return
    write = write_table if args.format == "table" else write_jsonl
    payload = result.embeddings if args.format == "table" else result
    if output is None:
        write(sys.stdout, texts, payload)
        sys.stdout.flush()
    else:
        with atomic_output(output, binary=False) as f:
            write(f, texts, payload)


# --------------------------------------------------------------------------- main


MODES = """modes (chosen by --output and --engine):
  (no --output)  or  --output FILE   all texts at once: a cosine table (default), --format jsonl, or
                                     --format npy with --output FILE.npy (.npy and .jsonl names pick their format)
  --input FILE --output DIR/         streamed, resumable shards: a folder ends in / (docs/corpus.md)
  --engine ray --output DIR/         Parquet files written by Ray Data, here or on a cluster (docs/corpus.md)
  --verify DIR                       embed nothing: check a shard folder against its manifest

--dtype is the compute precision (what the model runs in); --precision is how shards store the vectors."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m minilm.embed",
        description="Embed sentences with all-MiniLM-L6-v2 (or another BERT sentence-transformers checkpoint).\n"
        "With no texts and no --input, embeds three demo sentences and prints their cosine similarities.",
        epilog=MODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_arguments(parser.add_argument_group("input"))
    output = parser.add_argument_group("output (the mode follows from --output; see below)")
    output.add_argument(
        "--output",
        "-o",
        metavar="FILE|DIR/",
        help="write here (atomically) instead of stdout. A folder (existing, or ending in /) gets streamed, resumable "
        "shards of an --input file",
    )
    output.add_argument(
        "--format",
        "-f",
        choices=["table", "jsonl", "npy", "shards"],
        default=None,
        help="table, jsonl or npy for all texts at once (default: table, or what a .jsonl/.npy --output names); "
        "shards when --output is a folder",
    )
    output.add_argument(
        "--force", action="store_true", help="overwrite an existing --output file, or start a shard folder over"
    )
    output.add_argument(
        "--verify",
        metavar="DIR",
        help="embed nothing: check every shard of DIR against its manifest (sizes, sha256) and the input's hash",
    )
    model = parser.add_argument_group("model and compute")
    add_model_arguments(model)
    model.add_argument(
        "--batch-size",
        "-b",
        type=positive_int,
        default=None,
        help=f"texts per forward pass at most (default: {DEFAULT_BATCH_TEXTS} on a CPU, as the token budget allows; "
        f"{GPU_BATCH_TEXTS} on a GPU)",
    )
    model.add_argument(
        "--max-batch-tokens",
        type=positive_int,
        default=None,
        metavar="N",
        help="tokens per forward pass at most, padding included (default on a CPU, by --dtype: "
        + ", ".join(f"{dtype} {tokens}" for dtype, tokens in CPU_BATCH_TOKENS.items())
        + "; none on a GPU)",
    )
    model.add_argument("--no-normalize", action="store_true", help="skip L2 normalization of the embeddings")
    add_prompt_arguments(model)
    shards = parser.add_argument_group("shards (--input FILE --output DIR/)")
    shards.add_argument(
        "--shard-size", type=positive_int, default=None, metavar="N", help="texts per shard (default: 10000)"
    )
    shards.add_argument(
        "--id-field",
        "--id-column",
        default=None,
        help="the field or column that holds the ids, also for --engine ray (default: line numbers)",
    )
    shards.add_argument(
        "--precision",
        choices=STORED_PRECISIONS,
        default="float32",
        help="storage precision, how shards store the vectors: float32 (default), float16, "
        "int8/uint8 (ranges calibrated on the "
        "first shard), binary/ubinary (packed sign bits). Not what the model computes in: see --dtype",
    )
    shards.add_argument(
        "--window",
        type=positive_int,
        default=None,
        metavar="TOKENS",
        help="cut a text longer than TOKENS word pieces into overlapping windows, one row each, with its "
        "document id and character span (default: one row per text, truncated at the model's length)",
    )
    shards.add_argument(
        "--stride",
        type=positive_int,
        default=None,
        metavar="TOKENS",
        help="word pieces from one window's start to the next (default: 3/4 of --window; "
        "the windows overlap by --window minus --stride)",
    )
    shards.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip and count input records that cannot be embedded "
        "(invalid JSON, missing field, not UTF-8, empty line) "
        "instead of stopping at the first",
    )
    ray = parser.add_argument_group("Ray (--engine ray --input FILE --output DIR/)")
    ray.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process (default); ray: Ray Data, writing Parquet files of (id, embedding, text) "
        "to --output DIR/",
    )
    ray.add_argument(
        "--ray-address", metavar="ADDR", help="the cluster to join (auto, HEAD:6379, ray://...); default: a local one"
    )
    ray.add_argument(
        "--concurrency", type=positive_int, metavar="N", help="actors, i.e. model copies (default: as many as fit)"
    )
    return parser.parse_args(argv)


def wants_shards(args: argparse.Namespace) -> bool:
    """--format shards, or no --format and an --output that names a folder."""
    if args.format is not None:
        return args.format == "shards"
    return bool(args.output) and (args.output.endswith(("/", os.sep)) or Path(args.output).is_dir())


def embed_to_shards(args: argparse.Namespace) -> int:
    from .corpus.folder import spool_stdin
    from .corpus.shards import CorpusSettings, embed_corpus

    if not args.input or args.texts:
        raise InputError("shard output streams a file: give it with --input FILE (or --input - for stdin), not texts")
    if not args.output:
        raise InputError("--format shards needs --output DIR/")
    if args.input == "-":  # kept in the folder, so that the run can resume and search can show its texts
        args.input = str(spool_stdin(Path(args.output), sys.stdin.buffer))
    if args.id_field and Path(args.input).suffix.lower() not in RECORD_SUFFIXES:
        raise InputError(
            f"--id-field names a field of {', '.join(RECORD_SUFFIXES)} input; "
            f"the ids of {args.input} are its line numbers: drop --id-field"
        )
    encoder = load_encoder(args)
    settings = CorpusSettings(
        shard_rows=args.shard_size or CorpusSettings.shard_rows,
        text_field=args.text_field,
        id_field=args.id_field,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
        normalize=False if args.no_normalize else None,
        precision=args.precision,
        skip_bad_lines=args.skip_bad_lines,
        prompt=encoder.resolve_prompt(args.prompt_name, args.prompt),
        window=args.window,
        stride=args.stride,
    )
    manifest = embed_corpus(encoder, Path(args.input), Path(args.output), settings, force=args.force)
    shards = manifest.shards
    if manifest.complete and not manifest.rows:
        raise InputError(f"{args.input} holds no texts to embed ({manifest.skipped.count} bad lines skipped)")
    if manifest.identity.window is not None:
        windows = sum(s.rows for s in shards)
        documents = sum(s.records for s in shards)
        print(
            f"{documents} texts in {windows} windows of up to {manifest.identity.window} word pieces", file=sys.stderr
        )
    elif n_truncated := sum(s.truncated for s in shards):
        print(
            f"warning: {n_truncated} of {manifest.rows} texts exceed {encoder.max_seq_length} tokens "
            f"and were truncated (longest: {max(s.longest for s in shards)} tokens)",
            file=sys.stderr,
        )
    for counted, what in (
        (manifest.skipped, "skipped {} bad lines"),
        (manifest.repeated_ids, "warning: {} ids repeat an earlier one"),
    ):
        if counted.count:
            print(
                f"{what.format(counted.count)} (listed in {Path(args.output) / 'manifest.json'}); "
                f"first: {counted.examples[0]}",
                file=sys.stderr,
            )
    if manifest.stopped_by:
        why = "interrupted" if manifest.stopped_by == "SIGINT" else "terminated"
        print(
            f"{why}: {manifest.rows} texts in {len(shards)} shards are safe in {args.output}; "
            "rerun the same command to continue",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED if why == "interrupted" else EXIT_TERMINATED
    print(f"{manifest.rows} embeddings in {len(shards)} shards in {args.output}", file=sys.stderr)
    return 0


def verify_folder(folder: str) -> int:
    """--verify DIR: every shard against the manifest, and the input (when it is still there) against its sha256."""
    from .corpus.reader import verify_shards
    from .corpus.shards import input_fingerprint

    manifest = verify_shards(folder)
    where = manifest.identity.input["path"]
    if Path(where).is_file() and input_fingerprint(Path(where)) != manifest.identity.input:
        raise InputError(
            f"{where} has changed since {folder} was embedded from it; "
            "its rows are stale: rerun with --force to embed it again"
        )
    state = "complete" if manifest.complete else "unfinished: rerun the command that made it to continue"
    print(f"ok: {folder}: {manifest.rows} rows in {len(manifest.shards)} shards match the manifest ({state})")
    return 0


def embed_with_ray(args: argparse.Namespace) -> int:
    from .corpus.ray import embed_files

    if not args.input or args.input == "-" or args.texts:
        raise InputError("--engine ray reads a file: give it with --input FILE (a local path or s3://...)")
    if not args.output:
        raise InputError("--engine ray needs --output DIR/ for its Parquet files")
    if args.format is not None or args.precision != "float32":
        raise InputError("--engine ray writes float32 Parquet files; drop --format and --precision")
    if args.tokenizer != "fast":
        raise InputError("--engine ray's actors use the fast tokenizer; drop --tokenizer python")
    if ignored := [
        flag
        for flag, given in (
            ("--no-verify", args.no_verify),
            ("--download", args.download),
            ("--max-batch-tokens", args.max_batch_tokens),
            ("--fuse", args.fuse),
        )
        if given
    ]:
        raise InputError(
            "--engine ray's actors load the checkpoint each on its own node, pins checked, "
            f"and embed batches of --batch-size; drop {' and '.join(ignored)}"
        )
    gpus = 1 if args.device.startswith("cuda") else 0
    done = embed_files(
        args.input,
        args.output,
        address=args.ray_address,
        text_field=args.text_field,
        id_field=args.id_field,
        model=args.model,
        batch_size=args.batch_size or DEFAULT_BATCH_TEXTS,
        concurrency=args.concurrency,
        num_gpus=gpus,
        device=args.device,
        dtype=args.dtype,
        normalize=False if args.no_normalize else None,
        prompt=load_encoder(args).resolve_prompt(args.prompt_name) if args.prompt_name else args.prompt,
        force=args.force,
        skip_bad_lines=args.skip_bad_lines,
    )
    if done.skipped:  # as the shard writer reports them, without its manifest
        print(f"skipped {done.skipped} bad lines; first: {done.skipped_examples[0]}", file=sys.stderr)
    print(f"{done.rows} embeddings in Parquet files (id, embedding) in {args.output}", file=sys.stderr)
    return 0


def embed(args: argparse.Namespace) -> int:
    if args.verify:
        return verify_folder(args.verify)
    if args.engine == "ray":
        return embed_with_ray(args)
    if args.ray_address or args.concurrency:
        raise InputError("--ray-address and --concurrency need --engine ray")
    if wants_shards(args):
        return embed_to_shards(args)
    shard_only = [
        flag
        for flag, given in (
            ("--precision", args.precision != "float32"),
            ("--skip-bad-lines", args.skip_bad_lines),
            ("--shard-size", args.shard_size is not None),
            ("--id-field", args.id_field is not None),
            ("--window", args.window is not None),
            ("--stride", args.stride is not None),
        )
        if given
    ]
    if shard_only:
        raise InputError(
            f"{' and '.join(shard_only)} apply to shard output: give --input FILE --output DIR/ (a folder ends in /)"
        )
    args.format = args.format or output_format(args.output)
    texts = gather_texts(args)
    output = check_output(args, len(texts))
    encoder = load_encoder(args)
    result = encoder.encode_detailed(
        texts,
        batch_size=args.batch_size,
        normalize=False if args.no_normalize else None,
        max_batch_tokens=args.max_batch_tokens,
        prompt_name=args.prompt_name,
        prompt=args.prompt,
    )
    if n_truncated := sum(result.truncated):
        print(
            f"warning: {n_truncated} of {len(texts)} texts exceed {encoder.max_seq_length} tokens and were truncated "
            f"(longest: {max(result.n_tokens)} tokens)",
            file=sys.stderr,
        )
    write_result(args, output, texts, result)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run(lambda: embed(args))


if __name__ == "__main__":
    sys.exit(main())
