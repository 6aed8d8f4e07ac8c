"""CLI tests: `python -m minilm.embed` run as a real subprocess, checked against the in-process encoder.

Each run imports torch and loads the checkpoint (about 2 s of CPU), so the `cli` fixture starts every
run of this module at once, side by side, and each test waits only for the run it checks; together
they take over 10 s on two cores, so every test that reads a run is marked slow. User errors that
stop before any model work are also checked through `minilm.embed.main` in this process, which is
the same code the subprocess runs, minus the 2 s start: those stay in the quick loop.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_module

LONG_TEXT = " ".join(["word"] * 300)  # 300 word pieces + [CLS] and [SEP] = 302 tokens, over the 256 limit
LF_BYTES = b"The first line.\n\nThe third line.\n"  # the empty middle line is a text of its own
LF_TEXTS = ["The first line.", "", "The third line."]
JSONL_TEXTS = ["A cat sits on the mat.", "Ünïcode — “quoted” text"]
NPY_TEXTS = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell today."]
PARALLEL_RUNS = min(8, (os.cpu_count() or 1) + 1)


@dataclass
class Invocation:
    args: list[str]
    stdin: bytes | None = None


@dataclass
class CliRuns:
    """The module's `python -m minilm.embed` runs, started together; `run(name)` waits for one."""

    folder: Path
    futures: dict[str, Future] = field(default_factory=dict)

    def run(self, name: str):
        return self.futures[name].result()


def write_inputs(d: Path) -> None:
    (d / "crlf.txt").write_bytes(LF_BYTES.replace(b"\n", b"\r\n"))
    jsonl = [
        json.dumps({"text": JSONL_TEXTS[0], "id": 1}, ensure_ascii=False),
        "",
        json.dumps({"text": JSONL_TEXTS[1]}, ensure_ascii=False),
    ]
    (d / "texts.jsonl").write_text("\n".join(jsonl) + "\n", encoding="utf-8")
    (d / "not_utf8.txt").write_bytes(b"a fine first line\nbad \xff byte\n")
    (d / "bad_json.jsonl").write_bytes(b'{"text": "ok"}\n{"text": \n')
    (d / "no_text.jsonl").write_bytes(b'{"text": "ok"}\n\n{"body": "no text field"}\n')
    (d / "int_text.jsonl").write_bytes(b'{"text": 3}\n')
    for folder in ("npy", "forced"):
        (d / folder).mkdir()
    (d / "forced" / "vectors.npy").write_bytes(b"original contents")


def invocations(d: Path) -> dict[str, Invocation]:
    npy = ["--format", "npy", "--output"]
    return {
        "demo": Invocation([]),
        "arguments_jsonl": Invocation(["Hello world", LONG_TEXT, "--format", "jsonl"]),
        "stdin_lf": Invocation(["-", "--format", "jsonl"], stdin=LF_BYTES),
        "file_crlf": Invocation(["--input", str(d / "crlf.txt"), "--format", "jsonl"]),
        "jsonl_to_npy": Invocation(["--input", str(d / "texts.jsonl"), *npy, str(d / "npy" / "vectors.npy")]),
        "forced_unnormalized": Invocation(
            [*NPY_TEXTS, *npy, str(d / "forced" / "vectors.npy"), "--force", "--no-normalize"]
        ),
        # two user errors in a real process: one line on stderr, no traceback (the rest run in-process below)
        "not_utf8": Invocation(["--input", str(d / "not_utf8.txt")]),
        "model_folder_missing": Invocation(["Hello world", "--model", str(d / "no_such_model")]),
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The module's input files and output folders (write_inputs), written once."""
    d = tmp_path_factory.mktemp("cli")
    write_inputs(d)
    return d


@pytest.fixture(scope="module")
def cli(inputs) -> CliRuns:
    runs = CliRuns(inputs)
    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS) as pool:
        for name, inv in invocations(inputs).items():
            runs.futures[name] = pool.submit(run_module, "minilm.embed", *inv.args, stdin=inv.stdin)
        yield runs


