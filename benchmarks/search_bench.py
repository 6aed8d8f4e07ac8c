"""Search benchmark: retrieval quality on real pairs against sentence-transformers, and search at scale.

    .venv/bin/python benchmarks/search_bench.py quality              # STS-B pairs among distractors, ~5 min
    .venv/bin/python benchmarks/search_bench.py scale DIR            # a finished shard folder (1M rows: ~1 h)
    .venv/bin/python benchmarks/search_bench.py scale --work W       # embeds the 1M-line corpus into W first

quality: every STS-B dev and test pair scored >= 4.0 gives a query (its first sentence) and the one
relevant document (its second). The corpus is every distinct second sentence of those pairs, plus
distractors: the rest of STS-B, TREC's questions and SST-2's sentences. Each mode searches the same
queries; MRR@10 and recall@1/@10 count the relevant document's rank. sentence-transformers runs in the
same process on the same vectors: util.semantic_search on float32, and semantic_search_usearch with
binary and int8 + rescoring. Speed is the ratio of lookup times in this run (the queries' encoding apart).
No reranker's weights are available offline, and random ones cannot show quality, so there is no
reranker row.

scale: on a shard folder (benchmarks/corpus_scale.py's million lines, embedded with
`python -m minilm.embed --dtype int8`), each mode runs in its own process (for its peak RSS): exact
streaming float32, the binary index with float32 rescoring, HNSW (i8 by default; hnsw-f16 too with
--modes); and sentence-transformers' util.semantic_search with the whole matrix in memory, and its binary
recipe (ubinary vectors in a usearch b1 index, semantic_search_usearch rescoring at our default
multiplier). After a first pass over every query (its time is reported: it reads an index or the shards
from disk into memory), it reports lookup p50/p99 for one query (50 queries) and for batches of 100 (300
queries), end to end with encoding, peak RSS, size on disk, recall@10 against exact float32 over the 300
queries, index build time; and recall and lookup against the rescore multiplier (binary index) and
against ef (HNSW), one-query figures there over all 300 queries.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpora import DATA_DIR, require
from machine import cpu_model, gemm_peak

from minilm import SentenceEncoder
from minilm.base.stsb import read_stsb
from minilm.corpus import CorpusSettings, embed_corpus, load_shards
from minilm.search import Searcher, semantic_search
from minilm.search.folders import open_folder
from minilm.search.index import DEFAULT_EXPANSION_SEARCH, DEFAULT_INDEX_DTYPE, build_index
from minilm.search.searcher import DEFAULT_RESCORE_MULTIPLIER, GRAPH_RESCORE_MULTIPLIER

K = 10
M = DEFAULT_RESCORE_MULTIPLIER  # every rescored mode, ours and sentence-transformers', at our default


# ---------------------------------------------------------------------------- quality


def pairs_and_corpus(data_dir: Path) -> tuple[list[str], list[int], list[str]]:
    """(queries, the corpus row relevant to each, corpus): STS-B pairs >= 4.0 among real distractors."""
    queries, relevant_texts, others = [], [], []
    for split in ("dev", "test"):
        scores, first, second = read_stsb(require(data_dir / "stsbenchmark" / f"sts-{split}.csv"))
        for score, a, b in zip(scores, first, second):
            if score >= 4.0 and a != b:
                queries.append(a)
                relevant_texts.append(b)
            else:
                others += [a, b]
    for name in ("trec/train.txt", "trec/test.txt", "sst2/train.txt", "sst2/dev.txt", "sst2/test.txt"):
        with open(require(data_dir / name), encoding="utf-8") as f:
            others += [line.split(" ", 1)[1].strip() for line in f if " " in line]
    queried = set(queries)
    corpus = list(dict.fromkeys([*relevant_texts, *(t for t in others if t and t not in queried)]))
    row = {text: i for i, text in enumerate(corpus)}
    return queries, [row[t] for t in relevant_texts], corpus


def rank_metrics(found: list[list[int]], relevant: list[int]) -> dict[str, float]:
    ranks = [rows.index(r) + 1 if r in rows else None for rows, r in zip(found, relevant)]
    return {
        "mrr@10": float(np.mean([1 / r if r else 0.0 for r in ranks])),
        "recall@1": float(np.mean([r == 1 for r in ranks])),
        "recall@10": float(np.mean([r is not None for r in ranks])),
    }


def timed(call, repeats: int = 3):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - start)
    return result, best


def quality(args: argparse.Namespace) -> dict:
    queries, relevant, corpus = pairs_and_corpus(args.data_dir)
    work = args.work or Path(tempfile.mkdtemp(prefix="search_bench_"))  # --work: kept, and reused when run again
    work.mkdir(parents=True, exist_ok=True)
    encoder = SentenceEncoder.from_pretrained()
    corpus_file = work / "corpus.txt"
    corpus_file.write_text("".join(t.replace("\n", " ") + "\n" for t in corpus), encoding="utf-8")
    folders = {}
    for precision in ("float32", "int8", "binary"):
        folders[precision] = work / precision
        embed_corpus(encoder, corpus_file, folders[precision], CorpusSettings(precision=precision))
    for kind in ("hnsw", "binary"):
        folders[f"float32+{kind}"] = work / f"float32-{kind}"
        shutil.rmtree(folders[f"float32+{kind}"], ignore_errors=True)
        shutil.copytree(folders["float32"], folders[f"float32+{kind}"])
        build_index(folders[f"float32+{kind}"], kind=kind)
    query_vectors = Searcher(folders["float32"], encoder=encoder).encode_queries(queries)

    rows, times = [], {}

    def ours(name: str, folder: Path, multiplier: int | None, exact: bool = False) -> None:
        searcher = Searcher(folder, encoder=encoder, rescore_multiplier=multiplier, exact=exact)
        hits, seconds = timed(lambda: searcher.search_vectors(query_vectors, K))
        times[name] = seconds
        rows.append({"engine": "minilm", "mode": name, **rank_metrics([[h.row for h in q] for q in hits], relevant)})

    ours("float32, exact", folders["float32"], 0, exact=True)
    ours("int8, no rescoring", folders["int8"], 0)
    ours(f"int8, rescored (x{M})", folders["int8"], M)
    ours("binary, no rescoring", folders["binary"], 0)
    ours(f"binary, rescored (x{M})", folders["binary"], M)
    ours(f"binary index + float32 rescoring (x{M})", folders["float32+binary"], M)
    ours(  # at its own defaults: ef and the graph's multiplier
        f"HNSW {DEFAULT_INDEX_DTYPE} + float32 rescoring (x{GRAPH_RESCORE_MULTIPLIER}, ef {DEFAULT_EXPANSION_SEARCH})",
        folders["float32+hnsw"],
        None,
    )

    from sentence_transformers import util
    from sentence_transformers.util.quantization import quantize_embeddings, semantic_search_usearch

    _, corpus_vectors = load_shards(folders["float32"])
    tq, tc = torch.from_numpy(query_vectors), torch.from_numpy(corpus_vectors)
    theirs, seconds = timed(lambda: util.semantic_search(tq, tc, top_k=K))
    times["util.semantic_search, float32"] = seconds
    rows.append(
        {
            "engine": "sentence-transformers",
            "mode": "util.semantic_search, float32",
            **rank_metrics([[h["corpus_id"] for h in q] for q in theirs], relevant),
        }
    )
    calibration = corpus_vectors[:10_000]
    ranges = np.stack([calibration.min(axis=0), calibration.max(axis=0)])
    for precision, multiplier in (("ubinary", M), ("int8", M)):
        stored = quantize_embeddings(corpus_vectors, precision=precision, ranges=ranges)

        def st_search(index=None, p=precision, m=multiplier, stored=stored):
            return semantic_search_usearch(  # the stored vectors build the index; then the index alone is given
                query_vectors,
                corpus_embeddings=stored if index is None else None,
                corpus_index=index,
                corpus_precision=p,
                top_k=K,
                ranges=ranges,
                rescore=True,
                rescore_multiplier=m,
                output_index=True,
            )

        _, _, index = st_search()  # the index once; then the searches alone are timed
        (hits, _, _), seconds = timed(lambda st_search=st_search, index=index: st_search(index))
        name = f"semantic_search_usearch, {precision} + rescoring (x{multiplier})"
        times[name] = seconds
        found = [[h["corpus_id"] for h in q] for q in hits]
        rows.append({"engine": "sentence-transformers", "mode": name, **rank_metrics(found, relevant)})
    same = semantic_search(query_vectors, corpus_vectors, top_k=K)
    # the same top 10 as sentence-transformers' (score for score: rows of equal vectors may tie in either order)
    assert max(abs(a["score"] - b["score"]) for q, t in zip(same, theirs) for a, b in zip(q, t)) <= 1e-5
    if args.work is None:
        shutil.rmtree(work)
    base = times["util.semantic_search, float32"]
    for row in rows:  # lookup time of the whole query set, best of 3; speed as a ratio to util.semantic_search
        row["lookup_s"] = times[row["mode"]]
        row["speed_vs_st_float32"] = base / times[row["mode"]]
    return {"queries": len(queries), "corpus": len(corpus), "rows": rows}


# ---------------------------------------------------------------------------- scale

SCALE_MODES = ("exact", "binary", "hnsw", "hnsw-f16", "st", "st-binary")
MULTIPLIERS = (1, 2, 4, 10, 20, 40)
EXPANSIONS = (100, 200, 300, 400, 600)  # HNSW ef


def scale_worker(folder: Path, mode: str, queries: list[str], truth_file: Path | None) -> dict:
    """One mode in this process: latencies, recall against the exact rows in truth_file, and peak RSS."""
    encoder = SentenceEncoder.from_pretrained(dtype="float32")
    build_s = None
    if mode == "st-binary":  # sentence-transformers' recipe: ubinary in a usearch b1 index, rescored (x M)
        from sentence_transformers.util.quantization import quantize_embeddings, semantic_search_usearch
        from usearch.index import Index

        start = time.perf_counter()
        index = Index(ndim=folder_dim(folder), metric="hamming", dtype="b1")
        for first, chunk in Searcher(folder, encoder=encoder, verify=False).source.chunks(65_536):
            index.add(np.arange(first, first + len(chunk)), quantize_embeddings(chunk, precision="ubinary"))
        build_s = load_s = time.perf_counter() - start

        def lookup(vectors: np.ndarray) -> list[list[int]]:
            hits, _ = semantic_search_usearch(
                vectors, corpus_index=index, corpus_precision="ubinary", top_k=K, rescore_multiplier=M
            )
            return [[h["corpus_id"] for h in q] for q in hits]
    elif mode == "st":
        from sentence_transformers import util

        start = time.perf_counter()
        _, corpus = load_shards(folder)
        corpus_t = torch.from_numpy(corpus)
        load_s = time.perf_counter() - start

        def lookup(vectors: np.ndarray) -> list[list[int]]:
            return [
                [h["corpus_id"] for h in q] for q in util.semantic_search(torch.from_numpy(vectors), corpus_t, top_k=K)
            ]
    else:
        start = time.perf_counter()
        searcher = Searcher(folder, encoder=encoder, exact=mode == "exact", verify=False)
        load_s = time.perf_counter() - start

        def lookup(vectors: np.ndarray) -> list[list[int]]:
            return [[h.row for h in q] for q in searcher.search_vectors(vectors, K)]

    vectors = encoder.encode(queries, show_progress_bar=False)
    start = time.perf_counter()  # a first pass over every query: an index or shard read from disk is warm after it
    for i in range(0, len(queries), 100):
        lookup(vectors[i : i + 100])
    first_pass_s = time.perf_counter() - start
    one, hundred, end_to_end, encode_one = [], [], [], []
    found: list[list[int]] = []
    for i in range(min(len(queries), 50)):
        start = time.perf_counter()
        lookup(vectors[i : i + 1])
        one.append(time.perf_counter() - start)
        start = time.perf_counter()
        vector = encoder.encode([queries[i]], show_progress_bar=False)
        encode_one.append(time.perf_counter() - start)
        lookup(vector)
        end_to_end.append(time.perf_counter() - start)
    for i in range(0, len(queries), 100):
        start = time.perf_counter()
        found += lookup(vectors[i : i + 100])
        hundred.append(time.perf_counter() - start)
    result = {
        "mode": mode,
        "load_s": load_s,
        "first_pass_s": first_pass_s,
        "one_p50_ms": 1000 * float(np.percentile(one, 50)),
        "one_p99_ms": 1000 * float(np.percentile(one, 99)),
        "encode_one_p50_ms": 1000 * float(np.percentile(encode_one, 50)),
        "end_to_end_p50_ms": 1000 * float(np.percentile(end_to_end, 50)),
        "end_to_end_p99_ms": 1000 * float(np.percentile(end_to_end, 99)),
        "batch100_p50_ms": 1000 * float(np.percentile(hundred, 50)),
        "peak_rss_mb": peak_rss_mb(),
        "build_s": build_s,
        "found": found,
        "found_scores": exact_scores(folder, vectors, found),
    }
    if truth_file is not None:
        truth = json.loads(truth_file.read_text())
        result["recall@10"] = recall(found, truth["rows"])
        result["recall@10, ann-benchmarks"] = recall_within(result["found_scores"], truth["scores"])
        if mode == "binary":  # recall and lookup against the rescore multiplier
            result["by_multiplier"] = {
                multiplier: curve_point(searcher, "rescore_multiplier", multiplier, lookup, vectors, folder, truth)
                for multiplier in MULTIPLIERS
            }
        elif mode.startswith("hnsw"):  # ... and against the graph search's ef
            result["by_ef"] = {
                ef: curve_point(searcher, "expansion_search", ef, lookup, vectors, folder, truth) for ef in EXPANSIONS
            }
    return result


def curve_point(searcher: Searcher, setting: str, value: int, lookup, vectors: np.ndarray, folder: Path, truth) -> dict:
    """recall@10 and lookup times with one of the searcher's settings changed."""
    setattr(searcher, setting, value)
    one = []
    for i in range(len(vectors)):
        start = time.perf_counter()
        lookup(vectors[i : i + 1])
        one.append(time.perf_counter() - start)
    start = time.perf_counter()
    found = [row for i in range(0, len(vectors), 100) for row in lookup(vectors[i : i + 100])]
    seconds = (time.perf_counter() - start) / -(-len(vectors) // 100)
    return {
        "recall@10": recall(found, truth["rows"]),
        "recall@10, ann-benchmarks": recall_within(exact_scores(folder, vectors, found), truth["scores"]),
        "one_p50_ms": 1000 * float(np.percentile(one, 50)),
        "batch100_ms": 1000 * seconds,
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started. Linux's VmHWM belongs to the memory map that
    exec made; ru_maxrss would carry over the parent's peak at fork."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def folder_dim(folder: Path) -> int:
    return json.loads((folder / "manifest.json").read_text())["dim"]


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    """The share of the exact top K's rows that were found."""
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))


