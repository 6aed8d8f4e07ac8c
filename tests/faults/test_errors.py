"""Every user error is one `error:` line with exit 2, never a traceback;
a closed pipe is quiet; Ctrl-C and SIGTERM during the model load are one line too."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, write_tiny_checkpoint
from faultkit import DRIVER, corpus_file, drive, error_line, shard_args


def config_copy(folder: Path, source: Path, raw: str) -> Path:
    """A copy of the real checkpoint (links) whose config.json is `raw`."""
    folder.mkdir()
    for path in source.rglob("*"):
        if path.is_file() and path != source / "config.json":
            (folder / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (folder / path.relative_to(source)).symlink_to(path)
    (folder / "config.json").write_text(raw)
    return folder


@pytest.mark.parametrize(
    "raw, with_verify, without_verify",
    [
        ('{"hidden_size": 3840000}', "config.json: sha256 mismatch", "does not fit the encoder built from config.json"),
        (
            '{"vocab_size": "abc"}',
            "config.json: sha256 mismatch",
            "config.json: \"vocab_size\" must be an integer >= 1 and <= 16777216, got 'abc'",
        ),
        ("[1, 2]", "config.json: sha256 mismatch", "config.json holds a JSON list, not an object of BERT settings"),
    ],
)
def test_a_malformed_config_json_is_one_line_with_and_without_verify(
    tmp_path: Path, checkpoint_dir, raw, with_verify, without_verify
):
    """hidden_size 3,840,000 tried to allocate 468 GB; "abc" and a list were tracebacks."""
    base = json.loads((checkpoint_dir / "config.json").read_text())
    text = json.dumps({**base, **json.loads(raw)}) if raw.startswith("{") else raw
    folder = config_copy(tmp_path / "copy", checkpoint_dir, text)
    error_line(drive(args=["--model", str(folder), "A sentence."]), with_verify, "--no-verify")
    error_line(drive(args=["--model", str(folder), "--no-verify", "A sentence."]), without_verify)


def test_tokenizer_ids_beyond_the_vocabulary_are_one_line_without_verify(tmp_path: Path, checkpoint_dir):
    """With --no-verify, a tokenizer whose ids exceed the vocabulary gave an IndexError."""
    small = write_tiny_checkpoint(tmp_path / "small-vocab", checkpoint_dir, {"vocab_size": 1000})
    error_line(
        drive(args=["--model", str(small), "--no-verify", "A sentence."]),
        "has token ids up to 30521, but config.json's vocab_size is 1000",
    )


@pytest.mark.parametrize(
    "module, args, needle",
    [
        ("minilm.embed", ["--device", "tpu", "A sentence."], "unknown device 'tpu'; use cpu, cuda, cuda:N or mps"),
        ("heads.predict", ["--device", "tpu", "A sentence."], "unknown device 'tpu'"),
        ("minilm.embed", ["--model", "", "A sentence."], "the checkpoint name is empty"),
        ("minilm.embed", ["--input", "/proc/self/mem"], "cannot read /proc/self/mem: Input/output error"),
        (
            "heads.train",
            ["--limit", "sentiment=0", "--output", "{tmp}/m"],
            "--limit 'sentiment=0': train on at least 1 example",
        ),
        (
            "heads.train",
            ["--tasks", "question_type", "--data-dir", "{tmp}/data", "--output", "{tmp}/m"],
            "trec/train.txt holds 0 questions; more than 500 are needed",
        ),
        ("heads.predict", ["--model", "{checkpoint}", "A sentence."], "is an encoder checkpoint, not a heads folder"),
    ],
)
def test_user_errors_are_one_line_exit_2(tmp_path: Path, checkpoint_dir, module, args, needle):
    (tmp_path / "data" / "trec").mkdir(parents=True)
    (tmp_path / "data" / "trec" / "train.txt").write_text("")  # an empty training set
    args = [a.format(tmp=tmp_path, checkpoint=checkpoint_dir) for a in args]
    error_line(drive(module=module, args=args), needle)
    assert not (tmp_path / "m").exists()


def test_an_unreadable_input_in_shard_mode_is_one_line(tmp_path: Path, tiny_checkpoint):
    error_line(
        drive(args=shard_args(tiny_checkpoint, Path("/proc/self/mem"), tmp_path / "out")), "cannot read /proc/self/mem"
    )


@pytest.mark.parametrize(
    "module, args",
    [
        ("heads.predict", ["Who founded Apple?", "A dull film."]),
        ("minilm.explain", ["A sentence."]),
        ("minilm.weights", ["list"]),
        ("minilm.embed", ["--format", "jsonl", "A sentence.", "Another."]),
    ],
)
@pytest.mark.slow
def test_a_closed_pipe_is_quiet(module: str, args: list[str]):
    """BrokenPipe tracebacks in heads.predict, minilm.explain and weights list when piped into `head -1`."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: every write fails with EPIPE
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], stdout=write, stderr=subprocess.PIPE, cwd=ROOT, env=env, timeout=300
    )
    os.close(write)
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr.decode()[-2000:]