def parse_jsonl(stdout: bytes) -> list[dict]:
    """Every stdout line must be one JSON object: results only, nothing else."""
    lines = stdout.decode("utf-8").split("\n")
    assert lines[-1] == "", "stdout must end with a newline"
    return [json.loads(line) for line in lines[:-1]]


def stderr_lines(proc) -> list[str]:
    return proc.stderr.decode("utf-8").splitlines()


def assert_one_line_error(proc, *expected: str) -> str:
    assert proc.returncode == 2, proc.stderr.decode()
    assert proc.stdout == b""
    lines = stderr_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def assert_matches_encoder(records: list[dict], texts: list[str], encoder) -> None:
    detailed = encoder.encode_detailed(texts)
    assert [r["text"] for r in records] == texts
    for record, expected, n_tokens, truncated in zip(
        records, detailed.embeddings, detailed.n_tokens, detailed.truncated
    ):
        assert set(record) == {"text", "embedding", "n_tokens", "truncated"}
        vector = np.array(record["embedding"], dtype=np.float64)
        assert vector.shape == (384,)
        assert abs(np.linalg.norm(vector) - 1.0) < 1e-5
        np.testing.assert_allclose(vector, expected, rtol=0, atol=1e-6)
        assert (record["n_tokens"], record["truncated"]) == (n_tokens, truncated)


# --------------------------------------------------------------------------- results


@pytest.mark.slow
def test_demo_prints_shape_and_cosines_highest_first(cli):
    proc = cli.run("demo")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b"", "the demo must print no warnings"
    lines = proc.stdout.decode().splitlines()
    assert lines[0] == "Embeddings shape: (3, 384)"
    cosines = [float(line.split()[0]) for line in lines[2:]]
    assert cosines == [0.376084, 0.069512, 0.021868]
    assert lines[2].endswith("The cat jumped into the weeds.") and "The dog ran across the grass." in lines[2]


@pytest.mark.slow
def test_arguments_to_jsonl_match_the_encoder_and_report_truncation(cli, encoder):
    proc = cli.run("arguments_jsonl")
    assert proc.returncode == 0, proc.stderr.decode()
    records = parse_jsonl(proc.stdout)
    assert_matches_encoder(records, ["Hello world", LONG_TEXT], encoder)
    assert (records[0]["n_tokens"], records[0]["truncated"]) == (4, False)  # [CLS] hello world [SEP]
    assert records[1]["n_tokens"] == 302 and records[1]["n_tokens"] > 256 and records[1]["truncated"] is True
    warnings = stderr_lines(proc)
    assert len(warnings) == 1 and warnings[0].startswith("warning:") and "truncated" in warnings[0], warnings
    assert "1 of 2" in warnings[0] and "302" in warnings[0]


@pytest.mark.slow
def test_stdin_dash_reads_one_text_per_line_keeping_the_empty_line(cli, encoder):
    proc = cli.run("stdin_lf")
    assert proc.returncode == 0, proc.stderr.decode()
    records = parse_jsonl(proc.stdout)
    assert_matches_encoder(records, LF_TEXTS, encoder)
    assert records[1]["n_tokens"] == 2  # the empty text is [CLS] [SEP]


@pytest.mark.slow
def test_crlf_input_file_gives_the_same_texts_and_vectors_as_lf(cli):
    lf, crlf = cli.run("stdin_lf"), cli.run("file_crlf")
    assert crlf.returncode == 0, crlf.stderr.decode()
    assert [r["text"] for r in parse_jsonl(crlf.stdout)] == LF_TEXTS
    assert crlf.stdout == lf.stdout


@pytest.mark.slow
def test_jsonl_input_to_npy_output_is_float32_and_matches_the_encoder(cli, encoder):
    proc = cli.run("jsonl_to_npy")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b""  # the results went to --output
    folder = cli.folder / "npy"
    assert sorted(p.name for p in folder.iterdir()) == ["vectors.npy"], "no temporary file may be left behind"
    vectors = np.load(folder / "vectors.npy")
    assert vectors.dtype == np.float32 and vectors.shape == (2, 384)
    np.testing.assert_allclose(vectors, encoder.encode(JSONL_TEXTS), rtol=0, atol=1e-6)


