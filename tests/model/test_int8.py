"""int8 inference (minilm.model.int8) and its scales file (minilm.weights.int8_scales, minilm.calibrate).

Tier 1: the quantizer and the int8 Linear against hand-computed and brute-force integer results.
Tier 2: the shipped scales are what calibrating on STS-B dev gives, they load only for the weights
they were measured on, and `dtype="auto"` picks by the CPU flags (patched, so every branch runs
here). The quality budget of every mode on 500 real sentences is in test_precision.py.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from minilm import SentenceEncoder
from minilm.calibrate import read_calibration_texts
from minilm.model.int8 import Int8Linear, quantize_rows, smoothing_factors
from minilm.model.precision import choose_auto
from minilm.weights import WeightsError, file_sha256, load_checkpoint
from minilm.weights.int8_scales import FILE_NAME, INT8_SCALE_PINS, load_int8_scales, shipped_scales_path

from conftest import require_data, run_module

# --------------------------------------------------------------------------- tier 1: the arithmetic


def test_quantize_rows_by_hand():
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [0.3, 0.1, -0.2]])
    q, scale = quantize_rows(x.clone())
    # row 0: scale 2/127; 1 -> 63.5 rounds to even 64, -2 -> -127, 0.5 -> 31.75 -> 32
    assert q.dtype == torch.int8
    assert q.tolist() == [[64, -127, 32], [0, 0, 0], [127, 42, -85]]  # 0.1 * 127 / 0.3 = 42.33, -0.2 -> -84.67
    torch.testing.assert_close(scale.view(-1), torch.tensor([2 / 127, 1e-12 / 127, 0.3 / 127]))


def test_int8_linear_equals_the_integer_computation_written_out():
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 20)
    x = torch.randn(7, 48) * torch.linspace(0.1, 5, 48)  # channels of very different size, as in BERT
    smoothing = torch.rand(48) + 0.5
    # by hand: smooth, quantize each side, multiply in exact integers (int64), rescale, add the bias
    w = linear.weight.detach() * smoothing
    w_scale = w.abs().amax(dim=1) / 127
    w_q = (w / w_scale[:, None]).round().to(torch.int64)
    xs = x / smoothing
    x_scale = xs.abs().amax(dim=1) / 127
    x_q = (xs / x_scale[:, None]).round().to(torch.int64)
    expected = (x_q @ w_q.T).double() * x_scale[:, None].double() * w_scale.double() + linear.bias.double()
    with torch.inference_mode():
        got = Int8Linear(linear, smoothing)(x)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    # and it is near the float layer: int8 keeps about 2 significant digits per product
    with torch.inference_mode():
        exact = linear(x)
    assert (got - exact).norm() / exact.norm() < 0.02


def test_smoothing_moves_scale_from_activations_to_weights_without_changing_the_product():
    torch.manual_seed(1)
    weight, x = torch.randn(16, 32), torch.randn(5, 32) * 10 ** torch.linspace(-1, 2, 32)
    s = smoothing_factors(x.abs().amax(dim=0), weight, alpha=0.7)
    torch.testing.assert_close((x / s) @ (weight * s).T, x @ weight.T, rtol=1e-4, atol=1e-3)
    smoothed = (x / s).abs().amax(dim=0)
    assert smoothed.max() / smoothed.min() < (x.abs().amax(0).max() / x.abs().amax(0).min()) ** 0.5  # flatter


@pytest.mark.parametrize("value", [0.0, -0.5, float("nan"), float("inf"), 1e-40, 1e30])
def test_int8_encoder_refuses_a_smoothing_value_that_would_give_nan_vectors(value):
    """A zero scale (and a subnormal, whose inverse is infinite, or a huge one, which
    overflows W * s) made every vector NaN. The model refuses it by layer and index, whoever passes it."""
    from minilm.model.encoder import BertModel
    from minilm.model.int8 import int8_encoder, quantized_input_widths
    from minilm.model.loading import bert_config

    from conftest import TINY

    model = BertModel(bert_config({**TINY, "hidden_act": "gelu"})).eval()
    smoothing = {name: torch.ones(width) for name, width in quantized_input_widths(model).items()}
    smoothing["encoder.layer.1.output.dense"][5] = value
    with pytest.raises(ValueError, match=r"'encoder.layer.1.output.dense'\[5\] must be a finite number >= 1e-06"):
        int8_encoder(model, smoothing)
    smoothing["encoder.layer.1.output.dense"][5] = 1.0
    packed = int8_encoder(model, smoothing)  # sound scales: finite vectors
    ids = torch.randint(0, TINY["vocab_size"], (2, 9))
    with torch.inference_mode():
        assert bool(torch.isfinite(packed(ids, torch.ones_like(ids))).all())


# --------------------------------------------------------------------------- tier 2: the scales file


@pytest.mark.slow
def test_shipped_scales_are_what_calibrating_on_stsb_dev_gives(encoder):
    """weights/int8 holds the calibration of `python -m minilm.calibrate --stsb --input sts-dev.csv`, and its pin is its hash."""
    path = shipped_scales_path("all-MiniLM-L6-v2")
    assert file_sha256(path) == INT8_SCALE_PINS["all-MiniLM-L6-v2"].sha256
    assert path.stat().st_size == INT8_SCALE_PINS["all-MiniLM-L6-v2"].size
    dev = read_calibration_texts(str(require_data("stsbenchmark/sts-dev.csv")), stsb=True)
    assert len(dev) == 2910  # distinct sentences of STS-B dev; test is never seen
    fresh = encoder.calibrate_int8(dev)
    shipped = load_file(path)
    assert fresh.keys() == shipped.keys() and len(shipped) == 24  # 4 int8 layers per block, 6 blocks
    for name in shipped:
        torch.testing.assert_close(fresh[name], shipped[name], rtol=1e-5, atol=0)


def test_scales_load_only_for_the_weights_they_were_measured_on(tmp_path, checkpoint_dir, tiny_checkpoint):
    real = load_checkpoint(str(checkpoint_dir))
    assert set(load_int8_scales(real)) == set(load_file(shipped_scales_path("all-MiniLM-L6-v2")))
    tiny = load_checkpoint(str(tiny_checkpoint), verify=False)
    assert load_int8_scales(tiny) is None  # no scales: auto skips int8, and int8 says how to make them
    with pytest.raises(WeightsError, match="has no int8 scales; make them with python -m minilm.calibrate"):
        SentenceEncoder.from_pretrained(str(tiny_checkpoint), verify=False, dtype="int8")

    # the real model's scales copied next to other weights are refused, naming both hashes
    folder = tmp_path / "tiny"
    shutil.copytree(tiny_checkpoint, folder)
    shutil.copy(shipped_scales_path("all-MiniLM-L6-v2"), folder / FILE_NAME)
    other = load_checkpoint(str(folder), verify=False)
    with pytest.raises(WeightsError, match=f"calibrated for model.safetensors with sha256 {real.sha256}.*recalibrate"):
        load_int8_scales(other)
    # a truncated file is refused, not half read
    (folder / FILE_NAME).write_bytes(shipped_scales_path("all-MiniLM-L6-v2").read_bytes()[:1000])
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_int8_scales(other)
    # scales of the wrong width (or missing layers) are refused by name
    scales = {name: torch.ones(7) for name in load_file(shipped_scales_path("all-MiniLM-L6-v2"))}
    save_file(scales, str(folder / FILE_NAME), metadata={"model_sha256": other.sha256})
    with pytest.raises(WeightsError, match=r"'encoder.layer.0.attention.self' has shape \(7,\), expected \(32,\)"):
        load_int8_scales(other)


@pytest.mark.slow
def test_calibrate_command_writes_scales_that_int8_then_uses(tmp_path, tiny_checkpoint, stsb_sentences):
    folder = tmp_path / "tiny"
    shutil.copytree(tiny_checkpoint, folder)
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("\n".join(stsb_sentences[:40]) + "\n", encoding="utf-8")
    done = run_module("minilm.calibrate", "--model", str(folder), "--no-verify", "--input", str(calibration))
    assert done.returncode == 0, done.stderr.decode()
    assert (folder / FILE_NAME).is_file() and (folder / FILE_NAME).stat().st_mode & 0o044  # readable, like weights
    assert "8 layers calibrated on 40 texts" in done.stderr.decode()
    again = run_module("minilm.calibrate", "--model", str(folder), "--no-verify", "--input", str(calibration))
    assert (
        again.returncode == 2
        and again.stderr.decode() == f"error: {folder / FILE_NAME} exists; pass --force to overwrite it\n"
    )

    encoder = SentenceEncoder.from_pretrained(str(folder), verify=False, dtype="int8")
    exact = SentenceEncoder.from_pretrained(str(folder), verify=False)
    if encoder.dtype == "int8":  # this CPU has VNNI or AMX-INT8
        vectors, reference = encoder.encode(stsb_sentences[40:80]), exact.encode(stsb_sentences[40:80])
        assert (vectors * reference).sum(axis=1).min() > 0.97  # a random tiny model, 40 calibration texts
        assert np.abs(vectors - reference).max() > 1e-4  # it really ran in int8


@pytest.mark.parametrize(
    "flags, calibrated, expected",
    [
        ({"avx512_vnni", "avx512_bf16"}, True, "int8"),
        ({"amx_int8", "amx_bf16"}, True, "int8"),
        ({"avx_vnni"}, True, "int8"),
        ({"avx512_vnni", "avx512_bf16"}, False, "bfloat16"),  # no scales for this checkpoint
        ({"avx512_bf16"}, True, "bfloat16"),
        ({"avx512f", "avx2"}, True, "float32"),
        ({"avx512_vnni"}, False, "float32"),
    ],
)
def test_auto_picks_the_fastest_mode_this_cpu_runs_natively(monkeypatch, flags, calibrated, expected):
    monkeypatch.setattr("minilm.model.precision.platform.machine", lambda: "x86_64")
    monkeypatch.setattr("minilm.model.precision.cpu_flags", lambda: frozenset(flags))
    chosen, line = choose_auto(torch.device("cpu"), calibrated)
    assert chosen == expected
    assert line.startswith(f"auto: {expected} (") and "\n" not in line
    assert ("no int8 scales" in line) == (not calibrated and bool(flags & {"avx512_vnni", "amx_int8", "avx_vnni"}))


def test_auto_on_a_gpu_and_int8_off_the_cpu():
    assert choose_auto(torch.device("cuda"), True)[0] == "bfloat16"
    assert choose_auto(torch.device("mps"), True)[0] == "float16"
    from minilm.model.precision import resolve_dtype

    with pytest.raises(ValueError, match="int8' runs on the CPU only"):
        resolve_dtype("int8", torch.device("cuda"))
