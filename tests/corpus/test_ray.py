"""Ray Data embedding (minilm.corpus.ray) on a local two-CPU cluster: same vectors as encode, same ids, same order.

Ray is a test dependency: a missing ray fails here, it is not skipped.
"""

from __future__ import annotations

import csv
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import ray.data

import minilm.corpus.ray
from minilm.corpus.ray import embed_dataset, embed_files, read_dataset
from minilm.corpus.textio import InputError

from conftest import read_stsb, require_data, run_module

N_SENTENCES = 800  # 16 blocks of 50 on two actors: enough to finish out of order
DIM = 384


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    """One small local cluster for the whole module: starting Ray costs seconds."""
    ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    """The first 800 SST-2 train sentences ("label sentence" per line)."""
    with open(require_data("sst2/train.txt"), encoding="utf-8") as f:
        lines = [line.rstrip("\n").split(" ", 1)[1] for line in f]
    return lines[:N_SENTENCES]


@pytest.fixture(scope="module")
def reference(encoder, sentences) -> np.ndarray:
    """encode() on the same sentences, in one process: the numbers every Ray run must reproduce."""
    return encoder.encode(sentences, show_progress_bar=False)


def collect(ds: ray.data.Dataset) -> pa.Table:
    """All rows of a dataset as one Arrow table, in dataset order, with its Arrow types intact."""
    return pa.concat_tables(ray.get(ds.to_arrow_refs()))


def vectors_of(table: pa.Table) -> np.ndarray:
    """The embedding column as float32 (N, C)."""
    column = table["embedding"].combine_chunks()
    return column.flatten().to_numpy().reshape(len(table), column.type.list_size)  # flatten honours slicing


@pytest.mark.slow
def test_embed_dataset_matches_encode_in_order(checkpoint_dir, sentences, reference):
    # 16 blocks on two actors finish out of order; only preserve_order keeps rows and ids in line.
    ds = ray.data.from_items([{"text": s} for s in sentences], override_num_blocks=16)
    table = collect(embed_dataset(ds, model=str(checkpoint_dir), concurrency=2))
    assert table.schema == pa.schema({"id": pa.string(), "embedding": pa.list_(pa.float32(), DIM)})
    assert table["id"].to_pylist() == [str(i) for i in range(1, N_SENTENCES + 1)]  # 1-based row numbers
    diff = np.abs(vectors_of(table) - reference).max()
    print(f"max abs diff over {N_SENTENCES} sentences: {diff:.3g}")
    assert diff <= 1e-6


@pytest.mark.slow
def test_embed_files_txt_writes_line_numbered_parquet(tmp_path: Path, checkpoint_dir, sentences, reference):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(s + "\n" for s in sentences[:300]), encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(pa.table({"id": ["stale"]}), out / "old.parquet")  # an earlier run's file
    with pytest.raises(InputError, match="is not empty.*--force"):
        embed_files(str(corpus), str(out))
    rows = embed_files(str(corpus), str(out), model=str(checkpoint_dir), concurrency=1, force=True)
    assert not (out / "old.parquet").exists()
    table = pq.read_table(out)
    assert rows == table.num_rows == 300
    assert table["id"].to_pylist() == [str(i) for i in range(1, 301)]  # line numbers
    assert np.abs(vectors_of(table) - reference[:300]).max() <= 1e-6


def test_force_empties_only_parquet_files(tmp_path: Path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.md").write_text("mine\n")
    with pytest.raises(InputError, match="notes.md.*not only Parquet"):
        embed_files(str(corpus), str(tmp_path / "out"), force=True)  # --force replaces our files, never a user's
    assert (tmp_path / "out" / "notes.md").exists()


def test_refuses_bad_input_with_a_one_line_fix(tmp_path: Path):
    (tmp_path / "corpus.docx").write_text("hello\n")
    (tmp_path / "corpus.txt").write_text("hello\n")
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"body": "hello"}) + "\n")
    (tmp_path / "empty.txt").write_text("")
    cases = [
        (tmp_path / "empty.txt", "the input has no rows"),
        (tmp_path / "corpus.docx", "unknown extension '.docx'; use one of .txt, .jsonl"),
        (tmp_path / "missing.txt", "does not exist"),
        (tmp_path / "corpus.jsonl", 'no "text" column \\(columns: body\\)'),
    ]
    for path, message in cases:
        with pytest.raises(InputError, match=message) as raised:
            embed_files(str(path), str(tmp_path / f"out-{path.name}"))
        assert "\n" not in str(raised.value)
    with pytest.raises(InputError, match="a .txt file has no fields"):
        embed_files(str(tmp_path / "corpus.txt"), str(tmp_path / "out"), id_field="doc")


