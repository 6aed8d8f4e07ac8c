"""Long documents in overlapping windows (minilm.embed --window/--stride): each window a row with its
document id and character span, its vector the encoding of its span's text, and search by documents."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minilm.corpus import CorpusSettings, embed_corpus, load_shards, read_manifest
from minilm.embed import main as embed_main
from minilm.search import Searcher
from minilm.search.__main__ import main as search_main

from conftest import write_lines


@pytest.fixture(scope="module")
def windowed(tmp_path_factory, encoder, stsb_sentences):
    """24 documents of 25 real sentences each (about 300 word pieces), in windows of 64 pieces every 48."""
    root = tmp_path_factory.mktemp("windows")
    documents = [" ".join(stsb_sentences[i * 25 : (i + 1) * 25]) for i in range(24)]
    corpus = write_lines(root / "docs.txt", documents)
    settings = CorpusSettings(shard_rows=10, window=64, stride=48)
    embed_corpus(encoder, corpus, root / "out", settings, show_progress_bar=False)
    return root, documents, settings


def folder_rows(out):
    manifest = read_manifest(out)
    ids, texts, spans = [], [], []
    for shard in manifest.shards:
        ids += json.loads((out / shard.ids).read_text())
        texts += json.loads((out / shard.texts).read_text())
        spans += [tuple(span) for span in json.loads((out / shard.spans).read_text())]
    return manifest, ids, texts, spans


def test_windows_cover_each_document_and_each_vector_is_its_span_encoded(windowed, encoder):
    root, documents, _ = windowed
    manifest, ids, texts, spans = folder_rows(root / "out")
    assert manifest.identity.window == 64 and manifest.identity.stride == 48
    assert [s.documents for s in manifest.shards] == [10, 10, 4] and manifest.rows == len(ids) > 24 * 5
    for doc_id in {*ids}:
        doc = documents[int(doc_id) - 1]
        mine = [span for i, span in zip(ids, spans) if i == doc_id]
        assert mine[0][0] == 0 and mine[-1][1] == len(doc)
        assert all(b[0] < a[1] for a, b in zip(mine, mine[1:]))  # consecutive windows overlap: no gap
        pieces = [len(encoder.tokenizer.split([doc[s:e]])[0].ids) for s, e in mine]
        assert max(pieces) <= 64
    assert texts == [documents[int(i) - 1][s:e] for i, (s, e) in zip(ids, spans)]
    _, vectors = load_shards(root / "out")
    np.testing.assert_allclose(vectors, encoder.encode(texts), atol=1e-6, rtol=0)


def test_a_document_hit_is_its_best_window(windowed, encoder):
    root = windowed[0]
    _, ids, texts, spans = folder_rows(root / "out")
    searcher = Searcher(root / "out", encoder=encoder)
    row = 57  # a window in the middle of some document
    hits = searcher.search([texts[row]], k=3, group="documents")[0]
    assert hits[0].id == ids[row] and hits[0].span == spans[row] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.rank for h in hits] == [1, 2, 3] and len({h.id for h in hits}) == 3
    rows = searcher.search([texts[row]], k=10)[0]  # rows: windows of one document may follow each other
    assert rows[0].row == row and [h.score for h in rows] == sorted((h.score for h in rows), reverse=True)


def test_a_rerun_passes_over_the_finished_windowed_shards(windowed, encoder):
    root, _, settings = windowed
    before = {p.name: p.stat().st_mtime_ns for p in (root / "out").glob("part-*")}
    embed_corpus(encoder, root / "docs.txt", root / "out", settings, show_progress_bar=False)
    assert {p.name: p.stat().st_mtime_ns for p in (root / "out").glob("part-*")} == before


def test_window_refusals_are_one_line(tmp_path, tiny_checkpoint, capsys):
    corpus = write_lines(tmp_path / "c.txt", ["a short text", "another one"])
    common = ["--model", str(tiny_checkpoint), "--no-verify", "--input", str(corpus), "--output", f"{tmp_path}/out/"]
    for extra, message in (
        (["--window", "300"], "--window 300: this model reads at most 254 word pieces of text at a time"),
        (["--stride", "10"], "--stride is the step between windows: give --window too"),
        (["--window", "8", "--stride", "9"], "--stride 9: give 1 to --window (8), so windows leave no gap"),
    ):
        assert embed_main(common + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert embed_main(common) == 0  # no window: one row per text, and no window keys in the manifest
    data = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "window" not in data and "stride" not in data and "spans" not in data["shards"][0]
    capsys.readouterr()
    assert search_main([str(tmp_path / "out"), "a text", "--group", "documents"]) == 2
    assert "was embedded without --window" in capsys.readouterr().err
