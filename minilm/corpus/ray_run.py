"""The record of a Ray run, `_minilm-run.json` beside its Parquet files: what embedded them and which
files it wrote, each with its rows, size and sha256. `embed_files` writes it last; minilm.search reads
it (`read_run`) to encode a query as the rows were, and to know that the files it searches are the
ones that were written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..base.textio import InputError
from ..weights import file_sha256

RUN_FILE = "_minilm-run.json"  # beside the Parquet files (Parquet readers skip names that start with _): the run
RUN_FORMAT = "minilm-ray/1"


def is_remote(path: str) -> bool:
    return "://" in path


def output_filesystem(folder: str):
    """(pyarrow filesystem, root path) of a local or remote (s3://, gs://, ...) folder."""
    from pyarrow import fs

    return fs.FileSystem.from_uri(folder) if is_remote(folder) else (fs.LocalFileSystem(), os.path.abspath(folder))


def write_run(
    output_dir: str, input_path: str, model: str | None, dtype: str, normalize: bool | None, prompt: str | None
) -> dict:
    """Write RUN_FILE beside the Parquet files, last: what embedded them (the checkpoint's file hashes, its
    settings) and each file with its rows, size and sha256, in row order. Search reads it to encode a query
    as the rows were, and to know the files it searches are the ones written."""
    import hashlib

    import pyarrow.parquet as pq
    from pyarrow import fs

    from ..encoders.sentence_encoder import SentenceEncoder
    from .shards import input_fingerprint

    encoder = SentenceEncoder.from_pretrained(model, dtype=dtype)  # as the actors loaded it
    filesystem, root = output_filesystem(output_dir)
    entries = filesystem.get_file_info(fs.FileSelector(root))
    files = []
    for entry in sorted((e for e in entries if e.base_name.endswith(".parquet")), key=lambda e: e.base_name):
        digest = hashlib.sha256()
        with filesystem.open_input_stream(entry.path) as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
        with filesystem.open_input_file(entry.path) as f:
            rows = pq.ParquetFile(f).metadata.num_rows
        files.append({"name": entry.base_name, "rows": rows, "bytes": entry.size, "sha256": digest.hexdigest()})
    local = not is_remote(input_path)
    run = {
        "format": RUN_FORMAT,
        "model": str(encoder.folder) if encoder.folder else None,
        "model_files": encoder.checkpoint.file_hashes if encoder.checkpoint else None,
        "model_sha256": encoder.checkpoint.sha256 if encoder.checkpoint else None,
        "dim": encoder.dim,
        "compute_dtype": encoder.dtype,
        "normalized": encoder.config.normalize if normalize is None else normalize,
        "prompt": encoder.resolve_prompt(prompt=prompt) or None,
        "input": input_fingerprint(Path(input_path)) if local else {"path": input_path},
        "rows": sum(f["rows"] for f in files),
        "files": files,
    }
    with filesystem.open_output_stream(f"{root}/{RUN_FILE}") as out:
        out.write((json.dumps(run, indent=1) + "\n").encode("utf-8"))
    return run


def read_run(folder: str | Path, verify: bool = True) -> dict:
    """RUN_FILE of a local Ray output folder, checked: each file listed is there, of its size, and with verify
    of its sha256; a file not listed is named too. InputError says what is wrong."""
    folder = Path(folder)
    path = folder / RUN_FILE
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path} cannot be read ({e}); embed the folder again with --force") from None
    files = run.get("files") if isinstance(run, dict) else None
    fields_ok = isinstance(files, list) and all(
        isinstance(f, dict)
        and isinstance(f.get("name"), str)
        and isinstance(f.get("rows"), int)
        and isinstance(f.get("bytes"), int)
        and isinstance(f.get("sha256"), str)
        for f in files
    )
    if not fields_ok or run.get("format") != RUN_FORMAT or not isinstance(run.get("dim"), int):
        raise InputError(f"{path} is not a {RUN_FORMAT} record (a field is missing or wrong); embed the folder again")
    problems = []
    for f in files:
        part = folder / f["name"]
        if not part.is_file() or part.stat().st_size != f["bytes"]:
            problems.append(f"{f['name']} is missing or not the size the run recorded")
        elif verify and file_sha256(part) != f["sha256"]:
            problems.append(f"{f['name']}: sha256 differs from the run's (damaged or rewritten)")
    listed = {f["name"] for f in files}
    problems += [
        f"{p.name} is not listed in {RUN_FILE}" for p in sorted(folder.glob("*.parquet")) if p.name not in listed
    ]
    if problems:
        raise InputError(f"{folder}: {'; '.join(problems[:3])}; embed it again with --force")
    return run