def recall_within(found_scores: list[list[float]], truth_scores: list[list[float]], epsilon: float = 1e-3) -> float:
    """ann-benchmarks' recall: a hit counts when its exact cosine is within epsilon of the K-th exact one. The
    1M corpus repeats each sentence with " (line N)" appended, so a query's 10th and 11th rows are often copies
    whose cosines differ by less than 1e-3 (for 58% of these queries), and which of them is "the" 10th is noise."""
    return float(np.mean([sum(s >= t[K - 1] - epsilon for s in f[:K]) / K for f, t in zip(found_scores, truth_scores)]))


def exact_scores(folder: Path, vectors: np.ndarray, found: list[list[int]]) -> list[list[float]]:
    """The exact float32 cosine of each found row to its query (the folder's rows are unit length)."""
    source = open_folder(folder, verify=False)
    return [(source.stored(np.array(rows, dtype=np.int64)) @ vector).tolist() for vector, rows in zip(vectors, found)]


def scale_folder(args: argparse.Namespace) -> Path:
    """The folder to measure: DIR as given, or --lines lines of benchmarks/corpus_scale.py's corpus embedded
    with --dtype int8 into --work (resumable: a rerun continues the embedding where it stopped)."""
    if args.folder:
        return Path(args.folder)
    from corpus_scale import write_corpus

    work = args.work or Path(tempfile.gettempdir()) / "search_scale_work"
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"corpus{args.lines}.txt"
    if not corpus.is_file():
        write_corpus(corpus, args.lines)
    folder = work / f"vectors{args.lines}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "minilm.embed",
            "--input",
            str(corpus),
            "--output",
            f"{folder}/",
            "--dtype",
            "int8",
            "--shard-size",
            "50000",
        ],
        check=True,
    )
    return folder


