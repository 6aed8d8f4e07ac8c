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
from minilm.base.textio import InputError
from minilm.corpus import load_shards
from minilm.corpus.ray import embed_dataset, embed_files, read_dataset

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
    done = embed_files(str(corpus), str(out), model=str(checkpoint_dir), concurrency=1, force=True)
    assert not (out / "old.parquet").exists()
    table = pq.read_table(out)
    assert (done.rows, done.skipped) == (table.num_rows, 0) == (300, 0)
    assert table["id"].to_pylist() == [str(i) for i in range(1, 301)]  # line numbers
    assert np.abs(vectors_of(table) - reference[:300]).max() <= 1e-6
    assert table["text"].to_pylist() == sentences[:300]  # kept, for search to show


def test_a_ray_folder_is_searched_as_a_shard_folder_is(tmp_path: Path, checkpoint_dir, encoder, sentences):
    """minilm.search reads --engine ray's Parquet folder through its run record: the same hits, ids and texts
    as the local engine's shard folder of the same file; a damaged or stray file is refused."""
    from minilm.corpus import CorpusSettings, embed_corpus
    from minilm.search import Searcher

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(s + "\n" for s in sentences[:400]), encoding="utf-8")
    embed_files(str(corpus), str(tmp_path / "ray"), model=str(checkpoint_dir), concurrency=1)
    embed_corpus(encoder, corpus, tmp_path / "local", CorpusSettings(shard_rows=150), show_progress_bar=False)
    queries = [sentences[7], "A man is playing a flute.", "Stocks fell."]
    from_ray = Searcher(tmp_path / "ray", encoder=encoder).search(queries, k=5)
    local = Searcher(tmp_path / "local", encoder=encoder).search(queries, k=5)
    for r, l in zip(from_ray, local):
        assert [(h.id, h.text, h.row) for h in r] == [(h.id, h.text, h.row) for h in l]
        assert max(abs(a.score - b.score) for a, b in zip(r, l)) <= 1e-5
    assert from_ray[0][0].id == "8" and from_ray[0][0].text == sentences[7]
    run = json.loads((tmp_path / "ray" / "_minilm-run.json").read_text())
    assert run["rows"] == 400 and run["dim"] == 384 and run["model_files"] == encoder.checkpoint.file_hashes
    part = tmp_path / "ray" / run["files"][0]["name"]
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(InputError, match="is missing or not the size the run recorded"):
        Searcher(tmp_path / "ray", encoder=encoder)


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
        (tmp_path / "empty.txt", "empty.txt holds no texts to embed \\(0 bad lines skipped\\)"),
        (tmp_path / "corpus.docx", "unknown extension '.docx'; use one of .txt, .jsonl"),
        (tmp_path / "missing.txt", "does not exist"),
        (tmp_path / "corpus.jsonl", 'corpus.jsonl:1: no "text" field. To skip and count such lines instead'),
    ]
    for path, message in cases:
        with pytest.raises(InputError, match=message) as raised:
            embed_files(str(path), str(tmp_path / f"out-{path.name}"))
        assert "\n" not in str(raised.value)
    with pytest.raises(InputError, match="a .txt file has no fields"):
        embed_files(str(tmp_path / "corpus.txt"), str(tmp_path / "out"), id_field="doc")


@pytest.mark.slow
def test_readers_keep_text_and_ids_as_strings(tmp_path: Path):
    """.csv ids stay strings ("007"), .tsv quotes are text (STS-B style), .parquet reads as is, local or file://."""
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
        for where in (str(tmp_path / f"a{suffix}"), (tmp_path / f"a{suffix}").as_uri()):
            ds, skipped = read_dataset(where, "text", "id")
            table = collect(ds)
            assert (table["id"].to_pylist(), table["text"].to_pylist(), skipped.count) == (ids, texts, 0), where


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
        "error: --engine ray writes float32 Parquet files; drop --format and --precision"
    ]
    refused = run_module("minilm.embed", *args, "--tokenizer", "python")
    assert refused.returncode == 2 and refused.stderr.decode().splitlines() == [
        "error: --engine ray's actors use the fast tokenizer; drop --tokenizer python"
    ]
    refused = run_module("minilm.embed", *args, "--dtype", "int8", "--fuse")
    assert refused.returncode == 2 and refused.stderr.decode().splitlines() == [
        "error: --engine ray's actors load the checkpoint each on its own node, pins checked, "
        "and embed batches of --batch-size; drop --fuse"
    ]


# ---------------------------------------------------------------------- both engines, one reader

