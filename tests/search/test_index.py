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
from minilm.search.index import INDEX_FILE, INDEX_JSON, build_index

from conftest import real_lines, write_lines


@pytest.mark.slow
def test_hnsw_recall_at_10_on_5000_real_sentences(tmp_path, encoder, stsb_sentences):
    corpus = write_lines(tmp_path / "corpus.txt", stsb_sentences[:5000])
    embed_corpus(encoder, corpus, tmp_path / "out", CorpusSettings(shard_rows=2000), show_progress_bar=False)
    info = build_index(tmp_path / "out")
    assert (
        info.rows == 5000
        and info.dtype == "f16"
        and [s["file"] for s in info.shards]
        == [
            "part-00000.npy",
            "part-00001.npy",
            "part-00002.npy",
        ]
    )
    queries = stsb_sentences[5000:5385]  # sentences the corpus does not hold
    indexed = Searcher(tmp_path / "out", encoder=encoder, rescore_multiplier=1)
    exact = Searcher(tmp_path / "out", encoder=encoder, exact=True)
    assert indexed.index is not None and exact.index is None
    vectors = indexed.encode_queries(queries)
    approximate, truth = indexed.search_vectors(vectors, 10), exact.search_vectors(vectors, 10)
    recall = np.mean([len({h.row for h in a} & {h.row for h in t}) / 10 for a, t in zip(approximate, truth)])
    print(f"recall@10 {recall:.3f}")
    assert recall >= 0.95, recall
    for a, t in zip(approximate, truth):  # a row both find scores the same: the index's picks are rescored exactly
        common = {h.row: h.score for h in t}
        assert all(abs(h.score - common[h.row]) <= 1e-5 for h in a if h.row in common)


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
