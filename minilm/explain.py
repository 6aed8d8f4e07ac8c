"""python -m minilm.explain: one forward pass shown stage by stage, with the attention it pays.

    python -m minilm.explain                                   # the three demo sentences
    python -m minilm.explain "The dog ran across the grass."
    python -m minilm.explain "A dog runs." "A puppy runs." "Stocks fell." --plot attention.png

It prints the word pieces (ids and character offsets), the tensor shape after each stage
(embeddings, each of the 6 layers, pooling, normalization) with its first values, the strongest
attention links of each layer, and the cosine table. `--plot` draws every head's attention map
(layers x heads) for the first sentence, beside the cosine similarities of all the sentences;
it needs matplotlib (`pip install 'minilm[viz]'`).

The pass is `minilm.encoders.trace`, which runs the encoder's own modules one at a time; its vectors
equal `SentenceEncoder.encode` (the tests check it), so the numbers shown are the model's.
docs/walkthrough.md is built from the same trace.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .base.textio import InputError, atomic_path
from .cli import DEMO_SENTENCES, ArgumentParser, check_output_path, run, shorten, write_table
from .encoders.sentence_encoder import SentenceEncoder, cosine_similarity
from .encoders.trace import Trace, first_values, strongest_links, trace
from .text.tokenization import TOKENIZER_KINDS
from .weights import DEFAULT_CHECKPOINT

PLOT_INCHES, PLOT_DPI = (26, 13), 100  # the PNG is 2600 x 1300 pixels


def write_report(out, trace: Trace, top: int) -> None:
    for s, (text, encoding) in enumerate(zip(trace.texts, trace.encodings)):
        out.write(f"sentence {s + 1}: {text!r}\n")
        out.write(f"  {'#':>3}  {'token':<14} {'id':>6}  offsets   text\n")
        for i, (token, id, (start, end)) in enumerate(zip(encoding.tokens, encoding.ids, encoding.offsets)):
            out.write(
                f"  {i:>3}  {token:<14} {id:>6}  {f'({start}, {end})':<9} {text[start:end]!r}\n"
                if end
                else f"  {i:>3}  {token:<14} {id:>6}  (0, 0)    special\n"
            )
    out.write(
        "\nstages (shape for the whole batch; first values of sentence 1, its [CLS] token while there are tokens):\n"
    )
    width = max(len(stage.name) for stage in trace.stages)
    for stage in trace.stages:
        out.write(f"  {stage.name:<{width}}  {tuple(stage.tensor.shape)!s:<13}  {first_values(stage.tensor)}\n")
    for s in range(len(trace.encodings)):
        out.write(f"\nstrongest attention links, sentence {s + 1} (mean over heads; query -> key, weight):\n")
        for layer in range(len(trace.attention)):
            to_special, links = strongest_links(trace, layer, s, top)
            shown = ", ".join(f"{q} -> {k} {w:.2f}" for q, k, w in links) or "(no two word pieces)"
            out.write(f"  layer {layer + 1}: {to_special:4.0%} to [CLS]/[SEP]; {shown}\n")
    out.write("\n")
    write_table(out, trace.texts, trace.embeddings)


def plot(trace: Trace, path: Path) -> None:
    """Every head's attention map for sentence 1 (a layers x heads grid), beside the cosine table of all
    sentences; written to `path` atomically."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no window
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError(
            "--plot needs matplotlib, which is not installed: pip install 'minilm[viz]' (or pip install matplotlib)"
        ) from None
    tokens = trace.encodings[0].tokens
    n, L, H = len(tokens), len(trace.attention), trace.attention[0].shape[1]
    fig = plt.figure(figsize=PLOT_INCHES, dpi=PLOT_DPI)
    fig.suptitle(
        f"Attention of every head for {shorten(trace.texts[0], 90)!r} (row: query token, column: key token)",
        fontsize=14,
    )
    left, right = fig.add_gridspec(1, 2, width_ratios=[H, 4], wspace=0.12, left=0.05, right=0.98, top=0.92, bottom=0.1)
    grid = left.subgridspec(L, H, wspace=0.06, hspace=0.1)
    labels_size = max(4, min(8, 120 // n))
    for layer in range(L):
        for head in range(H):
            ax = fig.add_subplot(grid[layer, head])
            image = ax.imshow(trace.attention[layer][0, head, :n, :n].numpy(), vmin=0, vmax=1, cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            if layer == 0:
                ax.set_title(f"head {head + 1}", fontsize=10)
            if head == 0:
                ax.set_yticks(range(n), tokens, fontsize=labels_size)
                ax.set_ylabel(f"layer {layer + 1}", fontsize=10)
            if layer == L - 1:
                ax.set_xticks(range(n), tokens, fontsize=labels_size, rotation=90)
    scale = fig.colorbar(image, cax=fig.add_axes((0.77, 0.1, 0.2, 0.015)), orientation="horizontal")
    scale.set_label("attention weight (each row sums to 1)", fontsize=9)
    ax = fig.add_subplot(right)
    sims = cosine_similarity(trace.embeddings, trace.embeddings)  # (N, N)
    ax.imshow(sims, vmin=-1, vmax=1, cmap="RdBu_r")
    numbers = [str(i + 1) for i in range(len(trace.texts))]
    ax.set_xticks(range(len(numbers)), numbers)
    ax.set_yticks(range(len(numbers)), numbers)
    for (i, j), value in np.ndenumerate(sims):
        ax.text(
            j, i, f"{value:.3f}", ha="center", va="center", fontsize=10, color="white" if abs(value) > 0.6 else "black"
        )
    ax.set_title("cosine similarity of the sentence vectors", fontsize=12)
    key = "\n".join(f"{i + 1}: {shorten(text, 45)}" for i, text in enumerate(trace.texts[:12]))
    ax.set_xlabel(key, fontsize=9, loc="left")
    try:
        with atomic_path(path, suffix=".png") as tmp:  # the suffix tells matplotlib the format
            fig.savefig(tmp, dpi=PLOT_DPI)  # no bbox_inches="tight": the size stays PLOT_INCHES * PLOT_DPI
    finally:
        plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m minilm.explain",
        description="Show one forward pass of the encoder stage by stage: word pieces, shapes, attention, cosines.",
        epilog="With no sentences, explains the three demo sentences.",
    )
    parser.add_argument("texts", nargs="*", help="sentences to explain (default: the demo sentences)")
    parser.add_argument(
        "--top", type=int, default=3, metavar="N", help="attention links to show per layer (default: 3)"
    )
    parser.add_argument(
        "--plot", metavar="FILE.png", help="also draw every head's attention and the cosine table (needs matplotlib)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing --plot file")
    parser.add_argument(
        "--model", "-m", default=None, help=f"checkpoint name or folder (default: {DEFAULT_CHECKPOINT})"
    )
    parser.add_argument(
        "--tokenizer", choices=TOKENIZER_KINDS, default="fast", help="fast (default) or python (minilm.text.wordpiece)"
    )
    return parser.parse_args(argv)


def explain(args: argparse.Namespace) -> int:
    texts = args.texts or DEMO_SENTENCES
    if args.top < 0:
        raise InputError(f"--top {args.top}: give 0 or more links per layer")
    output = check_output_path(args.plot, args.force)
    if output is not None and output.suffix.lower() != ".png":
        raise InputError(f"--plot {output}: the picture is a PNG; give a file name ending in .png")
    encoder = SentenceEncoder.from_pretrained(args.model, tokenizer=args.tokenizer)
    result = trace(encoder, texts)
    write_report(sys.stdout, result, args.top)
    if output is not None:
        plot(result, output)
        print(f"attention picture written to {output}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run(lambda: explain(args))


if __name__ == "__main__":
    sys.exit(main())
