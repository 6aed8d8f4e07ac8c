"""Readers that cannot swallow data: a stray CSV quote, lone-CR line endings, and the quieter surprises
(truncation in shard mode, a big CSV field, a .json file, repeated ids, a file of blank lines)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from minilm.corpus import load_shards

from conftest import real_lines, run_module
from faultkit import drive, error_line, shard_args

ROWS = 900


def stray_quote_csv(folder: Path, closing_row: int | None) -> Path:
    """id,text rows 1..900 with a quote opening the text of row 11; `closing_row` ends its text with a quote."""
    rows = [f"{i},{text}" for i, text in enumerate(real_lines(ROWS), start=1)]
    rows[10] = f'11,"{real_lines(11)[10]}'
    if closing_row is not None:
        rows[closing_row - 1] += '"'
    path = folder / "stray.csv"
    path.write_text(
        "id,text\n"
        + "".join(
            r.replace('"', "") + "\n" if i not in (10, (closing_row or 0) - 1) else r + "\n" for i, r in enumerate(rows)
        )
    )
    return path


@pytest.mark.parametrize(
    "closing_row, lines",
    [
        (None, ":12-901: a CSV record runs on over 890 lines"),
        (200, ":12-201: a CSV record runs on over 190 lines"),
        (16, ":12-17: a CSV record runs on"),
    ],
)
@pytest.mark.parametrize("how", ["shards", "shards --skip-bad-lines", "jsonl", "heads.predict"])
def test_a_stray_csv_quote_stops_every_reader_with_the_lines_it_swallowed(
    tmp_path: Path, tiny_checkpoint, closing_row, lines, how
):
    """Before: one stray quote gave '11 embeddings', exit 0 (or 1 bad line for 188 lost records)."""
    path = stray_quote_csv(tmp_path, closing_row)
    if how.startswith("shards"):
        proc = drive(args=shard_args(tiny_checkpoint, path, tmp_path / "out", *how.split()[1:]))
    elif how == "jsonl":
        proc = drive(args=["--model", str(tiny_checkpoint), "--no-verify", "--input", str(path), "--format", "jsonl"])
    else:
        proc = drive(module="heads.predict", args=["--input", str(path)])
    error_line(proc, f"{path}{lines}", "a stray quote?", "this is not skipped")


def test_a_quoted_line_break_with_commas_is_still_one_record(tmp_path: Path, tiny_encoder):
    path = tmp_path / "ok.csv"
    path.write_text('id,text\n1,"Dear Bob,\nthanks, see you"\n2,"a ""quoted"" word"\n3,plain\n')
    from minilm.cli import read_texts

    assert read_texts(str(path)) == ["Dear Bob,\nthanks, see you", 'a "quoted" word', "plain"]


@pytest.mark.parametrize("name", ["old-mac.txt", "old-mac.jsonl", "old-mac.csv", "-"])
def test_lone_cr_line_endings_are_refused_not_read_as_one_text(tmp_path: Path, tiny_checkpoint, name: str):
    """Before: a file with CR line endings became one text, exit 0."""
    texts = real_lines(1000)
    if name.endswith(".jsonl"):
        data = "".join(json.dumps({"text": t}) + "\r" for t in texts)
    elif name.endswith(".csv"):
        data = "text\r" + "".join(t.replace('"', "") + "\r" for t in texts)
    else:
        data = "".join(t + "\r" for t in texts)
    path = tmp_path / (name if name != "-" else "stdin.txt")
    path.write_bytes(data.encode())
    fix = "a carriage return (\\r) inside the line: old Mac line endings"
    if name == "-":
        proc = drive(
            args=["--model", str(tiny_checkpoint), "--no-verify", "-", "--format", "jsonl"], stdin=path.read_bytes()
        )
        error_line(proc, "<stdin>:1: " + fix)
        return
    error_line(drive(args=shard_args(tiny_checkpoint, path, tmp_path / "out")), f"{path}:1: {fix}", "tr '\\r' '\\n'")
    error_line(drive(args=shard_args(tiny_checkpoint, path, tmp_path / "out2", "--skip-bad-lines")), f"{path}:1: {fix}")
    error_line(
        drive(args=["--model", str(tiny_checkpoint), "--no-verify", "--input", str(path), "--format", "jsonl"]),
        f"{path}:1: {fix}",
    )


def test_shard_mode_warns_about_truncated_texts(tmp_path: Path, tiny_checkpoint, tiny_encoder):
    """Before: the README promised the truncation warning, but shard mode never printed it."""
    long_text = " ".join(real_lines(60))  # well over 256 word pieces
    texts = [*real_lines(30), long_text, long_text + " again"]
    path = tmp_path / "corpus.txt"
    path.write_text("".join(t + "\n" for t in texts))
    n_tokens = tiny_encoder.encode_detailed(texts).n_tokens
    proc = drive(args=shard_args(tiny_checkpoint, path, tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert (
        f"warning: 2 of 32 texts exceed 256 tokens and were truncated (longest: {max(n_tokens)} tokens)"
        in proc.stderr.splitlines()
    )


def test_a_csv_field_over_128_kib_is_read(tmp_path: Path, tiny_checkpoint, tiny_encoder):
    """Before: the csv module's 128 KiB field limit refused long texts."""
    big = " ".join(real_lines(3000))[:200_000]
    path = tmp_path / "big.csv"
    path.write_text(f'id,text\n1,"{big}"\n2,short\n')
    proc = drive(args=shard_args(tiny_checkpoint, path, tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    ids, vectors = load_shards(tmp_path / "out")
    assert ids == ["2", "3"] and np.abs(vectors - tiny_encoder.encode([big, "short"])).max() <= 1e-6


def test_a_json_file_is_refused_with_the_fix(tmp_path: Path, tiny_checkpoint):
    """Before: a .json array was embedded as raw lines."""
    path = tmp_path / "texts.json"
    path.write_text('[\n  {"text": "one"},\n  {"text": "two"}\n]\n')
    error_line(
        drive(args=["--model", str(tiny_checkpoint), "--no-verify", "--input", str(path)]),
        f"{path} is a .json file",
        ".jsonl",
    )
    error_line(drive(args=shard_args(tiny_checkpoint, path, tmp_path / "out")), "jq -c '.[]'")


def test_repeated_ids_are_counted_and_warned(tmp_path: Path, tiny_checkpoint):
    """Before: duplicate ids were stored without a warning."""
    path = tmp_path / "corpus.jsonl"
    ids = ["a", "b", "a", "c", "b", "a"]
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(ids, real_lines(6))))
    proc = drive(args=shard_args(tiny_checkpoint, path, tmp_path / "out", "--id-field", "id"))
    assert proc.returncode == 0, proc.stderr
    assert f"warning: repeated id 'a' at {path}:3 (first at line 1)" in proc.stderr
    assert (
        f"warning: 3 ids repeat an earlier one (listed in {tmp_path / 'out' / 'manifest.json'}); first: 'a' at {path}:3 (first at line 1)"
        in proc.stderr
    )
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["repeated_ids"]["count"] == 3
    assert load_shards(tmp_path / "out")[0] == ids  # stored as given: the ids are the user's