@pytest.mark.slow
def test_readers_keep_text_and_ids_as_strings(tmp_path: Path):
    """.csv ids stay strings ("007"), .tsv quotes are text (STS-B style), .parquet reads as is."""
    _, first, second = read_stsb("dev")
    quoted = [s for s in first + second if s.startswith('"')][:3]  # a CSV reader would take these quotes as quoting
    assert len(quoted) == 3
    (tmp_path / "a.tsv").write_text(
        "id\ttext\n" + "".join(f"{i:03d}\t{s}\n" for i, s in enumerate(quoted)), encoding="utf-8"
    )
    with open(tmp_path / "a.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(
            [("id", "text"), ("007", first[0]), ("010", first[1])]
        )  # minimal quoting: 007 stays bare
    pq.write_table(pa.table({"id": ["a", "b"], "text": second[:2]}), tmp_path / "a.parquet")
    expected = {
        ".tsv": ([f"{i:03d}" for i in range(len(quoted))], quoted),
        ".csv": (["007", "010"], first[:2]),
        ".parquet": (["a", "b"], second[:2]),
    }
    for suffix, (ids, texts) in expected.items():
        ds, text_column = read_dataset(str(tmp_path / f"a{suffix}"), suffix, "text", "id")
        table = collect(ds)
        assert (table["id"].to_pylist(), table[text_column].to_pylist()) == (ids, texts), suffix


def test_import_works_without_ray_and_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    module = importlib.reload(minilm.corpus.ray)
    with pytest.raises(InputError, match=r"pip install 'minilm\[ray\]'"):
        module.embed_files("corpus.txt", "out")


@pytest.mark.slow
def test_cli_engine_ray_joins_a_cluster_and_writes_parquet(tmp_path: Path, checkpoint_dir, sentences, reference):
    corpus = tmp_path / "corpus.jsonl"
    # ids "00000"...: digits that must stay strings (a reader that infers types would make them numbers)
    corpus.write_text(
        "".join(json.dumps({"id": f"{i:05d}", "text": sentences[i]}) + "\n" for i in range(40)), encoding="utf-8"
    )
    address = ray.get_runtime_context().gcs_address  # the module's cluster, so the CLI starts none of its own
    args = [
        "--engine",
        "ray",
        "--ray-address",
        address,
        "--input",
        str(corpus),
        "--output",
        f"{tmp_path / 'out'}/",
        "--id-field",
        "id",
    ]
    proc = run_module("minilm.embed", *args, "--model", str(checkpoint_dir), "--concurrency", "1")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert f"40 embeddings in Parquet files (id, embedding) in {tmp_path / 'out'}/" in proc.stderr.decode()
    table = pq.read_table(tmp_path / "out")
    assert table["id"].to_pylist() == [f"{i:05d}" for i in range(40)]
    assert np.abs(vectors_of(table) - reference[:40]).max() <= 1e-6

    refused = run_module("minilm.embed", *args, "--precision", "int8")  # fails before any cluster is touched
    assert refused.returncode == 2 and refused.stderr.decode().splitlines() == [
        "error: --engine ray writes float32 Parquet files and stops at a bad record; drop --format, --precision and --skip-bad-lines"
    ]
    refused = run_module("minilm.embed", *args, "--tokenizer", "python")
    assert refused.returncode == 2 and refused.stderr.decode().splitlines() == [
        "error: --engine ray's actors use the fast tokenizer; drop --tokenizer python"
    ]
