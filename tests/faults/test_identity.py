"""The run identity covers config.json and the whole input (it missed the one and read 1 MiB of the other).

A changed config.json is reported by `minilm.weights verify` and refused by a resume; an input edited
anywhere, even at the same size, is refused by a resume and reported stale by --verify.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from conftest import run_module
from faultkit import SHARD, corpus_file, drive, error_line, shard_args


@pytest.mark.slow
def test_weights_verify_names_a_changed_config_json(tmp_path: Path, checkpoint_dir):
    copy = tmp_path / "copy"
    shutil.copytree(checkpoint_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "num_attention_heads": 6}, indent=2))

    proc = run_module("minilm.weights", "verify", str(copy))
    assert proc.returncode == 2
    report = proc.stdout.decode().splitlines()
    assert [line.split()[0] for line in report].count("differs") == 1 and report[1].startswith(
        f"differs  {copy / 'config.json'}: sha256 mismatch"
    )
    assert proc.stderr.decode().count("\n") == 1 and "config.json: sha256 mismatch" in proc.stderr.decode()
    embed = run_module("minilm.embed", "--model", str(copy), "A sentence.")
    assert (
        embed.returncode == 2
        and "config.json: sha256 mismatch" in embed.stderr.decode()
        and "--no-verify" in embed.stderr.decode()
    )


def test_a_resume_with_a_changed_config_json_is_refused(tmp_path: Path, tiny_checkpoint):
    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    corpus = corpus_file(tmp_path)
    out = tmp_path / "out"
    assert drive("--at", "after-ids:3:kill", args=shard_args(model, corpus, out)).returncode == -signal.SIGKILL
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(
        json.dumps({**config, "num_attention_heads": 2}, indent=2)
    )  # same weights, other maths
    error_line(drive(args=shard_args(model, corpus, out)), f"{out} holds a run with a different model_files", "--force")
    assert json.loads((out / "manifest.json").read_text())["rows"] == 2 * SHARD  # nothing was added


def edit_after_the_first_mib(data: bytes) -> bytes:
    at = data.index(b"e", (1 << 20) + 100)
    return data[:at] + b"a" + data[at + 1 :]  # one letter, same size


def edit_before_the_first_mib(data: bytes) -> bytes:
    at = data.index(b"e", 1000)
    return data[:at] + b"a" + data[at + 1 :]


def join_two_lines(data: bytes) -> bytes:
    at = data.index(b"\n", (1 << 20) + 100)
    return data[:at] + b" " + data[at + 1 :]  # same size, one line fewer: every later id would shift


@pytest.mark.parametrize("edit", [edit_before_the_first_mib, edit_after_the_first_mib, join_two_lines])
@pytest.mark.slow
def test_an_edited_input_is_refused_on_resume_and_reported_stale(tmp_path: Path, tiny_checkpoint, edit):
    corpus = corpus_file(tmp_path, 18_000)
    assert corpus.stat().st_size > (1 << 20) + 10_000
    out, finished = tmp_path / "out", tmp_path / "finished"
    assert (
        drive(
            "--at", "after-ids:2:kill", args=shard_args(tiny_checkpoint, corpus, out, "--shard-size", "2000")
        ).returncode
        == -signal.SIGKILL
    )
    assert drive(args=shard_args(tiny_checkpoint, corpus, finished, "--shard-size", "2000")).returncode == 0

    size = corpus.stat().st_size
    corpus.write_bytes(edit(corpus.read_bytes()))
    assert corpus.stat().st_size == size
    error_line(
        drive(args=shard_args(tiny_checkpoint, corpus, out, "--shard-size", "2000")),
        f"{out} holds a run with a different input",
        "--force",
    )
    error_line(
        drive(args=["--verify", str(finished)]), f"{corpus} has changed since {finished} was embedded from it", "stale"
    )


@pytest.mark.parametrize("change", ["rewrite lines 501-1000", "truncate to 300 lines"])
@pytest.mark.slow
def test_an_input_changed_during_the_run_is_refused_and_the_rerun_repairs_it(
    tmp_path: Path, tiny_checkpoint, tiny_encoder, change: str
):
    """Second pass: rewriting or truncating the input while a run was stopped gave mixed rows with exit 0."""
    import os

    from conftest import real_lines, write_lines
    from faultkit import assert_same_output, reference_run, spawn, wait_until_stopped

    lines = real_lines(1000)
    corpus = write_lines(tmp_path / "corpus.txt", lines)
    reference = reference_run(tiny_encoder, corpus, tmp_path / "reference")
    original = corpus.read_bytes()
    out = tmp_path / "out"
    run = spawn("--at", "after-npy:1:stop", args=shard_args(tiny_checkpoint, corpus, out))
    wait_until_stopped(run)
    if change.startswith("rewrite"):
        head = "".join(line + "\n" for line in lines[:500]).encode()
        corpus.write_bytes(head + bytes(b if b in b"\n" else ord("x") for b in original[len(head) :]))  # same size
    else:
        write_lines(corpus, lines[:300])
    os.kill(run.pid, signal.SIGCONT)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 2 and stderr.splitlines()[-1] == (
        f"error: {corpus} changed while it was being embedded; once it stops changing, rerun the same command "
        "(it embeds again the shards read from other contents), or pass --force to start over"
    )
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    corpus.write_bytes(original)  # put back: the rerun embeds again what was read from the other contents
    rerun = drive(args=shard_args(tiny_checkpoint, corpus, out))
    assert rerun.returncode == 0, rerun.stderr
    assert_same_output(out, reference)
