"""A resume checks the shards, not only the manifest (it used to trust the manifest).

Each kind of damage to a finished folder is named by load_shards and by --verify, and the rerun of the
same command embeds that shard again, and only it, back to the uninterrupted output.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from minilm.base.textio import InputError
from minilm.corpus import DamagedShards, load_shards

from faultkit import assert_same_output, corpus_file, drive, error_line, reference_run, shard_args


def truncate(out: Path) -> str:
    path = out / "part-00003.npy"
    path.write_bytes(path.read_bytes()[:-1000])
    return "part-00003.npy is"


def overwrite_with_ff(out: Path) -> str:
    path = out / "part-00003.npy"
    data = path.read_bytes()
    path.write_bytes(data[:128] + b"\xff" * (len(data) - 128))  # same size, the header kept: NaN vectors
    return "part-00003.npy: sha256 differs"


def fewer_rows(out: Path) -> str:
    path = out / "part-00003.npy"
    np.save(path, np.load(path)[:150])  # a valid .npy of 150 rows where 200 were
    return "part-00003.npy is"


def delete(out: Path) -> str:
    (out / "part-00003.npy").unlink()
    return "part-00003.npy is missing"


def edit_ids(out: Path) -> str:
    path = out / "part-00003.ids.json"
    ids = json.loads(path.read_text())
    path.write_text(json.dumps(ids[:-1] + ["not-an-id"]) + "\n")
    return "part-00003.ids.json: sha256 differs"


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_checkpoint, tiny_encoder):
    """(model, corpus, reference, a finished folder to copy) for this module's cases."""
    folder = tmp_path_factory.mktemp("corruption")
    corpus = corpus_file(folder)
    reference = reference_run(tiny_encoder, corpus, folder / "reference")
    out = folder / "finished"
    proc = drive(args=shard_args(tiny_checkpoint, corpus, out))
    assert proc.returncode == 0, proc.stderr
    return tiny_checkpoint, corpus, reference, out


@pytest.mark.parametrize("damage", [truncate, overwrite_with_ff, fewer_rows, delete, edit_ids])
def test_damaged_shard_is_named_and_only_it_is_embedded_again(tmp_path: Path, finished, damage):
    model, corpus, reference, original = finished
    out = tmp_path / "out"
    out.mkdir()
    for path in original.iterdir():
        (out / path.name).write_bytes(path.read_bytes())
    named = damage(out)

    with pytest.raises(DamagedShards, match=named.replace(".", r"\.")):
        load_shards(out)
    error_line(drive(args=["--verify", str(out)]), f"{out}: {named}", "rerun the command that embedded it")

    untouched = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*") if not p.name.startswith("part-00003")}
    rerun = drive(args=shard_args(model, corpus, out))
    assert rerun.returncode == 0, rerun.stderr
    assert f"warning: {named}" in rerun.stderr and "embedding that shard again" in rerun.stderr
    assert {
        p.name: p.stat().st_mtime_ns for p in out.glob("part-*") if not p.name.startswith("part-00003")
    } == untouched
    assert_same_output(out, reference)
    verified = drive(args=["--verify", str(out)])
    assert (
        verified.returncode == 0
        and verified.stdout == f"ok: {out}: 3000 rows in 15 shards match the manifest (complete)\n"
    )


def test_a_manifest_that_is_not_an_object_is_one_line(tmp_path: Path, finished):
    """Before: a manifest that is a JSON list gave a traceback."""
    model, corpus, _, original = finished
    out = tmp_path / "out"
    shutil.copytree(original, out)
    (out / "manifest.json").write_text("[1, 2, 3]\n")
    error_line(
        drive(args=shard_args(model, corpus, out)), f"{out / 'manifest.json'} is not a minilm shard manifest", "--force"
    )
    error_line(drive(args=["--verify", str(out)]), "is not a minilm shard manifest")
    forced = drive(args=shard_args(model, corpus, out, "--force"))
    assert forced.returncode == 0, forced.stderr


def drop_second_entry(manifest: dict) -> None:
    del manifest["shards"][1]
    manifest["rows"] -= 200


def swap_two_entries(manifest: dict) -> None:
    manifest["shards"][1], manifest["shards"][2] = manifest["shards"][2], manifest["shards"][1]


def wrong_total(manifest: dict) -> None:
    manifest["rows"] = 2900


def bytes_as_text(manifest: dict) -> None:
    manifest["shards"][0]["bytes"] = "25728x"


def no_complete_flag(manifest: dict) -> None:
    del manifest["complete"]


def entry_not_an_object(manifest: dict) -> None:
    manifest["shards"][0] = 1


@pytest.mark.parametrize(
    "edit", [drop_second_entry, swap_two_entries, wrong_total, bytes_as_text, no_complete_flag, entry_not_an_object]
)
def test_a_hand_edited_manifest_is_refused_by_every_reader(tmp_path: Path, finished, edit):
    """Second pass: a dropped or swapped entry lost and doubled rows with exit 0; odd fields were tracebacks."""
    model, corpus, _, original = finished
    out = tmp_path / "out"
    shutil.copytree(original, out)
    manifest = json.loads((out / "manifest.json").read_text())
    edit(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    needle = f"{out / 'manifest.json'} is damaged"
    error_line(drive(args=shard_args(model, corpus, out)), needle, "--force")
    error_line(drive(args=["--verify", str(out)]), needle)
    with pytest.raises(InputError, match="is damaged"):
        load_shards(out)


def test_verify_names_a_part_file_the_manifest_does_not_list(tmp_path: Path, finished):
    _, _, _, original = finished
    out = tmp_path / "out"
    shutil.copytree(original, out)
    (out / "part-00015.npy").write_bytes((out / "part-00014.npy").read_bytes())
    error_line(drive(args=["--verify", str(out)]), "part-00015.npy is not listed in the manifest")