@pytest.mark.parametrize("name, status, word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
@pytest.mark.parametrize("module", ["minilm.embed", "heads.predict"])
@pytest.mark.slow
def test_ctrl_c_and_sigterm_during_the_model_load_are_one_line(module: str, name: str, status: int, word: str):
    proc = drive("--signal-in", f"minilm.weights.checkpoint.load_model:{name}", module=module, args=["A sentence."])
    assert proc.returncode == status and proc.stderr == f"{word}\n", proc.stderr[-2000:]


@pytest.mark.slow
def test_ctrl_c_is_one_line_even_when_the_test_run_ignores_sigint():
    """A suite started in the background (`bash .ci/run &`) runs with SIGINT ignored, and every process it
    starts inherits that: the model-load SIGINT tests above then saw the command finish with status 0.
    The driver stands for a terminal, where Ctrl-C is Python's KeyboardInterrupt."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    signal_in = ["--signal-in", "minilm.weights.checkpoint.load_model:SIGINT"]
    proc = subprocess.run(
        [sys.executable, str(DRIVER), *signal_in, "--", "minilm.embed", "A."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert proc.returncode == 130 and proc.stderr == "interrupted\n", (proc.returncode, proc.stderr[-2000:])


@pytest.mark.slow
def test_ctrl_c_before_the_first_shard_leaves_a_resumable_folder(tmp_path: Path, tiny_checkpoint):
    corpus = corpus_file(tmp_path, 500)
    out = tmp_path / "out"
    proc = drive(
        "--signal-in", "minilm.corpus.shards.read_records:SIGINT", args=shard_args(tiny_checkpoint, corpus, out)
    )
    assert proc.returncode == 130 and "Traceback" not in proc.stderr
    assert json.loads((out / "manifest.json").read_text())["rows"] == 0
    assert drive(args=shard_args(tiny_checkpoint, corpus, out)).returncode == 0


def test_normalize_must_be_a_bool(tiny_encoder):
    """normalize="no" normalized."""
    with pytest.raises(TypeError, match="normalize must be True, False or None, got 'no'"):
        tiny_encoder.encode(["A sentence."], normalize="no")
    raw = tiny_encoder.encode(["A sentence."], normalize=False)
    assert abs(np.linalg.norm(raw) - 1) > 1e-3  # the tiny model's raw vectors are not unit length


def test_force_writes_through_a_symlink(tmp_path: Path, tiny_checkpoint):
    """--force on a symlink replaced the link with a file."""
    target = tmp_path / "real" / "vectors.npy"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "vectors.npy"
    link.symlink_to(target)
    proc = drive(
        args=[
            "--model",
            str(tiny_checkpoint),
            "--no-verify",
            "One.",
            "Two.",
            "--format",
            "npy",
            "--output",
            str(link),
            "--force",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert np.load(target).shape == (2, 32)


class CountingWindows(list):
    """A list of windows that counts how often its items are read."""

    reads = 0

    def __getitem__(self, index):
        CountingWindows.reads += 1
        return super().__getitem__(index)

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]


def test_the_window_merge_is_linear_in_the_text_length():
    """Before: heads.predict took 94 s on one 500 KB line: every token scanned every window."""
    from heads.ner import window_owners
    from minilm.text.windows import token_windows

    for n in (2_000, 20_000):
        windows = CountingWindows(token_windows(n, 254, 127))
        CountingWindows.reads = 0
        owners = window_owners(windows)
        assert len(owners) == n and owners[0] == 0 and owners[-1] == len(windows) - 1
        assert CountingWindows.reads <= 12 * (n + len(windows)), (
            n,
            CountingWindows.reads,
        )  # scanning all: n x 157 = 3.1M at 20,000


@pytest.mark.parametrize("target", ["/dev/full", "closed"])
@pytest.mark.slow
def test_a_stdout_that_cannot_be_written_is_one_line(target: str, tiny_checkpoint):
    """Second pass: > /dev/full and >&- were tracebacks."""
    command = [
        sys.executable,
        "-m",
        "minilm.embed",
        "--model",
        str(tiny_checkpoint),
        "--no-verify",
        "--format",
        "jsonl",
        "One.",
        "Two.",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if target == "/dev/full":
        with open("/dev/full", "w") as full:
            proc = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, cwd=ROOT, env=env, timeout=300)
        expected = "error: cannot write the output: No space left on device"
    else:
        proc = subprocess.run(
            command, stdout=None, stderr=subprocess.PIPE, cwd=ROOT, env=env, timeout=300, preexec_fn=lambda: os.close(1)
        )
        expected = "error: standard output is closed; redirect it to a file, or give --output"
    assert proc.returncode == 2 and proc.stderr.decode().splitlines() == [expected], proc.stderr.decode()[-2000:]


@pytest.mark.slow
def test_a_text_argument_that_is_not_utf8_is_one_line(tiny_checkpoint):
    command = [
        sys.executable.encode(),
        b"-m",
        b"minilm.embed",
        b"--model",
        str(tiny_checkpoint).encode(),
        b"--no-verify",
        b"\xff\xfe",
        b"ok",
    ]
    proc = subprocess.run(
        command, capture_output=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300
    )
    assert proc.returncode == 2 and proc.stderr.decode().splitlines() == [
        "error: text argument 1 is not valid UTF-8; pass UTF-8 text, or the texts in a file with --input"
    ]


@pytest.mark.parametrize(
    "name, raw, needle",
    [
        ("modules.json", '{"a": 1}', "modules.json is not a list of modules"),
        ("modules.json", '[{"idx": 0}, 5]', "modules.json is not a list of modules"),
        ("sentence_bert_config.json", "[1]", "sentence_bert_config.json holds a JSON list"),
        ("1_Pooling/config.json", "[1]", "1_Pooling/config.json holds a JSON list"),
        (
            "sentence_bert_config.json",
            '{"max_seq_length": 1}',
            'sentence_bert_config.json: "max_seq_length" must be an integer >= 3, got 1',
        ),
    ],
)
def test_odd_sentence_transformers_files_are_one_line(
    tmp_path: Path, tiny_checkpoint, name: str, raw: str, needle: str
):
    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    (model / name).write_text(raw)
    error_line(drive(args=["--model", str(model), "--no-verify", "A sentence."]), needle)


@pytest.mark.parametrize(
    "edit, needle",
    [
        (
            lambda c: c["tasks"][0].pop("labels"),
            "tasks[0] needs a name, a kind (sentence or token) and a list of labels",
        ),
        (lambda c: c["tasks"][0].update(kind="bogus"), "tasks[0] needs a name, a kind"),
        (lambda c: c.update(tasks=["ner"]), "tasks[0] needs a name"),
        (lambda c: c.update(backbone={}), "the backbone has no sha256"),
        (lambda c: c.update(heads_sha256="0" * 64), "the folder mixes two saves (one was stopped half-way)"),
        (None, "heads.safetensors is missing; retrain or restore the model folder"),
    ],
)
def test_a_damaged_heads_folder_is_one_line(tmp_path: Path, edit, needle: str):
    """Second pass: edited heads configs were tracebacks or wrong messages; a save killed between its files mixed two models."""
    from heads.predictor import shipped_heads

    folder = tmp_path / "heads"
    shutil.copytree(shipped_heads(), folder)
    if edit is None:
        (folder / "heads.safetensors").unlink()
    else:
        config = json.loads((folder / "config.json").read_text())
        edit(config)
        (folder / "config.json").write_text(json.dumps(config))
    error_line(drive(module="heads.predict", args=["--model", str(folder), "A sentence."]), needle)


@pytest.mark.parametrize(
    "module, args, message",
    [
        (
            "minilm.embed",
            ["--shard-size", "0", "x"],
            "error: argument --shard-size: must be an integer >= 1, got 0; see python -m minilm.embed --help",
        ),
        ("minilm.embed", ["--precision", "float8", "x"], "error: argument --precision: invalid choice: 'float8'"),
        ("minilm.weights", ["frob"], "error: argument command: invalid choice: 'frob'"),
        (
            "heads.train",
            ["--max-steps", "-1", "--output", "m"],
            "error: argument --max-steps: must be an integer >= 0, got -1; see python -m heads.train --help",
        ),
        (
            "heads.train",
            ["--sentence-hidden", "-3", "--output", "m"],
            "error: argument --sentence-hidden: must be an integer >= 0 and <= 16384, got -3",
        ),
        (
            "minilm.embed",
            ["--shard-size", "200", "--input", "{corpus}", "--output", "{tmp}/o"],
            "error: --shard-size apply to shard output",
        ),
        (
            "minilm.embed",
            ["--input", "{corpus}", "--output", "{tmp}/vectors/", "--format", "jsonl"],
            "is a folder; give a file name",
        ),
        (
            "minilm.embed",
            ["--input", "{corpus}", "--output", "{tmp}/out/", "--id-field", "id"],
            "--id-field names a field of .jsonl",
        ),
    ],
)
def test_a_bad_option_is_one_line(tmp_path: Path, module: str, args: list[str], message: str):
    """Second pass: argparse printed its whole usage block; options that only shards use were ignored elsewhere."""
    corpus = corpus_file(tmp_path, 10)
    proc = drive(module=module, args=[a.format(tmp=tmp_path, corpus=corpus) for a in args])
    line = error_line(proc)
    assert message in line, line
    assert not (tmp_path / "o").exists() and not (tmp_path / "vectors").exists()


class CountingEncoding:
    """A tokenizers.Encoding stand-in that counts reads of its per-token lists (each read builds a new list)."""

    def __init__(self, encoding) -> None:
        self.encoding, self.reads = encoding, 0

    def __getattr__(self, name: str):
        if name in ("ids", "offsets", "word_ids"):
            self.reads += 1
        return getattr(self.encoding, name)


def test_entities_read_the_token_lists_once_however_many_entities():
    """Found by profiling: 190 of 286 s on one 500 KB line went to re-reading .offsets per entity.

    heads.predict's per-text path (word_features, text_offsets, _entities) reads each list a fixed
    number of times, not once per word or entity."""
    from tokenizers import Tokenizer

    from heads.features import word_features
    from heads.predictor import MultiTaskPredictor
    from minilm.text.windows import text_offsets
    from minilm.weights import resolve_checkpoint

    tokenizer = Tokenizer.from_file(str(resolve_checkpoint().path / "tokenizer.json"))
    tokenizer.no_truncation()  # tokenizer.json carries its own 128
    text = " ".join(["Paris"] * 300)
    piece = CountingEncoding(tokenizer.encode(text, add_special_tokens=False))
    starts, _ = word_features(text, piece)
    offsets = text_offsets(text, piece)
    tags, scores = ["B-LOC"] * len(starts), [0.8] * len(starts)  # every word a B-LOC: 300 entities
    entities = MultiTaskPredictor._entities(piece.word_ids, offsets, text, starts, tags, scores)
    assert len(entities) == 300 and entities[1] == {
        "text": "Paris",
        "label": "LOC",
        "start": 6,
        "end": 11,
        "score": 0.8,
    }
    assert piece.reads <= 6, piece.reads