@pytest.mark.slow
def test_force_replaces_output_and_no_normalize_keeps_raw_norms(cli, encoder):
    proc = cli.run("forced_unnormalized")
    assert proc.returncode == 0, proc.stderr.decode()
    folder = cli.folder / "forced"
    assert sorted(p.name for p in folder.iterdir()) == ["vectors.npy"]
    vectors = np.load(folder / "vectors.npy")
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    norms = np.linalg.norm(vectors, axis=1)
    assert np.all(np.abs(norms - 1.0) > 1e-2), norms
    np.testing.assert_allclose(vectors, encoder.encode(NPY_TEXTS, normalize=False), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_output_file_gets_ordinary_permissions(cli):
    """--output is written through a temporary file; the result must still get the usual 0o666 & ~umask mode."""
    assert cli.run("jsonl_to_npy").returncode == 0
    umask = os.umask(0)
    os.umask(umask)
    mode = (cli.folder / "npy" / "vectors.npy").stat().st_mode & 0o777
    assert oct(mode) == oct(0o666 & ~umask)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "name, expected",
    [("not_utf8", ["not_utf8.txt:2:", "UTF-8", "0xff"]), ("model_folder_missing", ["no_such_model", "does not exist"])],
)
@pytest.mark.slow
def test_user_error_in_a_real_process_is_one_line_and_exit_2(cli, name, expected):
    assert_one_line_error(cli.run(name), *expected)


def run_main(argv: list[str], capsys):
    """`minilm.embed.main` in this process, as the subprocess would run it: (exit status, stdout, stderr)."""
    from minilm.embed import main

    try:
        status = main(argv)
    except SystemExit as e:  # argparse errors exit from parse_args
        status = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, status, out.encode(), err.encode())


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["Hello world", "--format", "npy"], ["--format npy needs --output"]),
        (["--input", "{d}/not_utf8.txt"], ["not_utf8.txt:2:", "not valid UTF-8", "0xff", "column 5"]),
        (["--input", "{d}/no_such_file.txt"], ["no_such_file.txt", "does not exist"]),
        (["--input", "{d}/bad_json.jsonl"], ["bad_json.jsonl:2:", "invalid JSON"]),
        (
            ["--input", "{d}/no_text.jsonl"],
            ["no_text.jsonl:3:", 'no "text" field'],
        ),  # the blank line 2 is skipped but counted
        (["--input", "{d}/int_text.jsonl"], ["int_text.jsonl:1:", '"text" is int', "expected a string"]),
        (["Hello world", "--input", "{d}/crlf.txt"], ["either as arguments or with --input, not both"]),
        (
            ["Hello world", "--format", "npy", "--output", "{d}/no_such_folder/vectors.npy"],
            ["no_such_folder", "does not exist"],
        ),
        (["Hello world", "--model", "{d}/no_such_model"], ["no_such_model", "does not exist"]),
    ],
    ids=[
        "npy_without_output",
        "not_utf8",
        "missing_input",
        "bad_json",
        "no_text_field",
        "non_string_text",
        "texts_and_input",
        "output_folder_missing",
        "model_folder_missing",
    ],
)
def test_user_error_is_one_line_and_exit_2(inputs, capsys, argv, expected):
    assert_one_line_error(run_main([a.format(d=inputs) for a in argv], capsys), *expected)


def test_existing_output_is_kept_without_force(tmp_path, capsys):
    output = tmp_path / "vectors.npy"
    output.write_bytes(b"original contents")
    assert_one_line_error(
        run_main(["Hello world", "--format", "npy", "--output", str(output)], capsys), "already exists", "--force"
    )
    assert output.read_bytes() == b"original contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.npy"], "no temporary file may be left behind"