# Each file holds what str.splitlines, Arrow's JSON reader or Arrow's CSV reader would read differently
# from minilm.base.textio.read_records: a byte-order mark, CRLF endings, a form feed, U+2028, U+0085 and
# \x1c inside lines, a quoted CSV field over two lines, ids that look like numbers, and bad records.
HOSTILE_TXT = (
    "\ufeffA first line after a byte-order mark.\r\n"
    "A form\x0cfeed inside the line.\r\n"
    "A line\u2028separator inside the line.\n"
    "A next-line\x85character inside the line.\n"
    "A file\x1cseparator inside the line.\n"
    "The last line, number 007.\n"
).encode()
LONE_CR_TXT = b"A good line.\nA bad\rline.\nA third line.\n"
HOSTILE_JSONL = (
    "\ufeff"
    + "".join(
        line + "\r\n"
        for line in [
            json.dumps({"id": "007", "text": "Seven, with a line\u2028separator."}, ensure_ascii=False),
            json.dumps({"id": "008", "text": "Eight, with a next-line\x85character."}, ensure_ascii=False),
            json.dumps({"id": "009", "text": 9}),  # a number: a bad record at line 3
            "",  # a blank line: a bad record at line 4
            json.dumps({"id": "010", "text": "Ten, with a form\x0cfeed and a file\x1cseparator."}),
            json.dumps({"id": "011", "text": "A lone \ud800 surrogate."}),  # as an escape: a bad record at line 6
        ]
    )
).encode()
HOSTILE_CSV = (
    "\ufeffid,text\r\n"
    '007,"A quoted field\r\nover two lines."\r\n'
    "008,A form\x0cfeed and a line\u2028separator.\r\n"
    "009,A next-line\x85and a file\x1cseparator.\r\n"
    '010,"Quotes ""inside"" it."\r\n'
).encode()


def run_cli(capfd, *args: str) -> tuple[int, list[str]]:
    """`python -m minilm.embed args` in this process (so --engine ray uses the module's cluster): (status, stderr lines)."""
    import minilm.embed

    capfd.readouterr()
    status = minilm.embed.main(list(args))
    return status, capfd.readouterr().err.splitlines()


@pytest.mark.slow
def test_both_engines_read_the_same_rows_and_ids_from_hostile_files(tmp_path: Path, checkpoint_dir, capfd):
    """The issue's 'done when': on one file, --engine ray gives the rows, ids and refusals of the shard writer.

    Three Ray runs embed (.txt through a file:// URI, as a remote input is read; .jsonl with
    --skip-bad-lines; .csv); the refusals stop on the driver, before any actor starts.
    """
    files = {}
    for name, data in [
        ("hostile.txt", HOSTILE_TXT),
        ("cr.txt", LONE_CR_TXT),
        ("hostile.jsonl", HOSTILE_JSONL),
        ("hostile.csv", HOSTILE_CSV),
    ]:
        files[name] = tmp_path / name
        files[name].write_bytes(data)
    cases = [  # (input for the shard writer, input for ray, extra flags, expected ids or the expected error line)
        (files["hostile.txt"], files["hostile.txt"].as_uri(), [], ["1", "2", "3", "4", "5", "6"]),
        (
            files["cr.txt"],
            str(files["cr.txt"]),
            [],
            f"error: {files['cr.txt']}:2: a carriage return (\\r) inside the line: old Mac line endings, or a stray CR; "
            f"convert them to line breaks first, e.g. tr '\\r' '\\n' < {files['cr.txt']} > fixed.txt",
        ),
        (
            files["hostile.jsonl"],
            str(files["hostile.jsonl"]),
            ["--id-field", "id"],
            f'error: {files["hostile.jsonl"]}:3: "text" is int, expected a string. '
            "To skip and count such lines instead, pass --skip-bad-lines",
        ),
        (
            files["hostile.jsonl"],
            str(files["hostile.jsonl"]),
            ["--id-field", "id", "--skip-bad-lines"],
            ["007", "008", "010"],
        ),
        (files["hostile.csv"], str(files["hostile.csv"]), ["--id-field", "id"], ["007", "008", "009", "010"]),
    ]
    for i, (local_input, ray_input, flags, expected) in enumerate(cases):
        shards, parquet = tmp_path / f"shards-{i}", tmp_path / f"parquet-{i}"
        local = run_cli(
            capfd, "--input", str(local_input), "--output", f"{shards}/", "--model", str(checkpoint_dir), *flags
        )
        ray_run = run_cli(
            capfd,
            "--engine",
            "ray",
            "--input",
            ray_input,
            "--output",
            f"{parquet}/",
            "--model",
            str(checkpoint_dir),
            "--concurrency",
            "1",
            *flags,
        )
        if isinstance(expected, str):  # refused: one line, exit 2, no Ray traceback, the same words
            assert local == (2, [expected]), (ray_input, local)
            assert ray_run == (2, [expected]), (ray_input, ray_run)
            continue
        assert local[0] == 0 and ray_run[0] == 0, (ray_input, local, ray_run)
        ids, vectors = load_shards(shards)
        table = pq.read_table(parquet)
        assert ids == table["id"].to_pylist() == expected, ray_input
        assert np.abs(vectors_of(table) - vectors).max() <= 1e-6, ray_input
        if "--skip-bad-lines" in flags:  # skipped and counted as the shard writer does, the first one named
            first = f'{local_input}:3: "text" is int, expected a string'
            assert f"skipped 3 bad lines (listed in {shards / 'manifest.json'}); first: {first}" in local[1]
            assert f"skipped 3 bad lines; first: {first}" in ray_run[1], ray_run[1]
