"""Shared fixtures: the real checkpoint, the real data in ../shared/data, and the sentence-transformers reference.

Nothing here downloads: the hub is switched off for the whole test session. Missing weights are
always a failure. Missing data is a failure under CI (CI=true) and a clear skip elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("MINILM_DATA_DIR", ROOT.parent / "shared" / "data"))


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
    scores, first, second = [], [], []
    with open(require_data(f"stsbenchmark/sts-{split}.csv"), encoding="utf-8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            scores.append(float(cols[4]))
            first.append(cols[5])
            second.append(cols[6])
    return scores, first, second


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


def run_module(module: str, *args: str, stdin: bytes | None = None, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m module args...` as a real subprocess; returns the completed process (bytes out)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        input=stdin,
        capture_output=True,
        env=full_env,
        cwd=cwd or ROOT,
        timeout=300,
    )
