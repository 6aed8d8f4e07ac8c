"""--prompt-name and --prompt in minilm.embed (all three outputs) and in the server, on an e5-style
checkpoint (mean pooling, prompts "query: " and "passage: ") built at test time."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minilm import SentenceEncoder
from minilm.corpus.reader import load_shards

from conftest import run_module, write_lines
from test_model_families import FAMILIES, write_family


@pytest.fixture(scope="module")
def e5(tmp_path_factory, checkpoint_dir):
    return write_family(tmp_path_factory.mktemp("e5") / "e5", checkpoint_dir, FAMILIES["e5-small-v2"] | {"layers": 2})


@pytest.fixture(scope="module")
def e5_encoder(e5):
    return SentenceEncoder.from_pretrained(str(e5), verify=False)


TEXTS = ["how do I bake bread", "Bread is baked from flour, water and yeast."]


def embed_jsonl(e5, *flags: str) -> np.ndarray:
    done = run_module("minilm.embed", "--model", str(e5), "--no-verify", "--format", "jsonl", *flags, *TEXTS)
    assert done.returncode == 0, done.stderr.decode()
    return np.array([json.loads(line)["embedding"] for line in done.stdout.decode().splitlines()], dtype=np.float32)


@pytest.mark.slow
def test_embed_puts_the_named_or_given_prompt_before_every_text(e5, e5_encoder):
    queries = e5_encoder.encode(TEXTS, prompt_name="query")
    assert np.abs(queries - e5_encoder.encode(TEXTS)).max() > 1e-3  # the prompt changes the vectors
    np.testing.assert_allclose(embed_jsonl(e5, "--prompt-name", "query"), queries, atol=1e-6, rtol=0)
    np.testing.assert_allclose(
        embed_jsonl(e5, "--prompt", "passage: "), e5_encoder.encode(TEXTS, prompt_name="passage"), atol=1e-6, rtol=0
    )
    np.testing.assert_allclose(embed_jsonl(e5), e5_encoder.encode(TEXTS), atol=1e-6, rtol=0)


@pytest.mark.slow
def test_prompt_errors_are_one_line(e5):
    unknown = run_module("minilm.embed", "--model", str(e5), "--no-verify", "--prompt-name", "search", "a")
    assert unknown.returncode == 2
    assert unknown.stderr.decode().strip().splitlines() == [
        "error: prompt_name 'search' is not one of this checkpoint's prompts ('query', 'passage')"
    ]
    both = run_module(
        "minilm.embed", "--model", str(e5), "--no-verify", "--prompt-name", "query", "--prompt", "q: ", "a"
    )
    assert both.returncode == 2 and "not allowed with argument" in both.stderr.decode()


@pytest.mark.slow
def test_shards_record_the_prompt_and_a_resume_with_another_is_refused(tmp_path, e5, e5_encoder, stsb_sentences):
    corpus = write_lines(tmp_path / "corpus.txt", stsb_sentences[:30])
    out = f"{tmp_path / 'out'}/"
    common = ("minilm.embed", "--model", str(e5), "--no-verify", "--input", str(corpus), "--output", out)
    assert run_module(*common, "--prompt-name", "passage").returncode == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["prompt"] == "passage: "
    _, vectors = load_shards(tmp_path / "out")
    np.testing.assert_allclose(
        vectors, e5_encoder.encode(stsb_sentences[:30], prompt_name="passage"), atol=1e-6, rtol=0
    )
    other = run_module(*common, "--prompt-name", "query")
    assert other.returncode == 2
    assert "holds a run with a different prompt" in other.stderr.decode()
