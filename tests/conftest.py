"""Shared fixtures: the real checkpoint, the real data in ../shared/data, and the sentence-transformers reference.

Nothing here downloads: the hub is switched off for the whole test session. Missing weights are
always a failure. Missing data is a failure under CI (CI=true) and a clear skip elsewhere.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import numpy as np
    import torch

    from minilm import SentenceEncoder

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("MINILM_DATA_DIR", ROOT.parent / "shared" / "data"))


@functools.cache
def docs_module(name: str):
    """docs/{name}.py (a page's generator) as a module, loaded once."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def require_data(relative: str) -> Path:
    """A path under ../shared/data; fails under CI and skips elsewhere when it is absent."""
    path = DATA_DIR / relative
    if not path.exists():
        message = f"{path} is missing: the real data sets live in ../shared/data beside the project (see its README)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def read_stsb(split: str) -> tuple[list[float], list[str], list[str]]:
    """STS-B rows as (scores, sentence1s, sentence2s). Columns 4, 5, 6 by index; quotes are literal text."""
    from minilm.base.stsb import read_stsb as read_stsb_file  # imported here, as conftest imports no minilm at load

    return read_stsb_file(require_data(f"stsbenchmark/sts-{split}.csv"))


@pytest.fixture(scope="session")
def checkpoint_dir() -> Path:
    """The folder of the real all-MiniLM-L6-v2 files (never skipped: CI must have them)."""
    from minilm.weights import resolve_checkpoint, verify_checkpoint

    resolved = resolve_checkpoint()
    verify_checkpoint(resolved)
    return resolved.path


@pytest.fixture(scope="session")
def encoder(checkpoint_dir):
    from minilm import SentenceEncoder

    return SentenceEncoder.from_pretrained(str(checkpoint_dir))


@pytest.fixture(scope="session")
def reference(checkpoint_dir):
    """sentence-transformers on the same files, fp32 on CPU: the reference our numbers must match."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(checkpoint_dir), device="cpu")


@pytest.fixture(scope="session")
def stsb_sentences() -> list[str]:
    """Every distinct sentence of STS-B test and dev, in first-seen order."""
    sentences = []
    for split in ("test", "dev"):
        _, first, second = read_stsb(split)
        sentences += first + second
    return list(dict.fromkeys(sentences))


def run_module(
    module: str,
    *args: str,
    stdin: bytes | None = None,
    env: dict | None = None,
    cwd: Path | None = None,
    python_flags: Sequence[str] = (),
) -> subprocess.CompletedProcess:
    """Run `python [python_flags] -m module args...` as a real subprocess; returns the completed process (bytes out)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, *python_flags, "-m", module, *args],
        input=stdin,
        capture_output=True,
        env=full_env,
        cwd=cwd or ROOT,
        timeout=300,
    )


# A 3-layer, 32-wide BERT on a 99-word random vocabulary: for tier-1 tests of the model's maths against transformers.
TINY = dict(  # transformers BertConfig arguments (its hidden_act and eps are ours: gelu, 1e-12)
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    type_vocab_size=2,
)


TINY_CONFIG = {  # a 2-layer, 32-wide BERT on the real vocabulary: for tests of the pipeline, not of the model's numbers
    "architectures": ["BertModel"],
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
    "position_embedding_type": "absolute",
    "pad_token_id": 0,
}


def write_tiny_checkpoint(folder: Path, source: Path, config: dict | None = None) -> Path:
    """A random-weight checkpoint (seeded) in the real sentence-transformers layout, with the real tokenizer files.

    Load it with verify=False (--no-verify): it is pinned nowhere.
    """
    import json

    import torch
    from safetensors.torch import save_file

    from minilm.model.encoder import BertModel
    from minilm.model.loading import bert_config

    config = {**TINY_CONFIG, **(config or {})}
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = BertModel(bert_config(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for name in (
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "sentence_bert_config.json",
    ):
        (folder / name).write_bytes((source / name).read_bytes())
    (folder / "modules.json").write_bytes((source / "modules.json").read_bytes())
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pooling = json.loads((source / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({**pooling, "word_embedding_dimension": config["hidden_size"]})
    )
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, checkpoint_dir) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-bert", checkpoint_dir)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_checkpoint):
    from minilm import SentenceEncoder

    return SentenceEncoder.from_pretrained(str(tiny_checkpoint), verify=False)


def real_lines(n: int) -> list[str]:
    """n real lines: TREC train questions, then CoNLL-2003 train sentences (about 19,400,
    mean 15 tokens: short texts keep the long runs of this file quick), then the same again with
    " (copy k)" appended, as many times as needed."""
    lines = [line.split(" ", 1)[1].rstrip("\n") for line in open(require_data("trec/train.txt"), encoding="utf-8")]
    words: list[str] = []
    for line in open(require_data("conll2003/train.txt"), encoding="utf-8"):
        word = line.split(" ", 1)[0].strip()
        if word:
            words.append(word)
        elif words:
            lines.append(" ".join(words))
            words = []
    return [lines[i % len(lines)] + (f" (copy {i // len(lines)})" if i >= len(lines) else "") for i in range(n)]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- fast paths against the exact one
# (tests/model/test_packed.py, tests/model/test_precision.py, tests/text/test_batching.py)

N_TEXTS = 200


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


needs_cuda = pytest.mark.skipif(not cuda_available(), reason="the Flash Attention path runs only on CUDA")


@pytest.fixture(scope="session")
def texts(stsb_sentences, encoder) -> list[str]:
    """200 real texts: STS-B test sentences and the 6 longest CoNLL-2003 test sentences, shuffled so
    input order is not length order. (Nothing near the 256-token limit: one such text pads its whole
    32-text float32 batch to 256 and triples the time of every full pass here.)"""
    import random

    from heads.data import read_conll

    news = [" ".join(example.words) for example in read_conll(require_data("conll2003/test.txt"))]
    chosen = stsb_sentences[: N_TEXTS - 6] + sorted(news, key=len)[-6:]
    _, n_tokens = encoder.tokenizer.encode(chosen)
    assert len(set(chosen)) == N_TEXTS and max(n_tokens) > 100 and sorted(n_tokens)[N_TEXTS // 2] < 20
    random.Random(0).shuffle(chosen)
    return chosen


@pytest.fixture(scope="session")
def fp32_embeddings(encoder, texts) -> np.ndarray:
    """The 200 `texts` embedded the exact way: float32, padded batches. What every fast path is held to."""
    return encoder.encode(texts)


def with_runner(encoder: SentenceEncoder, runner: torch.nn.Module, dtype: str) -> SentenceEncoder:
    """A copy of `encoder` that runs `runner`: how the tests force a mode this CPU would not pick."""
    import copy

    forced = copy.copy(encoder)
    forced.runner, forced.dtype, forced.precision_note = runner, dtype, None
    return forced
