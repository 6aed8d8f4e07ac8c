"""The wheel works outside the checkout: built from the sources, installed into a temporary folder, and
run from another folder, with the shipped task heads and int8 scales as its package data.

Before: `python -m heads.predict` answered "model folder …/site/weights/heads does not exist", and
`--dtype int8` said the checkpoint had no int8 scales (both were found by walking up from __file__ to
the checkout's weights/). The commands run here are the installed copy's own (PYTHONPATH points at the
install folder only, and each run checks that minilm and heads were imported from there).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from minilm.model.precision import choose_auto

from conftest import ROOT

pytestmark = pytest.mark.slow

SOURCES = ["minilm", "heads", "weights/heads", "weights/int8", "pyproject.toml", "README.md"]
SENTENCE = "John Smith flew from London to Paris on Monday."


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """(the install folder, the environment that runs it, a folder outside both checkout and install)."""
    root = tmp_path_factory.mktemp("package")
    source = root / "source"  # a copy of what the wheel is built from, so no build/ is left in the checkout
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(root / "dist"),
            ".",
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (root / "dist").glob("minilm-*.whl")
    site = root / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(site)]
    assert subprocess.run([*install, str(wheel)], capture_output=True, timeout=600).returncode == 0
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MINILM_WEIGHTS_DIR", "PYTHONPATH")}
    env.update(
        PYTHONPATH=str(site),
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        XDG_CACHE_HOME=str(root / "cache"),  # an installed copy's own weight store
    )
    return site, env, elsewhere


def run(installed, *command: str) -> subprocess.CompletedProcess:
    _, env, elsewhere = installed
    return subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)


def test_the_wheel_holds_the_shipped_files_and_the_install_is_what_runs(installed):
    site, _, _ = installed
    shipped = site / "minilm" / "shipped"
    for name in ["heads/config.json", "heads/heads.safetensors", "int8/all-MiniLM-L6-v2.safetensors"]:
        assert (shipped / name).read_bytes() == (ROOT / "weights" / name).read_bytes(), name
        assert not (shipped / name).is_symlink()
    proc = run(installed, sys.executable, "-c", "import minilm, heads; print(minilm.__file__); print(heads.__file__)")
    assert proc.returncode == 0, proc.stderr
    assert all(Path(line).is_relative_to(site) for line in proc.stdout.splitlines()), proc.stdout


def test_heads_predict_finds_the_shipped_heads(installed):
    site, _, _ = installed
    proc = run(installed, str(site / "bin" / "minilm-heads-predict"), SENTENCE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    entities = [(e["text"], e["label"]) for e in json.loads(proc.stdout)["entities"]]
    assert entities == [("John Smith", "PER"), ("London", "LOC"), ("Paris", "LOC")]


def test_int8_finds_the_shipped_scales_and_auto_chooses_as_in_the_checkout(installed):
    proc = run(installed, sys.executable, "-m", "minilm.embed", "--dtype", "int8", "--format", "jsonl", SENTENCE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, expected = choose_auto(torch.device("cpu"), int8_calibrated=True)  # the checkout has the scales
    proc = run(installed, sys.executable, "-m", "minilm.embed", "--dtype", "auto", SENTENCE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"note: {expected}\n" in proc.stderr, proc.stderr


def test_serve_starts_and_answers_health(installed):
    site, env, elsewhere = installed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [str(site / "bin" / "minilm-serve"), "--port", str(port)],
        cwd=elsewhere,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300  # generous: a busy 2-core machine loads and warms up in seconds
        health = None
        while health is None and server.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
                    health = json.loads(response.read())
            except OSError:
                time.sleep(0.2)
        assert health is not None and health["status"] == "ok", server.poll()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=120) == 0
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


def test_every_command_has_a_console_script_that_runs(installed):
    site, _, _ = installed
    scripts = ["embed", "rerank", "serve", "weights", "explain", "calibrate", "search", "heads-train", "heads-predict"]
    for name in scripts:
        proc = run(installed, str(site / "bin" / f"minilm-{name}"), "--help")
        assert proc.returncode == 0 and proc.stdout.startswith("usage: "), (name, proc.stderr[-2000:])
    proc = run(installed, str(site / "bin" / "minilm-weights"), "list")  # an installed copy's store is its own
    store = site.parent / "cache" / "minilm" / "weights"  # $XDG_CACHE_HOME/minilm/weights
    assert proc.returncode == 0 and proc.stdout.startswith(f"local weights: {store}  "), proc.stdout + proc.stderr
