"""A full disk (ENOSPC) and a read-only folder: one-line errors that name the file and the fix, and a rerun
that completes once there is room. On a real tmpfs where the machine lets the test mount one; else through
driver.py's audit hook, which fails the same writes with the same errno."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faultkit import (
    assert_same_output,
    corpus_file,
    drive,
    error_line,
    grow_disk,
    reference_run,
    shard_args,
    small_disk,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_checkpoint, tiny_encoder):
    folder = tmp_path_factory.mktemp("disk")
    corpus = corpus_file(folder)
    return tiny_checkpoint, corpus, reference_run(tiny_encoder, corpus, folder / "reference")


@pytest.mark.parametrize("size", ["256k", "4k"])
def test_a_full_disk_stops_with_one_line_and_the_rerun_with_room_completes(tmp_path: Path, setup, size: str):
    """Before: a full disk gave a traceback; full while writing the first manifest left a folder
    that neither the rerun nor --force accepted. 256k fills mid-run, 4k at the first manifest."""
    model, corpus, reference = setup
    disk = tmp_path / "disk"
    with small_disk(disk, size) as faults:
        out = disk / "out"
        full = drive(*faults, args=shard_args(model, corpus, out))
        error_line(full, "No space left on device")
        if not faults:
            line = full.stderr.splitlines()[-1]
            assert (
                f"cannot write {out}/" in line and "rerun the same command to continue" in line
            ) or "choose a writable --output folder" in line, line
        if faults or grow_disk(disk, "4m"):
            rerun = drive(args=shard_args(model, corpus, out))
            assert rerun.returncode == 0, rerun.stderr
            assert_same_output(out, reference)


@pytest.mark.parametrize("where", ["the folder itself", "a new folder in it"])
def test_a_read_only_output_folder_is_one_line(tmp_path: Path, setup, where: str):
    model, corpus, _ = setup
    disk = tmp_path / "ro"
    with small_disk(disk, readonly=True) as faults:
        out = disk if where == "the folder itself" else disk / "out"
        error_line(drive(*faults, args=shard_args(model, corpus, out)), "Read-only file system", "--output")


@pytest.mark.parametrize("case", ["read-only", "a file", "a model already"])
def test_heads_train_checks_its_output_before_training(tmp_path: Path, case: str):
    """Before: heads.train found an unwritable or existing --output only after training."""
    disk = tmp_path / "disk"
    disk.mkdir()
    args = [
        "--tasks",
        "question_type",
        "--freeze",
        "backbone",
        "--epochs",
        "1",
        "--limit",
        "question_type=64",
        "--dev-limit",
        "32",
    ]
    if case == "read-only":
        with small_disk(disk, readonly=True) as faults:
            proc = drive(*faults, module="heads.train", args=[*args, "--output", str(disk / "model")])
        error_line(proc, f"--output {disk / 'model'}: cannot write in {disk}", "Read-only file system")
    elif case == "a file":
        (disk / "model").write_text("not a folder")
        error_line(
            drive(module="heads.train", args=[*args, "--output", str(disk / "model")]),
            f"--output {disk / 'model'} is a file",
        )
    else:
        (disk / "model").mkdir()
        (disk / "model" / "config.json").write_text(json.dumps({"tasks": []}))
        error_line(
            drive(module="heads.train", args=[*args, "--output", str(disk / "model")]),
            "already holds a model; pass --force",
        )
