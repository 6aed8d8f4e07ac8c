"""docs/walkthrough.md must match what docs/make_walkthrough.py writes today: its numbers come from
the real model and its links point at the lines where the code is now."""

from __future__ import annotations

import difflib
import importlib.util

from conftest import ROOT


def load_generator():
    spec = importlib.util.spec_from_file_location("make_walkthrough", ROOT / "docs" / "make_walkthrough.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_walkthrough_is_up_to_date(encoder):
    generator = load_generator()
    fresh = generator.render(encoder)
    current = (ROOT / "docs" / "walkthrough.md").read_text(encoding="utf-8")
    diff = "".join(
        list(
            difflib.unified_diff(
                current.splitlines(True), fresh.splitlines(True), "docs/walkthrough.md", "regenerated", n=0
            )
        )[:40]
    )
    assert current == fresh, (
        f"docs/walkthrough.md is out of date: run .venv/bin/python docs/make_walkthrough.py\n{diff}"
    )
    assert "{{" not in fresh and "0.376084" in fresh  # every placeholder filled; the demo's first cosine


def test_links_point_at_the_definitions():
    generator = load_generator()
    line = generator.definition_line(ROOT / "minilm" / "model" / "encoder.py", "BertEmbeddings.forward")
    assert (
        (ROOT / "minilm" / "model" / "encoder.py").read_text().splitlines()[line - 1].strip().startswith("def forward(")
    )
    assert generator.link("minilm/model/pooling.py:mean_pool").startswith("[`mean_pool`](../minilm/model/pooling.py#L")