def test_unwritable_output_folder_is_a_user_error(tmp_path, capsys, monkeypatch):
    """A folder that refuses new files (read-only, or /proc) is a one-line error, not a traceback."""

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".vectors.npy.tmp"))

    monkeypatch.setattr("minilm.base.textio.tempfile.mkstemp", refuse)
    proc = run_main(["Hello world", "--format", "npy", "--output", str(tmp_path / "vectors.npy")], capsys)
    assert_one_line_error(proc, "Permission denied")
    assert list(tmp_path.iterdir()) == []


def test_unavailable_cuda_device_is_a_user_error(capsys):
    proc = run_main(["Hello world", "--device", "cuda", "--format", "jsonl"], capsys)
    if torch.cuda.is_available():
        assert proc.returncode == 0 and len(parse_jsonl(proc.stdout)) == 1
    else:
        assert_one_line_error(proc, "'cuda'", "CUDA is not available", "--device cpu")


def test_batch_size_0_is_an_argparse_error(capsys):
    proc = run_main(["Hello world", "--batch-size", "0"], capsys)
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr.decode().splitlines() == [
        "error: argument --batch-size/-b: must be an integer >= 1, got 0; see python -m minilm.embed --help"
    ]


# --------------------------------------------------------------------------- output modes and --help


def test_an_output_without_suffix_or_slash_is_refused_naming_both_spellings(tmp_path, capsys):
    (tmp_path / "texts.txt").write_text("one\ntwo\n", encoding="utf-8")
    vectors = tmp_path / "vectors"  # no trailing /, no suffix, no --format, and not an existing folder
    proc = run_main(["--input", str(tmp_path / "texts.txt"), "--output", str(vectors)], capsys)
    assert_one_line_error(proc, f"--output {vectors}/", f"{vectors}.npy", f"{vectors}.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.txt"], "nothing may be written"


def test_an_npy_or_jsonl_output_name_picks_its_format(tmp_path, capsys, tiny_checkpoint):
    model = ["--model", str(tiny_checkpoint), "--no-verify"]
    texts = ["A man is playing a guitar.", "", "The stock market fell today."]
    for argv in (
        [*texts, *model, "--output", str(tmp_path / "picked.npy")],
        [*texts, *model, "--format", "npy", "--output", str(tmp_path / "named.npy")],
        [*texts, *model, "--output", str(tmp_path / "picked.jsonl")],
    ):
        proc = run_main(argv, capsys)
        assert proc.returncode == 0 and proc.stdout == b"", proc.stderr.decode()
    picked, named = np.load(tmp_path / "picked.npy"), np.load(tmp_path / "named.npy")
    assert picked.dtype == np.float32 and picked.shape == (3, 32)  # the tiny checkpoint is 32 wide
    np.testing.assert_array_equal(picked, named)
    records = parse_jsonl((tmp_path / "picked.jsonl").read_bytes())
    assert [r["text"] for r in records] == texts
    np.testing.assert_array_equal(np.array([r["embedding"] for r in records], dtype=np.float32), picked)


def test_help_groups_the_options_and_lists_the_modes(capsys):
    from minilm.embed import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    titles = [line for line in lines if line.endswith(":") and not line.startswith(" ")]
    assert titles[0] in ("options:", "optional arguments:")  # argparse's own title (the latter before Python 3.10)
    assert titles[1:] == [
        "input:",
        "output (the mode follows from --output; see below):",
        "model and compute:",
        "shards (--input FILE --output DIR/):",
        "Ray (--engine ray --input FILE --output DIR/):",
        "modes (chosen by --output and --engine):",
    ]
    modes = lines[lines.index("modes (chosen by --output and --engine):") + 1 :]
    mode_lines = [line for line in modes if line.startswith("  ") and not line.startswith("   ")]  # not continuations
    assert [line.split()[0] for line in mode_lines] == ["(no", "--input", "--engine", "--verify"]


# --------------------------------------------------------------------------- API input checks


def test_encode_names_the_index_of_a_non_string(encoder):
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        encoder.encode(["a", 3])


def test_encode_single_string_gives_a_vector(encoder):
    vector = encoder.encode("x")
    assert vector.shape == (384,) and vector.dtype == np.float32
    np.testing.assert_array_equal(vector, encoder.encode(["x"])[0])
