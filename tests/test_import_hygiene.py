"""Folders are the architecture (STYLE.md habit 13): no module imports a layer above its own, and
library code never imports an entry point.

LAYERS is the order, bottom to top, written once (docs/design.md draws it). The entry points are what
`python -m` runs; everything else in minilm/ and heads/ is library, and minilm.cli is the one module of
shared command-line helpers. Read with `ast`, nothing is imported: every import statement of every
file, at the top or inside a function, resolved to absolute names.
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
    "minilm.search.__main__",
    "heads.train",
    "heads.predict",
}
# Bottom to top; a module may import its own layer and those below. A module belongs to the layer of the
# longest name that prefixes it ("minilm" alone is the package's __init__, which re-exports the encoders).
LAYERS = [
    ("base: errors, atomic files, text input, numbers", ["minilm.base"]),
    ("the model's maths and the tokenizer", ["minilm.model", "minilm.text"]),
    ("checkpoints: find, verify, read", ["minilm.weights"]),
    ("the encoders", ["minilm.encoders", "minilm"]),
    ("corpus, search, server and heads", ["minilm.corpus", "minilm.search", "minilm.serve", "heads"]),
    ("commands", [*sorted(ENTRY_POINTS), "minilm.cli"]),
]
SOURCES = sorted(path for package in ("minilm", "heads") for path in (ROOT / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module an import in `path` may name: `from a import b` gives a and a.b (b may be a module)."""
    return imported_names_of(path, module_name(path))


def imported_names_of(path: Path, name: str) -> set[str]:
    """imported_names of the file at `path` read as the module `name` (relative imports resolve from it)."""
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


def layer_of(name: str) -> int | None:
    """The index in LAYERS of a module (or of a name inside one); None outside minilm and heads."""
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(f"{prefix}.")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def upward_imports(path: Path) -> list[str]:
    """Each module `path` imports from a layer above its own, with both layers named (once: `from a import b`
    names a, not a.b as well)."""
    own = layer_of(module_name(path))
    assert own is not None, f"{path} is in no layer: add it to LAYERS"
    above = {name for name in imported_names(path) if (layer := layer_of(name)) is not None and layer > own}
    return [
        f"{module_name(path)} ({LAYERS[own][0]}) imports {name} ({LAYERS[layer_of(name)][0]})"
        for name in sorted(above)
        if name.rpartition(".")[0] not in above
    ]


def test_no_module_imports_a_layer_above_its_own():
    assert [line for path in SOURCES for line in upward_imports(path)] == []
    assert {layer_of(module_name(path)) for path in SOURCES} == set(range(len(LAYERS)))  # every layer has files


def test_an_upward_import_is_caught(tmp_path):
    """The check can fail: a base module that imported the encoder would be named, with both layers."""
    fake = ROOT / "minilm" / "base" / "textio.py"
    source = fake.read_text(encoding="utf-8") + "\nfrom ..encoders.sentence_encoder import SentenceEncoder\n"
    copy = tmp_path / "textio.py"
    copy.write_text(source, encoding="utf-8")
    names = imported_names_of(copy, "minilm.base.textio")
    assert "minilm.encoders.sentence_encoder.SentenceEncoder" in names
    assert layer_of("minilm.encoders.sentence_encoder.SentenceEncoder") > layer_of("minilm.base.textio")
    assert layer_of("minilm.embed") == len(LAYERS) - 1 and layer_of("heads.model") == layer_of("minilm.corpus.shards")
    assert layer_of("minilm") == layer_of("minilm.encoders.sentence_encoder") and layer_of("numpy") is None


def entry_points_in(names: set[str]) -> set[str]:
    return {entry for entry in ENTRY_POINTS for n in names if n == entry or n.startswith(f"{entry}.")}


def test_the_entry_points_exist_and_the_resolver_sees_their_imports():
    modules = {module_name(path): path for path in SOURCES}
    assert set(modules) >= ENTRY_POINTS
    embed = imported_names(modules["minilm.embed"])  # relative imports: from .cli import ..., from .weights import ...
    assert {"minilm.cli", "minilm.cli.run", "minilm.base.textio.InputError"} <= embed
    weights_main = imported_names(modules["minilm.weights.__main__"])  # from ..cli import ..., from .resolve import ...
    assert {"minilm.cli", "minilm.weights.resolve"} <= weights_main
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
