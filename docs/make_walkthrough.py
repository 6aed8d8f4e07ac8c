"""Build docs/walkthrough.md from docs/walkthrough.in.md, with numbers from the real model.

    .venv/bin/python docs/make_walkthrough.py           # rewrite docs/walkthrough.md
    .venv/bin/python docs/make_walkthrough.py --check   # exit 1 if it is out of date (tests/test_walkthrough.py)

The template holds the prose. Two kinds of placeholder are filled in:
    {{link:minilm/model/encoder.py:BertEmbeddings.forward}}  a link to the line where that function or class starts
    {{name}}                                           a number or table computed by `values()` below
so when the code moves or the model's numbers change, the check fails until this script is rerun.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import io
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minilm import SentenceEncoder  # noqa: E402
from minilm.base.textio import atomic_output  # noqa: E402
from minilm.cli import DEMO_SENTENCES, write_table  # noqa: E402
from minilm.encoders.trace import first_values, strongest_links, trace  # noqa: E402

TEMPLATE = ROOT / "docs" / "walkthrough.in.md"
OUTPUT = ROOT / "docs" / "walkthrough.md"
PLACEHOLDER = re.compile(r"\{\{(link:)?([^}]+)\}\}")
# What differs from machine to machine (a timing, the CPU's name) is wrapped in a marker that renders as
# nothing; the checks compare pages with it masked.
MACHINE = re.compile(r"<!--m-->.*?<!--/m-->", re.DOTALL)


def definition_line(path: Path, qualname: str, template: str = TEMPLATE.name) -> int:
    """The line where `Class.method`, `Class` or `function` is defined in a Python file."""
    nodes = ast.parse(path.read_text(encoding="utf-8")).body
    for name in qualname.split("."):
        node = next((n for n in nodes if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == name), None)
        if node is None:
            raise KeyError(f"{qualname} is not defined in {path}; fix the {{{{link:...}}}} in {template}")
        nodes = node.body
    return node.lineno


def link(spec: str, template: str = TEMPLATE.name) -> str:
    """'minilm/model/encoder.py:BertEmbeddings.forward' ->
    [`BertEmbeddings.forward`](../minilm/model/encoder.py#L76)."""
    path, _, qualname = spec.partition(":")
    line = definition_line(ROOT / path, qualname, template)
    return f"[`{qualname}`](../{path}#L{line}) ({path}:{line})"


def numbers(values: torch.Tensor, count: int = 4, digits: int = 4) -> str:
    """The first `count` values, signed, `digits` decimals: "[+0.1234, -0.0567, …]"."""
    return "[" + ", ".join(f"{v:+.{digits}f}" for v in values[:count].tolist()) + ", …]"


def values(encoder: SentenceEncoder) -> dict[str, str]:
    """Everything the walkthrough quotes, computed from one forward pass of the demo sentences."""
    result = trace(encoder, DEMO_SENTENCES)
    first = result.encodings[0]
    out = {"sentences": "\n".join(f"{i + 1}. {text}" for i, text in enumerate(DEMO_SENTENCES))}

    rows = ["| position | token | id | offsets | text |", "|---:|---|---:|---|---|"]
    for i, (token, id, (start, end)) in enumerate(zip(first.tokens, first.ids, first.offsets)):
        rows.append(
            f"| {i} | `{token}` | {id} | ({start}, {end}) | "
            f"{repr(DEMO_SENTENCES[0][start:end]) if end else '(added)'} |"
        )
    out["token_table"] = "\n".join(rows)
    out["lengths"] = ", ".join(str(len(e.ids)) for e in result.encodings)
    ids = result.stages[0].tensor
    out["ids_shape"], out["ids_rows"] = str(tuple(ids.shape)), "\n".join(str(row) for row in ids.tolist())

    # Step 2: the three embedding tables for token 0 ([CLS]) of sentence 1, and their LayerNorm.
    embeddings = encoder.model.embeddings
    with torch.inference_mode():
        word, position, kind = (
            embeddings.word_embeddings.weight[first.ids[0]],
            embeddings.position_embeddings.weight[0],
            embeddings.token_type_embeddings.weight[0],
        )
    out |= {
        "word": numbers(word),
        "position": numbers(position),
        "type": numbers(kind),
        "sum": numbers(word + position + kind),
    }
    out["embedded"] = numbers(result.stages[1].tensor[0, 0])
    out["embedded_shape"] = str(tuple(result.stages[1].tensor.shape))

    # Step 3: attention.
    weights = result.attention[0]
    out["attention_shape"] = str(tuple(weights.shape))
    n = len(first.ids)
    dog = first.tokens.index("dog")
    row = weights[0, :, dog, :n].mean(dim=0)  # (T,) what "dog" takes from each token in layer 1, mean over heads
    out["dog_row"] = " | ".join(f"{w:.3f}" for w in row.tolist())
    out["dog_header"] = " | ".join(f"`{t}`" for t in first.tokens)
    out["dog_rule"] = "|".join(["---:"] * n)
    padded = len(result.encodings[1].ids)
    out["padding_weight"] = f"{weights[1, :, :, padded:].abs().max().item():.1f}"
    rows = ["| layer | to [CLS]/[SEP] | strongest links between words (query → key, weight) |", "|---:|---:|---|"]
    for layer in range(len(result.attention)):
        to_special, links = strongest_links(result, layer, 0, top=3)
        rows.append(
            f"| {layer + 1} | {to_special:.0%} | " + ", ".join(f"`{q}` → `{k}` {w:.2f}" for q, k, w in links) + " |"
        )
    out["links_table"] = "\n".join(rows)

    # Steps 4-6: the layers.
    rows = ["| stage | shape | first values of sentence 1, token 0 |", "|---|---|---|"]
    for stage in result.stages:
        rows.append(f"| {stage.name} | {tuple(stage.tensor.shape)} | {first_values(stage.tensor)} |")
    out["stages_table"] = "\n".join(rows)

    # Steps 7-8: pooling and normalization.
    pooled, normalized = result.stages[-2].tensor, result.stages[-1].tensor
    out["pooled"], out["pooled_norm"] = numbers(pooled[0]), f"{pooled[0].norm().item():.4f}"
    out["normalized"], out["normalized_norm"] = numbers(normalized[0]), f"{normalized[0].norm().item():.4f}"
    out["pooled_shape"] = str(tuple(pooled.shape))
    table = io.StringIO()
    write_table(table, DEMO_SENTENCES, result.embeddings)
    out["cosine_table"] = table.getvalue().rstrip("\n")
    out["encoder_lines"] = str(len((ROOT / "minilm" / "model" / "encoder.py").read_text(encoding="utf-8").splitlines()))
    return out


def machine_dependent(text: str) -> str:
    """Mark text that differs between machines (a timing): the checks compare pages without it."""
    return f"<!--m-->{text}<!--/m-->"


def masked(page: str) -> str:
    """The page with what differs between machines blanked."""
    return MACHINE.sub("<!--m-->…<!--/m-->", page)


def stale_diff(output: Path, fresh: str, lines: int = 40) -> str:
    """'' when the page at `output` is `fresh`, what differs between machines masked; else the diff's first lines."""
    current, fresh = masked(output.read_text(encoding="utf-8")), masked(fresh)
    if current == fresh:
        return ""
    diff = difflib.unified_diff(current.splitlines(True), fresh.splitlines(True), f"docs/{output.name}", "regenerated")
    return "".join(list(diff)[:lines])


def fill(template: Path, found: dict[str, str], generator: str) -> str:
    """The template with every {{link:...}} and {{name}} filled in, under a header naming its generator."""

    def value(match: re.Match) -> str:
        if match.group(1):
            return link(match.group(2), template.name)
        if match.group(2) not in found:
            raise KeyError(
                f"{{{{{match.group(2)}}}}} in {template.name} has no value; add it to values() in {generator}"
            )
        return found[match.group(2)]

    header = f"<!-- Generated by docs/{generator} from {template.name}: edit that file, then rerun the script. -->\n"
    return header + PLACEHOLDER.sub(value, template.read_text(encoding="utf-8"))


def render(encoder: SentenceEncoder) -> str:
    return fill(TEMPLATE, values(encoder), Path(__file__).name)


def write_or_check(output: Path, render, argv: list[str] | None = None, doc: str = __doc__) -> int:
    """A generator's command line: write `output` from `render()`, or with --check exit 1 if it differs."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help=f"do not write; exit 1 if docs/{output.name} is out of date"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if stale_diff(output, text):
            print(f"{output} is out of date: run .venv/bin/python {sys.argv[0]}", file=sys.stderr)
            return 1
        print(f"{output} is up to date", file=sys.stderr)
        return 0
    with atomic_output(output, binary=False) as f:
        f.write(text)
    print(f"wrote {output}", file=sys.stderr)
    return 0


def main() -> int:
    return write_or_check(OUTPUT, lambda: render(SentenceEncoder.from_pretrained()))


if __name__ == "__main__":
    sys.exit(main())
