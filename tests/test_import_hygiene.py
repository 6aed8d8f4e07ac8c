"""Folders are the architecture (STYLE.md habit 13): library code never imports an entry point.

The entry points are what `python -m` runs; everything else in minilm/ and heads/ is library, and
minilm.cli is the one module of shared command-line helpers. Read with `ast`, nothing is imported:
every import statement of every file, at the top or inside a function, resolved to absolute names.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

ENTRY_POINTS = {
    "minilm.embed",
    "minilm.explain",
    "minilm.weights.__main__",
    "minilm.calibrate",
    "minilm.rerank",
    "minilm.serve.__main__",
    "heads.train",
    "heads.predict",
}
SOURCES = sorted(path for package in ("minilm", "heads") for path in (ROOT / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module an import in `path` may name: `from a import b` gives a and a.b (b may be a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x, from ..cli import y
                parents = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parents, *([node.module] if node.module else [])])
            else:
                base = node.module
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def entry_points_in(names: set[str]) -> set[str]:
    return {entry for entry in ENTRY_POINTS for n in names if n == entry or n.startswith(f"{entry}.")}


def test_the_entry_points_exist_and_the_resolver_sees_their_imports():
    modules = {module_name(path): path for path in SOURCES}
    assert set(modules) >= ENTRY_POINTS
    embed = imported_names(modules["minilm.embed"])  # relative imports: from .cli import ..., from .weights import ...
    assert {"minilm.cli", "minilm.cli.run", "minilm.corpus.textio.InputError"} <= embed
    assert {"minilm.cli", "minilm.weights"} <= imported_names(modules["minilm.weights.__main__"])  # ..cli and .
    assert entry_points_in({"minilm.embed.main", "heads.train", "minilm.weights"}) == {"minilm.embed", "heads.train"}


def test_no_module_imports_an_entry_point():
    """Library modules import library modules; entry points import minilm.cli and the library, never each other."""
    offenders = {
        module_name(path): sorted(entry_points_in(imported_names(path)) - {module_name(path)}) for path in SOURCES
    }
    assert {name: entries for name, entries in offenders.items() if entries} == {}
    assert len(offenders) >= 25  # every file was read: minilm/ and heads/ hold about 30


STARTS = """
import runpy, sys
sys.argv = ["minilm.embed", "--model", sys.argv[1], "--no-verify", "a first text", "a second text"]
try:
    runpy.run_module("minilm.embed", run_name="__main__")
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
print(sorted(m for m in ("torch._dynamo", "transformers", "sentence_transformers") if m in sys.modules))
"""


def test_a_command_starts_without_torch_dynamo_or_the_references(tiny_checkpoint):
    """What `python -m minilm.embed` imports, from start to printed vectors: not torch._dynamo, which
    torch pulls in by itself for its Flash varlen API and for meta-device normal_ (about 2 s of every
    start, see minilm.model.packed and minilm.model.loading), nor the test-only references."""
    proc = subprocess.run(
        [sys.executable, "-c", STARTS, str(tiny_checkpoint)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-500:]
