"""What the fault-injection tests share: a small real corpus, runs through driver.py, the reference run,
and a full or read-only folder (a real tmpfs where this machine lets us mount one, else driver.py's hook).

Pipeline tests run on a small random-weight checkpoint (conftest.write_tiny_checkpoint), so that every
run embeds its 3,000 lines in well under a second; the model's numbers are tested elsewhere.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np

from minilm.corpus import CorpusSettings, embed_corpus, load_shards

from conftest import ROOT, real_lines, write_lines
from driver import entry_point

DRIVER = Path(__file__).with_name("driver.py")
LINES = 3000
SHARD = 200  # so LINES make 15 shards
PROGRESS_BAR = re.compile(r"^(Embedding|Training|Frozen layers):")  # tqdm's lines on stderr (split at its \r)


def corpus_file(folder: Path, n: int = LINES, name: str = "corpus.txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_lines(folder / name, real_lines(n))


def shard_args(model: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model",
        str(model),
        "--no-verify",
        "--input",
        str(corpus),
        "--output",
        f"{out}/",
        "--shard-size",
        str(SHARD),
        *extra,
    ]


def drive(
    *faults: str, module: str = "minilm.embed", args: list[str], stdin: bytes | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """`python -m module args` under driver.py's faults; stdout and stderr as text.

    With no faults, the command's `main(argv)` runs in this process (what driver.py would run, without
    the 2-3 s of a new interpreter importing torch); faults that act on a process (kill, stop, signals,
    the audit hook) get a real one. tests/cli/test_embed.py runs the commands themselves as subprocesses.
    """
    if not faults:
        return run_in_process(module, args, stdin)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(DRIVER), *faults, "--", module, *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        env=env,
        timeout=timeout,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
    )


def run_in_process(module: str, args: list[str], stdin: bytes | None) -> subprocess.CompletedProcess:
    main = entry_point(module)
    out, err = io.StringIO(), io.StringIO()
    real_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin or b""), encoding="utf-8")
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                status = main(list(args))
            except SystemExit as e:  # argparse's errors and --help
                status = e.code if isinstance(e.code, int) else 2
    finally:
        sys.stdin = real_stdin
    return subprocess.CompletedProcess([module, *args], status, out.getvalue(), err.getvalue())


def spawn(*faults: str, module: str = "minilm.embed", args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        [sys.executable, str(DRIVER), *faults, "--", module, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_until_stopped(process: subprocess.Popen, timeout: float = 120) -> None:
    """Wait for a spawned run to stop itself (driver.py's `stop` action): its state in /proc turns to T."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        with open(f"/proc/{process.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.02)
    raise AssertionError(f"the run did not stop (exit status {process.poll()}): {process.communicate()}")


def error_line(proc: subprocess.CompletedProcess, *needles: str, status: int = 2) -> str:
    """The one `error:` line a refused command prints (nothing else on stderr but its progress bar, no traceback)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not PROGRESS_BAR.match(line)]
    assert proc.returncode == status, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def reference_run(encoder, corpus: Path, folder: Path, **settings) -> tuple[list[str], np.ndarray]:
    """An uninterrupted in-process run of the same settings: what every faulted run must end up equal to."""
    embed_corpus(encoder, corpus, folder, CorpusSettings(shard_rows=SHARD, **settings))
    return load_shards(folder)


def assert_same_output(out: Path, reference: tuple[list[str], np.ndarray]) -> None:
    ids, vectors = load_shards(out)  # which also checks every shard's sha256 against the manifest
    assert ids == reference[0]
    assert vectors.shape == reference[1].shape and np.abs(vectors - reference[1]).max() <= 1e-6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows"] == len(ids)
    assert sorted(p.name for p in out.glob("part-*")) == sorted(
        n for s in manifest["shards"] for n in (s["file"], s["ids"], s["texts"])
    )
    assert not list(out.glob(".*.tmp"))


@contextmanager
def small_disk(folder: Path, size: str = "256k", readonly: bool = False):
    """A folder on a tmpfs of `size` (read-only if asked): yields the driver flags that make it so.

    Where mount is not allowed, the folder is a plain one and the flags make driver.py refuse every
    write under it with ENOSPC or EROFS instead, from the first one on.
    """
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if readonly else "")
    mounted = (
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode
        == 0
    )
    try:
        yield [] if mounted else ["--refuse-writes", f"{folder}:{'EROFS' if readonly else 'ENOSPC'}"]
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def grow_disk(folder: Path, size: str) -> bool:
    """Make room on small_disk's tmpfs; False where it is not a mount (the driver flags are then simply dropped)."""
    return subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], capture_output=True).returncode == 0
