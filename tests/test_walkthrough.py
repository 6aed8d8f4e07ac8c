"""docs/walkthrough.md must match what docs/make_walkthrough.py writes today: its numbers come from
the real model and its links point at the lines where the code is now."""

from __future__ import annotations

from conftest import ROOT, docs_module


def load_generator():
    return docs_module("make_walkthrough")


def test_walkthrough_is_up_to_date(encoder):
    generator = load_generator()
    fresh = generator.render(encoder)
    diff = generator.stale_diff(ROOT / "docs" / "walkthrough.md", fresh)
    assert not diff, f"docs/walkthrough.md is out of date: run .venv/bin/python docs/make_walkthrough.py\n{diff}"
    assert "{{" not in fresh and "0.376084" in fresh  # every placeholder filled; the demo's first cosine


def test_links_point_at_the_definitions():
    generator = load_generator()
    line = generator.definition_line(ROOT / "minilm" / "model" / "encoder.py", "BertEmbeddings.forward")
    assert (
        (ROOT / "minilm" / "model" / "encoder.py").read_text().splitlines()[line - 1].strip().startswith("def forward(")
    )
    assert generator.link("minilm/model/pooling.py:mean_pool").startswith("[`mean_pool`](../minilm/model/pooling.py#L")
