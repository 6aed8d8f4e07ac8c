"""python -m minilm.rerank: rank documents against a query with a cross-encoder.

    python -m minilm.rerank "how tall is everest" --input passages.txt --model weights/ms-marco-MiniLM-L-6-v2 \
        --no-verify
    python -m minilm.rerank "query" --input hits.jsonl --text-field body --top-k 5 --format jsonl
    grep -i everest passages.txt | python -m minilm.rerank "how tall is everest" --input - --no-verify

Prints the documents best first: rank, score, the document's 1-based line in the input (a
Parquet file's row) and its text; `--format jsonl` prints {"rank", "line", "score", "text"} per
document instead. Blank documents are skipped, with a note on stderr; an input without any is an error.
Scores are what the checkpoint's activation makes of the logits (ms-marco's rerankers: the logits
themselves); see minilm.encoders.cross_encoder. User errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from .base.textio import RECORD_SUFFIXES, InputError
from .cli import ArgumentParser, input_name, positive_int, read_numbered_texts, run, text_option
from .encoders.cross_encoder import CrossEncoder

DEFAULT_RERANKER = "cross-encoder/ms-marco-MiniLM-L-6-v2"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m minilm.rerank",
        description="Rank documents against a query with a cross-encoder (the query and each document read together).",
        epilog=f"The default model, {DEFAULT_RERANKER}, is looked for in weights/ and the Hugging Face cache. "
        "No reranker is in the pinned table yet, so a reranker loads with --no-verify.",
    )
    parser.add_argument("query", type=text_option, help="the query")
    parser.add_argument(
        "--input",
        "-i",
        metavar="FILE",
        required=True,
        help=f"the documents: one per line, or {'/'.join(RECORD_SUFFIXES)} with a text field; '-' for stdin",
    )
    parser.add_argument(
        "--text-field", default="text", help='the text field or column of record input (default: "text")'
    )
    parser.add_argument("--top-k", "-k", type=positive_int, metavar="K", help="print only the K best (default: all)")
    parser.add_argument("--format", choices=("table", "jsonl"), default="table", help="table (default) or jsonl")
    parser.add_argument(
        "--model", "-m", default=DEFAULT_RERANKER, help=f"checkpoint name or folder ({DEFAULT_RERANKER})"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="pairs per batch (32)")
    parser.add_argument("--no-verify", action="store_true", help="skip the sha256 check (for unpinned checkpoints)")
    parser.add_argument(
        "--download", action="store_true", help="if a known checkpoint is not found locally, download it"
    )
    return parser.parse_args(argv)


def rerank(args: argparse.Namespace) -> int:
    numbered = read_numbered_texts(args.input, args.text_field)
    kept = [(line, text) for line, text in numbered if text.strip()]  # a blank document has nothing to rank
    if not kept:
        raise InputError(f"{input_name(args.input)} holds no documents to rank")
    if len(kept) < len(numbered):
        print(f"note: {len(numbered) - len(kept)} blank documents skipped", file=sys.stderr)
    documents = [text for _, text in kept]
    if not args.query.strip():
        raise InputError("the query is empty; give the text to rank the documents against")
    reranker = CrossEncoder.from_pretrained(
        args.model, device=args.device, verify=not args.no_verify, download=args.download
    )
    if reranker.num_labels != 1:
        raise InputError(f"{args.model} scores {reranker.num_labels} labels; ranking needs a one-label reranker")
    ranked = reranker.rank(args.query, documents, top_k=args.top_k, batch_size=args.batch_size)
    out = sys.stdout
    if args.format == "table":
        out.write(f"{'rank':>4}  {'score':>10}  {'line':>6}  text\n")
    for rank, hit in enumerate(ranked, start=1):
        line, text = kept[hit["corpus_id"]]
        if args.format == "jsonl":
            record = {"rank": rank, "line": line, "score": hit["score"], "text": text}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            out.write(f"{rank:>4}  {hit['score']:>10.4f}  {line:>6}  {' '.join(text.split())}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run(lambda: rerank(args))


if __name__ == "__main__":
    sys.exit(main())