def test_a_file_of_blank_lines_is_refused_the_same_way_by_every_mode(tmp_path: Path, tiny_checkpoint):
    """Before: four blank lines embedded as four empty texts in table mode, but stopped shard mode."""
    path = tmp_path / "blank.txt"
    path.write_text("\n \n\n\t\n")
    error_line(
        drive(args=["--model", str(tiny_checkpoint), "--no-verify", "--input", str(path)]),
        f"{path} holds only blank lines",
    )
    error_line(drive(args=shard_args(tiny_checkpoint, path, tmp_path / "out")), f"{path}:1: empty line")
    skipped = drive(args=shard_args(tiny_checkpoint, path, tmp_path / "out2", "--skip-bad-lines"))
    assert (
        skipped.returncode == 2
        and skipped.stderr.splitlines()[-1] == f"error: {path} holds no texts to embed (4 bad lines skipped)"
    )
    assert skipped.stderr.count("warning: skipped ") == 4 and "Traceback" not in skipped.stderr
    mixed = run_module(
        "minilm.embed",
        "--model",
        str(tiny_checkpoint),
        "--no-verify",
        "-",
        "--format",
        "jsonl",
        stdin=b"one\n\nthree\n",
    )
    assert mixed.returncode == 0 and [json.loads(l)["text"] for l in mixed.stdout.decode().splitlines()] == [
        "one",
        "",
        "three",
    ]


