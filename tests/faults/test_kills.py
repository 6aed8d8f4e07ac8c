"""kill -9, SIGSTOP, SIGTERM and Ctrl-C at named points inside the shard writer; two runs into one folder.

Every case ends with the folder equal to an uninterrupted run (ids, vectors, manifest, no stray files),
or with a one-line refusal that left the folder as it was.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from faultkit import (
    SHARD,
    assert_same_output,
    corpus_file,
    drive,
    error_line,
    reference_run,
    shard_args,
    spawn,
    wait_until_stopped,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_checkpoint, tiny_encoder):
    """(model, corpus, reference output) shared by this module's runs."""
    folder = tmp_path_factory.mktemp("kills")
    corpus = corpus_file(folder)
    return tiny_checkpoint, corpus, reference_run(tiny_encoder, corpus, folder / "reference")


@pytest.mark.slow
def test_kill_before_the_first_manifest_leaves_a_folder_that_the_rerun_and_force_accept(tmp_path: Path, setup):
    """Before: a folder killed before its first manifest was 'not a minilm shard folder' to the rerun and to --force."""
    model, corpus, reference = setup
    out = tmp_path / "out"
    killed = drive("--at", "before-first-manifest:1:kill", args=shard_args(model, corpus, out))
    assert killed.returncode == -signal.SIGKILL
    assert [p.name for p in out.iterdir()] == [".minilm.lock"]  # the lock file only: nothing else was written
    rerun = drive(args=shard_args(model, corpus, out))
    assert rerun.returncode == 0, rerun.stderr
    assert_same_output(out, reference)

    killed_again = tmp_path / "again"
    assert (
        drive("--at", "before-first-manifest:1:kill", args=shard_args(model, corpus, killed_again)).returncode
        == -signal.SIGKILL
    )
    forced = drive(args=shard_args(model, corpus, killed_again, "--force"))
    assert forced.returncode == 0, forced.stderr
    assert_same_output(killed_again, reference)


@pytest.mark.parametrize("point", ["after-npy", "after-ids", "after-texts", "before-manifest"])
@pytest.mark.slow
def test_kill_inside_a_shard_write_resumes_to_the_uninterrupted_output(tmp_path: Path, setup, point: str):
    """kill -9 after a shard's .npy and before its ids, after the ids, after the texts, and before the manifest lists them."""
    model, corpus, reference = setup
    out = tmp_path / "out"
    killed = drive("--at", f"{point}:3:kill", args=shard_args(model, corpus, out))
    assert killed.returncode == -signal.SIGKILL
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == 2 * SHARD and not manifest["complete"]  # the third shard is not listed yet
    assert (out / "part-00002.npy").is_file()  # but its .npy is there, unlisted
    rerun = drive(args=shard_args(model, corpus, out))
    assert rerun.returncode == 0, rerun.stderr
    assert_same_output(out, reference)


def test_stale_temporary_files_of_a_killed_write_are_removed_by_the_rerun(tmp_path: Path, setup):
    """A kill inside a write leaves `.part-*.tmp`; they stayed forever."""
    model, corpus, reference = setup
    out = tmp_path / "out"
    assert drive("--at", "after-ids:2:kill", args=shard_args(model, corpus, out)).returncode == -signal.SIGKILL
    stale = [out / ".part-00002.npy.k2j3h4.tmp", out / ".manifest.json.x8y9z0.tmp"]
    for path in stale:
        path.write_bytes(b"half a write")
    rerun = drive(args=shard_args(model, corpus, out))
    assert rerun.returncode == 0, rerun.stderr
    assert not any(path.exists() for path in stale)
    assert_same_output(out, reference)


@pytest.mark.parametrize("action, status, word", [("term", 143, "terminated"), ("int", 130, "interrupted")])
@pytest.mark.slow
def test_sigterm_and_ctrl_c_finish_the_shard_then_stop_with_a_message(
    tmp_path: Path, setup, action: str, status: int, word: str
):
    """Before: SIGTERM exited 143 with no message. Now it stops after the current shard, as Ctrl-C does."""
    model, corpus, reference = setup
    out = tmp_path / "out"
    stopped = drive("--at", f"after-npy:4:{action}", args=shard_args(model, corpus, out))
    assert stopped.returncode == status, stopped.stderr
    assert (
        stopped.stderr.splitlines()[-1]
        == f"{word}: {4 * SHARD} texts in 4 shards are safe in {out}/; rerun the same command to continue"
    )
    assert "Traceback" not in stopped.stderr
    assert json.loads((out / "manifest.json").read_text())["rows"] == 4 * SHARD  # the shard in hand was finished
    rerun = drive(args=shard_args(model, corpus, out))
    assert rerun.returncode == 0, rerun.stderr
    assert_same_output(out, reference)


@pytest.mark.slow
def test_a_second_run_into_a_folder_in_use_stops_at_once_naming_the_first(tmp_path: Path, setup):
    """Before: two runs with different inputs into one new folder both exited 0, their rows mixed."""
    model, corpus, reference = setup
    other = corpus_file(tmp_path / "other", 500, "other.txt")
    out = tmp_path / "out"
    first = spawn("--at", "after-ids:2:stop", args=shard_args(model, corpus, out))
    try:
        wait_until_stopped(first)
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        second = drive(args=shard_args(model, other, out))
        error_line(second, f"{out} is being written by another run (pid {first.pid} on ", "wait for it to end")
        forced = drive(args=shard_args(model, other, out, "--force"))  # --force does not break a lock either
        error_line(forced, f"pid {first.pid}")
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # neither touched a file
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert_same_output(out, reference)


@pytest.mark.slow
def test_deleting_or_symlinking_the_lock_file_lets_no_second_run_in(tmp_path: Path, setup):
    """Second pass: with .minilm.lock deleted, a second run got in; a symlinked one had its target overwritten."""
    model, corpus, reference = setup
    out = tmp_path / "out"
    first = spawn("--at", "after-ids:2:stop", args=shard_args(model, corpus, out))
    try:
        wait_until_stopped(first)
        (out / ".minilm.lock").unlink()
        error_line(
            drive(args=shard_args(model, corpus, out, "--force", "--precision", "float16")),
            "is being written by another run",
        )
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert_same_output(out, reference)

    precious = tmp_path / "precious.txt"
    precious.write_text("mine")
    (out / ".minilm.lock").unlink(missing_ok=True)  # the first run wrote it before the test deleted it
    (out / ".minilm.lock").symlink_to(precious)
    error_line(drive(args=shard_args(model, corpus, out)), ".minilm.lock is not a plain file")
    assert precious.read_text() == "mine"


def test_a_folder_with_someone_elses_manifest_is_not_touched_even_with_force(tmp_path: Path, setup):
    """Second pass: any manifest.json passed for ours, and --force overwrote it."""
    model, corpus, _ = setup
    site = tmp_path / "site"
    site.mkdir()
    (site / "manifest.json").write_text('{"name": "app"}')
    (site / "index.html").write_text("<html></html>")
    for extra in ([], ["--force"]):
        error_line(
            drive(args=shard_args(model, corpus, site, *extra)), f"{site} exists and is not a minilm shard folder"
        )
    assert (
        sorted(p.name for p in site.iterdir()) == ["index.html", "manifest.json"]
        and (site / "manifest.json").read_text() == '{"name": "app"}'
    )