def scale(args: argparse.Namespace) -> dict:
    folder = scale_folder(args)
    with open(require(args.data_dir / "stsbenchmark" / "sts-dev.csv"), encoding="utf-8"):
        pass
    _, first, _ = read_stsb(args.data_dir / "stsbenchmark" / "sts-dev.csv")
    queries = list(dict.fromkeys(first))[:300]
    work = Path(tempfile.mkdtemp(prefix="search_scale_"))
    (work / "queries.json").write_text(json.dumps(queries))
    results, sizes, builds = [], {}, {}
    sizes["shards (float32)"] = sum(p.stat().st_size for p in folder.glob("part-*.npy"))
    sizes["texts and ids"] = sum(p.stat().st_size for p in folder.glob("part-*.json"))
    truth_file = work / "truth.json"
    for mode in ("exact", *(m for m in args.modes.split(",") if m != "exact")):  # exact first: it is the truth
        if mode not in SCALE_MODES:
            raise SystemExit(f"--modes: {mode!r} is not one of {', '.join(SCALE_MODES)}")
        if mode in ("binary", "hnsw", "hnsw-f16"):  # built as a user builds it, in its own process
            start = time.perf_counter()
            kind, _, dtype = mode.partition("-")
            command = [sys.executable, "-m", "minilm.search", "build", str(folder), "--kind", kind, "--force"]
            command += ["--dtype", dtype] if dtype else []
            subprocess.run(command, check=True)
            builds[mode] = time.perf_counter() - start
            sizes[f"index ({mode})"] = json.loads((folder / "index.json").read_text())["bytes"]
        elif mode == "exact":
            for name in ("index.json", "index.usearch", "index.bits.npy"):
                (folder / name).unlink(missing_ok=True)
        out = work / f"{mode}.json"
        subprocess.run(
            [
                sys.executable,
                __file__,
                "scale-worker",
                str(folder),
                mode,
                str(work / "queries.json"),
                str(truth_file) if mode != "exact" else "-",
                str(out),
            ],
            check=True,
        )
        result = json.loads(out.read_text())
        if mode == "exact":
            truth_file.write_text(json.dumps({"rows": result["found"], "scores": result["found_scores"]}))
        result.pop("found")
        result.pop("found_scores")
        results.append(result)
    for name in ("index.json", "index.usearch", "index.bits.npy"):
        (folder / name).unlink(missing_ok=True)
    shutil.rmtree(work)
    rows = sum(1 for _ in folder.glob("part-*.npy")) and json.loads((folder / "manifest.json").read_text())["rows"]
    return {"rows": rows, "modes": results, "sizes_bytes": sizes, "build_s": builds}


# ---------------------------------------------------------------------------- entry


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "gemm_peak_gflops": {"float32": round(gemm_peak(torch.float32)), "int8": round(gemm_peak(torch.int8))},
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["scale-worker"]:
        folder, mode, queries, truth, out = argv[1:]
        result = scale_worker(
            Path(folder), mode, json.loads(Path(queries).read_text()), None if truth == "-" else Path(truth)
        )
        Path(out).write_text(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("quality", "scale"))
    parser.add_argument("folder", nargs="?", help="scale: the shard folder (default: --lines lines embedded here)")
    parser.add_argument("--lines", type=int, default=1_000_000, help="scale without DIR: lines of the corpus")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--work", type=Path, help="quality: keep the folders here (a rerun reuses them)")
    parser.add_argument("--modes", default=",".join(SCALE_MODES), help="scale: the modes to run (exact always runs)")
    args = parser.parse_args(argv)
    report = {"machine": machine(), args.part: quality(args) if args.part == "quality" else scale(args)}
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