def test_a_stray_quote_in_a_one_column_csv_stops_the_run(tmp_path: Path, tiny_checkpoint):
    """Second pass: with one column, a quote on line 101 closed on line 601 swallowed 500 records, exit 0."""
    rows = [t.replace('"', "").replace(",", "") for t in real_lines(1000)]
    rows[100], rows[600] = '"' + rows[100], rows[600] + '"'
    path = tmp_path / "one.csv"
    path.write_text("text\n" + "".join(r + "\n" for r in rows))
    error_line(
        drive(args=shard_args(tiny_checkpoint, path, tmp_path / "out")),
        f"{path}:102-602: a CSV record runs on over 501 lines",
    )


def test_a_corrupt_parquet_page_is_one_line(tmp_path: Path, tiny_checkpoint):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"text": real_lines(3000)}), path, compression="snappy")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 400] = bytes(400)
    path.write_bytes(bytes(data))
    proc = drive(args=shard_args(tiny_checkpoint, path, tmp_path / "out"))
    error_line(proc, f"{path}: rows after", "the file is damaged")


def test_a_header_naming_the_text_column_twice_is_refused(tmp_path: Path, tiny_checkpoint):
    path = tmp_path / "twice.csv"
    path.write_text("text,text\na,b\n")
    error_line(
        drive(args=shard_args(tiny_checkpoint, path, tmp_path / "out")), f'{path}:1: the header names "text" 2 times'
    )


def test_json_ids_keep_their_json_spelling(tmp_path: Path, tiny_checkpoint):
    path = tmp_path / "ids.jsonl"
    path.write_text(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip([True, 1.0, 7, "x"], real_lines(4)))
    )
    assert drive(args=shard_args(tiny_checkpoint, path, tmp_path / "out", "--id-field", "id")).returncode == 0
    assert load_shards(tmp_path / "out")[0] == ["true", "1.0", "7", "x"]


def test_calibrate_names_the_file_and_line_of_a_byte_that_is_not_utf8(tmp_path: Path):
    """calibrate read its STS-B .csv with open(), and a bad byte was a UnicodeDecodeError naming neither."""
    row = "main-captions\tMSRvid\t2012test\t0001\t5.000\tA man plays.\tA man is playing.\n"
    bad = tmp_path / "sts.csv"
    bad.write_bytes((row * 2).encode() + b"main\tx\ty\t3\t1.0\tcaf\xe9\tcafe\n")
    error_line(
        drive(module="minilm.calibrate", args=["--stsb", "--input", str(bad)]), f"{bad}:3: not valid UTF-8 (byte 0xe9"
    )
    error_line(
        drive(module="minilm.calibrate", args=["--stsb", "--input", str(bad), "--alpha", "nan"]),
        "argument --alpha: must be a finite number >= 0 and <= 1, got nan",
    )


def test_calibrate_reads_a_csv_as_every_command_does_and_stsb_only_when_asked(tmp_path: Path):
    """calibrate read every .csv as STS-B's tab-separated columns, while every other command reads a .csv
    as comma-separated with a header; now --stsb says which, and a row STS-B cannot be is named."""
    from minilm.base.stsb import read_stsb
    from minilm.base.textio import InputError
    from minilm.calibrate import read_calibration_texts

    table = tmp_path / "texts.csv"
    table.write_text('id,text\n1,"A man plays, loudly."\n2,A dog runs.\n3,A dog runs.\n')
    assert read_calibration_texts(str(table)) == ["A man plays, loudly.", "A dog runs."]
    sts = tmp_path / "sts.csv"
    sts.write_text("g\tf\t2012\t0001\t5.000\tA man plays.\tA man is playing.\ng\tf\t2012\t0002\t1.5\tOne.\tTwo.\n")
    assert read_calibration_texts(str(sts), stsb=True) == ["A man plays.", "A man is playing.", "One.", "Two."]
    assert read_stsb(sts) == ([5.0, 1.5], ["A man plays.", "One."], ["A man is playing.", "Two."])
    with pytest.raises(InputError, match=r"^.*texts\.csv:1: expected STS-B's tab-separated columns, got 1$"):
        read_calibration_texts(str(table), stsb=True)
    sts.write_text("g\tf\t2012\t0001\tfive\tA man plays.\tA man is playing.\n")
    with pytest.raises(InputError, match=r"sts\.csv:1: the score \(column 5\) is 'five', not a number$"):
        read_stsb(sts)
