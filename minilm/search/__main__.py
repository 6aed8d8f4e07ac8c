"""python -m minilm.search: the rows of a shard folder nearest to a query, with their ids and texts.

    python -m minilm.embed --input corpus.txt --output vectors/          # first, the folder
    python -m minilm.search vectors/ "how do I reset my password?"
    python -m minilm.search vectors/ "first query" "second query" -k 5 --format jsonl
    python -m minilm.search vectors/ --input queries.txt                 # one query per line (or .jsonl, ...)

The query is encoded with the folder's own model and settings (minilm.search.searcher). `--format table`
(the default) prints rank, score, id and text per hit under each query; `--format jsonl` prints one
record per hit: {"query", "rank", "score", "id", "text"}. User errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..base.textio import RECORD_SUFFIXES, InputError
from ..cli import ArgumentParser, positive_int, read_texts, run, shorten, text_option
from .searcher import DEFAULT_RESCORE_MULTIPLIER, Hit, Searcher


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m minilm.search",
        description="Search a shard folder written by python -m minilm.embed --output DIR/.",
        epilog="Scores are cosines. Binary and int8 folders are searched in two passes: the stored form picks "
        f"k x --rescore-multiplier candidates ({DEFAULT_RESCORE_MULTIPLIER} by default), the float query "
        "rescores them.",
    )
    parser.add_argument("folder", metavar="DIR", help="the shard folder")
    parser.add_argument("queries", nargs="*", type=text_option, metavar="QUERY", help="what to search for")
    parser.add_argument(
        "--input",
        "-i",
        metavar="FILE",
        help=f"queries from a file: one per line, or {'/'.join(RECORD_SUFFIXES)} with a text field; '-' for stdin",
    )
    parser.add_argument("--text-field", default="text", help='the query field of record input (default: "text")')
    parser.add_argument(
        "-k", "--top-k", dest="k", type=positive_int, default=10, metavar="K", help="hits per query (10)"
    )
    parser.add_argument("--format", choices=("table", "jsonl"), default="table", help="table (default) or jsonl")
    parser.add_argument(
        "--group",
        choices=("rows", "documents"),
        default="rows",
        help="rows (default): rank the rows, windows included; documents: rank the documents of a folder "
        "embedded with --window, each by its best window",
    )
    parser.add_argument(
        "--rescore-multiplier",
        type=int,
        default=DEFAULT_RESCORE_MULTIPLIER,
        metavar="M",
        help="int8 and binary folders: rescore k x M candidates with the float query; 0 keeps the first pass",
    )
    parser.add_argument("--model", "-m", help="the checkpoint (default: the one the folder was embedded with)")
    parser.add_argument("--device", default=None, help="torch device for the query encoder (default: cpu)")
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the sha256 check of the shards (their sizes are still checked)"
    )
    args = parser.parse_args(argv)
    if args.rescore_multiplier < 0:
        parser.error(f"argument --rescore-multiplier: must be 0 or more, got {args.rescore_multiplier}")
    return args


def gather_queries(args: argparse.Namespace) -> list[str]:
    if args.input and args.queries:
        raise InputError("give the queries as arguments or with --input, not both")
    queries = read_texts(args.input, args.text_field) if args.input else args.queries
    if not queries:
        raise InputError("no query: give one after DIR, or --input FILE")
    return queries


def write_hits(out, query: str, hits: list[Hit], style: str) -> None:
    if style == "jsonl":
        for hit in hits:
            record = {"query": query, "rank": hit.rank, "score": round(hit.score, 6), "id": hit.id, "text": hit.text}
            if hit.span is not None:
                record["span"] = list(hit.span)
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        return
    out.write(f"query: {shorten(query, 100)}\n")
    out.write(f"{'rank':>4}  {'score':>7}  {'id':>10}  text\n")
    for hit in hits:
        text = shorten(hit.text, 100) if hit.text is not None else "(text not kept)"
        out.write(f"{hit.rank:>4}  {hit.score:>7.4f}  {hit.id:>10}  {text}\n")
    out.write("\n")


def search(args: argparse.Namespace) -> int:
    queries = gather_queries(args)
    searcher = Searcher(
        args.folder,
        model=args.model,
        verify=not args.no_verify,
        rescore_multiplier=args.rescore_multiplier,
        device=args.device,
    )
    for note in searcher.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.group == "documents" and searcher.manifest.identity.window is None:
        raise InputError(
            f"--group documents ranks the windows of long texts: {args.folder} was embedded without --window"
        )
    for query, hits in zip(queries, searcher.search(queries, args.k, args.group)):
        write_hits(sys.stdout, query, hits, args.format)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run(lambda: search(args))


if __name__ == "__main__":
    sys.exit(main())
