"""docs/walkthrough-int8.md must match what docs/make_walkthrough_int8.py writes today, and the arithmetic it
shows must be the arithmetic Int8Linear does.

The page's numbers were made on a CPU with VNNI. float32 kernels differ in their last bits from CPU to CPU,
so the page is compared with the machine-dependent sentences masked, its words and links exactly, and its
numbers to a few units of their last printed digit (integers to 0.5 %)."""

from __future__ import annotations

import difflib
import re

import pytest
import torch

from minilm.model.int8 import smoothing_factors
from minilm.weights.int8_scales import load_int8_scales

from conftest import ROOT, docs_module

REGENERATE = ".venv/bin/python docs/make_walkthrough_int8.py"
LINK = re.compile(r"\]\(\.\./[^)]*\) \([^)]*\)")  # a {{link:...}}'s target: line numbers compared exactly
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def load_generator():
    return docs_module("make_walkthrough_int8")


def masked(page: str) -> str:
    return docs_module("make_walkthrough").masked(page)


def close(printed: str, fresh: str) -> bool:
    """Two printed numbers agree: within 3 units of the last decimal printed, or 0.5 % for an integer."""
    a, b = float(printed.replace(",", "")), float(fresh.replace(",", ""))
    if "." in printed:
        return abs(a - b) <= 3 * 10 ** -len(printed.split(".")[1])
    return abs(a - b) <= 5e-3 * abs(b)


def differences(current: str, fresh: str) -> list[str]:
    """Where two pages differ beyond float32 noise: masked text, links and words exactly, numbers by `close`."""
    current, fresh = masked(current), masked(fresh)
    if LINK.findall(current) != LINK.findall(fresh):
        return ["the links differ"]
    current, fresh = LINK.sub("](link)", current), LINK.sub("](link)", fresh)
    if NUMBER.split(current) != NUMBER.split(fresh):
        diff = difflib.unified_diff(current.splitlines(True), fresh.splitlines(True), "current", "regenerated", n=0)
        return ["the words differ:\n" + "".join(list(diff)[:40])]
    return [
        f"{a} is now {b}"
        for a, b in zip(NUMBER.findall(current), NUMBER.findall(fresh), strict=True)
        if not close(a, b)
    ]


def test_compare_tolerates_float_noise_only():
    page = "cosine 0.99888, sum -18,294, output -5.28597 [`f`](../a.py#L10) (a.py:10) <!--m-->AVX512_VNNI<!--/m-->"
    assert differences(page, page.replace("0.99888", "0.99890").replace("AVX512", "no VNNI")) == []
    assert differences(page, page.replace("-18,294", "-18,300")) == []
    assert differences(page, page.replace("0.99888", "0.99900")) == ["0.99888 is now 0.99900"]
    assert differences(page, page.replace("output", "result"))[0].startswith("the words differ")
    assert differences(page, page.replace("L10) (a.py:10", "L11) (a.py:11")) == ["the links differ"]


def test_walkthrough_int8_is_up_to_date(encoder):
    generator = load_generator()
    fresh = generator.render(encoder)
    current = (ROOT / "docs" / "walkthrough-int8.md").read_text(encoding="utf-8")
    problems = differences(current, fresh)
    assert not problems, f"docs/walkthrough-int8.md is out of date: run {REGENERATE}\n" + "\n".join(problems[:20])
    assert "{{" not in fresh  # every placeholder filled


@pytest.fixture(scope="module")
def row(encoder):
    return load_generator().follow_row(encoder, load_int8_scales(encoder.checkpoint))


def test_accumulator_times_both_scales_plus_bias_is_the_layer_output(row):
    m = load_generator().OUTPUT_CHANNEL
    with torch.inference_mode():
        output, exact = row.smoothed(row.x)[m].item(), row.linear(row.x)[m].item()
    rebuilt = row.accumulator * row.scale * row.smoothed.weight_scale[m].item() + row.smoothed.bias[m].item()
    assert rebuilt == pytest.approx(output, rel=1e-5)
    assert rebuilt == pytest.approx(exact, abs=0.05)  # and near the float32 output


def test_int_mm_and_its_reference_form_give_the_same_integers(row):
    generator = load_generator()
    q = row.q.unsqueeze(0)  # (1, C)
    assert torch.equal(
        generator.integer_sums(q, row.smoothed.weight_t, "avx512_vnni").long(),
        generator.integer_sums(q, row.smoothed.weight_t, None),
    )


def test_smoothing_leaves_the_product_unchanged(row):
    exact, smoothed = row.products()
    assert torch.allclose(smoothed, exact, atol=1e-4)


def test_the_calibration_maximum_solved_back_gives_the_shipped_scales(row):
    """The page's max|x_j| column is s_j solved for max|x_j|: putting it back into the formula gives s_j."""
    alpha, W = load_generator().SMOOTHING_ALPHA, row.linear.weight.detach()
    implied = (row.smoothing * W.abs().amax(dim=0) ** (1 - alpha)) ** (1 / alpha)
    assert torch.allclose(smoothing_factors(implied, W, alpha), row.smoothing, rtol=1e-4)


def test_without_vnni_the_page_takes_the_reference_form_and_the_same_sum(encoder, row, monkeypatch):
    generator = load_generator()
    monkeypatch.setattr(generator, "vnni_flag", lambda: None)
    reference = generator.follow_row(encoder, load_int8_scales(encoder.checkpoint))
    assert reference.vnni is None and reference.accumulator == row.accumulator
