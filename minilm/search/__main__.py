"""python -m minilm.search: the rows of a shard folder nearest to a query, with their ids and texts.

    python -m minilm.embed --input corpus.txt --output vectors/          # first, the folder
    python -m minilm.search vectors/ "how do I reset my password?"
    python -m minilm.search vectors/ "first query" "second query" -k 5 --format jsonl
    python -m minilm.search vectors/ --input queries.txt                 # one query per line (or .jsonl, ...)
    python -m minilm.search build vectors/                               # an HNSW index beside the shards

The query is encoded with the folder's own model and settings (minilm.search.searcher). `--format table`
(the default) prints rank, score, id and text per hit under each query; `--format jsonl` prints one
record per hit: {"query", "rank", "score", "id", "text"}. Queries use the folder's index
(minilm.search.index) when it has one that matches it, and exact search otherwise (or with --exact).
User errors print one line and exit 2. (A folder named "build" is given as ./build.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm.auto import tqdm

from ..base.textio import RECORD_SUFFIXES, InputError
from ..cli import ArgumentParser, positive_int, read_texts, run, shorten, text_option
from ..encoders.cross_encoder import CrossEncoder
from .folders import open_folder
from .index import (
    DEFAULT_CONNECTIVITY,
    DEFAULT_EXPANSION_SEARCH,
    DEFAULT_INDEX_DTYPE,
    INDEX_DTYPES,
    INDEX_KINDS,
    build_index,
)
from .searcher import DEFAULT_RESCORE_MULTIPLIER, GRAPH_RESCORE_MULTIPLIER, Hit, Searcher


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m minilm.search",
        description="Search a shard folder written by python -m minilm.embed --output DIR/.",
        epilog="Scores are cosines. Binary and int8 folders, and folders with an index, are searched in two "
        "passes: the stored form or the index picks k x --rescore-multiplier candidates, the float query rescores "
        "them against the stored vectors.",
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
        default=None,
        metavar="M",
        help=f"rescore k x M candidates with the float query: int8 and binary folders and a binary index "
        f"({DEFAULT_RESCORE_MULTIPLIER} by default), an HNSW index ({GRAPH_RESCORE_MULTIPLIER}); 0: no rescoring",
    )
    parser.add_argument(
        "--ef",
        type=positive_int,
        default=DEFAULT_EXPANSION_SEARCH,
        metavar="EF",
        help=f"an HNSW index: the candidates its search keeps ({DEFAULT_EXPANSION_SEARCH}); more finds more of the "
        "true nearest rows, more slowly",
    )
    parser.add_argument("--model", "-m", help="the checkpoint (default: the one the folder was embedded with)")
    parser.add_argument(
        "--rerank",
        metavar="MODEL",
        help="rerank each query's k hits with this cross-encoder (a name or folder, e.g. "
        "cross-encoder/ms-marco-MiniLM-L-6-v2); no reranker has pinned hashes, so it loads unverified",
    )
    parser.add_argument("--device", default=None, help="torch device for the query encoder (default: cpu)")
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the sha256 check of the shards (their sizes are still checked)"
    )
    parser.add_argument("--exact", action="store_true", help="scan every row even where the folder has an index")
    args = parser.parse_args(argv)
    if args.rescore_multiplier is not None and args.rescore_multiplier < 0:
        parser.error(f"argument --rescore-multiplier: must be 0 or more, got {args.rescore_multiplier}")
    return args


def parse_build_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m minilm.search build",
        description="Build an HNSW index (usearch) beside a finished shard folder; search then uses it.",
        epilog="Needs pip install 'minilm[search]'. The index records the shards it covers: a folder that changes "
        "after the build is refused until it is rebuilt (--force).",
    )
    parser.add_argument("folder", metavar="DIR", help="the shard folder")
    parser.add_argument(
        "--kind",
        choices=INDEX_KINDS,
        default="hnsw",
        help="hnsw (default): a graph, approximate; binary: every row's sign bits in memory, searched exactly by "
        "Hamming distance; either's candidates are rescored with the stored vectors",
    )
    parser.add_argument(
        "--dtype",
        choices=INDEX_DTYPES,
        default=DEFAULT_INDEX_DTYPE,
        help=f"how the graph stores vectors ({DEFAULT_INDEX_DTYPE}); its candidates are rescored with the stored ones",
    )
    parser.add_argument(
        "--connectivity", type=positive_int, default=DEFAULT_CONNECTIVITY, metavar="M", help="edges per node (32)"
    )
    parser.add_argument(
        "--expansion-add", type=positive_int, default=128, metavar="EF", help="candidates kept while inserting (128)"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing index")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> int:
    rows = open_folder(args.folder, verify=False).rows
    with tqdm(total=rows, desc="Indexing", unit="row", file=sys.stderr, disable=rows < 10_000) as bar:
        info = build_index(
            args.folder,
            kind=args.kind,
            dtype=args.dtype,
            connectivity=args.connectivity,
            expansion_add=args.expansion_add,
            force=args.force,
            progress=bar.update,
        )
    print(f"{info.rows} rows indexed in {Path(args.folder) / info.file} ({info.bytes / 2**20:,.1f} MiB, {info.dtype})")
    return 0


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
        expansion_search=args.ef,
        device=args.device,
        exact=args.exact,
    )
    for note in searcher.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.group == "documents" and searcher.source.window is None:
        raise InputError(
            f"--group documents ranks the windows of long texts: {args.folder} was embedded without --window"
        )
    reranker = CrossEncoder.from_pretrained(args.rerank, device=args.device, verify=False) if args.rerank else None
    results = searcher.search(queries, args.k, args.group)
    if reranker is not None:
        results = searcher.rerank(queries, results, reranker)
    for query, hits in zip(queries, results):
        write_hits(sys.stdout, query, hits, args.format)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["build"]:
        build_args = parse_build_args(argv[1:])
        return run(lambda: build(build_args))
    args = parse_args(argv)
    return run(lambda: search(args))


if __name__ == "__main__":
    sys.exit(main())
