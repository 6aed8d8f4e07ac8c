"""minilm.search.index: an HNSW index (usearch) beside a shard folder reaches recall@10 >= 0.95 against
exact float32 on 5,000 real sentences, and is never searched stale: a folder that changed after the
build, or an index copied from another folder, is refused in one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from minilm.base.textio import InputError
from minilm.corpus import CorpusSettings, embed_corpus
from minilm.search import Searcher
from minilm.search.__main__ import main as search_main
from minilm.search.index import INDEX_FILES, INDEX_JSON, build_index

from conftest import real_lines, write_lines

INDEX_FILE = INDEX_FILES["hnsw"]


@pytest.fixture(scope="module")
def five_thousand(tmp_path_factory, encoder, stsb_sentences):
    """5,000 real STS-B sentences in a float32 folder, the exact top 10 of 385 other sentences, and a copier."""
    root = tmp_path_factory.mktemp("index")
    corpus = write_lines(root / "corpus.txt", stsb_sentences[:5000])
    embed_corpus(encoder, corpus, root / "out", CorpusSettings(shard_rows=2000), show_progress_bar=False)
    exact = Searcher(root / "out", encoder=encoder, exact=True)
    queries = exact.encode_queries(stsb_sentences[5000:5385])  # sentences the corpus does not hold
    return root, queries, exact.search_vectors(queries, 10)


def recall(found, truth) -> float:
    return float(np.mean([len({h.row for h in a} & {h.row for h in t}) / 10 for a, t in zip(found, truth)]))


@pytest.mark.slow
def test_hnsw_recall_at_10_on_5000_real_sentences(five_thousand, encoder):
    root, queries, truth = five_thousand
    out = root / "hnsw"
    shutil.copytree(root / "out", out)
    info = build_index(out)
    assert info.rows == 5000 and info.kind == "hnsw" and info.dtype == "i8"
    assert [s["file"] for s in info.shards] == ["part-00000.npy", "part-00001.npy", "part-00002.npy"]
    indexed = Searcher(out, encoder=encoder)  # ef 300, the graph's best k x 4 rescored
    assert indexed.index is not None and (indexed.expansion_search, indexed.rescore_multiplier) == (300, 4)
    found = indexed.search_vectors(queries, 10)
    print(f"hnsw recall@10 {recall(found, truth):.3f}")
    assert recall(found, truth) >= 0.95
    for a, t in zip(found, truth):  # a row both find scores the same: the index's picks are rescored exactly
        common = {h.row: h.score for h in t}
        assert all(abs(h.score - common[h.row]) <= 1e-5 for h in a if h.row in common)


@pytest.mark.slow
def test_binary_index_with_float32_rescoring(five_thousand, encoder):
    """sentence-transformers' binary + rescoring recipe: the bits in memory pick candidates, the float32 rows on
    disk rank them. With a multiplier that covers the corpus it is exact search; at the default, recall >= 0.95."""
    root, queries, truth = five_thousand
    out = root / "binary"
    shutil.copytree(root / "out", out)
    info = build_index(out, kind="binary")
    assert info.dtype == "b1" and info.bytes < 5000 * 1536 / 8  # under 1/8 of the float32 rows
    covering = Searcher(out, encoder=encoder, rescore_multiplier=500).search_vectors(queries, 10)  # k x 500 = all
    assert [[h.row for h in q] for q in covering] == [[h.row for h in q] for q in truth]
    assert max(abs(a.score - b.score) for q, t in zip(covering, truth) for a, b in zip(q, t)) <= 1e-5
    found = Searcher(out, encoder=encoder).search_vectors(queries, 10)
    print(f"binary recall@10 {recall(found, truth):.3f}")
    assert recall(found, truth) >= 0.95


def folder(tmp_path, tiny_encoder, name: str, lines: list[str]):
    corpus = write_lines(tmp_path / f"{name}.txt", lines)
    embed_corpus(tiny_encoder, corpus, tmp_path / name, CorpusSettings(shard_rows=50), show_progress_bar=False)
    return corpus, tmp_path / name


def test_a_stale_or_foreign_index_is_refused(tmp_path, tiny_encoder, capsys):
    lines = real_lines(120)
    corpus, out = folder(tmp_path, tiny_encoder, "a", lines)
    build_index(out)
    assert Searcher(out, encoder=tiny_encoder).search(["What is the capital of France?"], k=3)[0]
    with pytest.raises(InputError, match=r"index.json exists; pass --force"):
        build_index(out)
    # grown: the same command over a longer input re-embeds the folder; the index covers the old shards
    write_lines(corpus, lines + real_lines(150)[120:])
    embed_corpus(tiny_encoder, corpus, out, CorpusSettings(shard_rows=50), force=True, show_progress_bar=False)
    with pytest.raises(InputError) as caught:
        Searcher(out, encoder=tiny_encoder)
    assert "index.usearch covers other shards than" in str(caught.value) and "--force" in str(caught.value)
    assert Searcher(out, encoder=tiny_encoder, exact=True).search(["a question"], k=2)  # --exact still searches
    status = search_main([str(out), "a question"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "covers other shards" in err[0]
    build_index(out, force=True)
    assert Searcher(out, encoder=tiny_encoder).index.info.rows == 150
    # an index copied from another folder
    _, other = folder(tmp_path, tiny_encoder, "b", real_lines(400)[300:])
    for name in (INDEX_FILE, INDEX_JSON):
        shutil.copy(out / name, other / name)
    with pytest.raises(InputError, match="covers other shards than"):
        Searcher(other, encoder=tiny_encoder)
    # damaged after the build
    data = bytearray((out / INDEX_FILE).read_bytes())
    data[-10] ^= 0xFF
    (out / INDEX_FILE).write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"index.usearch: sha256 differs from index.json's"):
        Searcher(out, encoder=tiny_encoder)


def test_build_refuses_an_unfinished_folder_in_one_line(tmp_path, tiny_encoder, capsys):
    _, out = folder(tmp_path, tiny_encoder, "c", real_lines(60))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert search_main(["build", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith(f"error: {out} holds an unfinished run") and not (out / INDEX_JSON).exists()
    )
