"""Text given on the command line that is not UTF-8, and inputs with nothing to read, as one line each.

Python hands argv bytes that are not UTF-8 in as lone surrogates ("\\udcff" for the byte 0xff); the
tokenizer meets them as a TypeError deep inside. A `--prompt $'query\\xff: '` gave a traceback and
status 1 from minilm.embed (and a manifest.json left behind in shard mode), and a server that started
healthy and answered every embedding with a 500; a rerank query was called "texts[0]".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from minilm.encoders.sentence_encoder import check_texts

from faultkit import corpus_file, drive, error_line, shard_args

BAD_PROMPT = "query\udcff: "  # what Python makes of the bytes b"query\xff: " in argv
WHERE = "is not valid UTF-8 (byte 0xff at character 6); pass UTF-8 text"


@pytest.mark.parametrize("module", ["minilm.embed", "minilm.serve"])
def test_a_prompt_that_is_not_utf8_is_one_line_before_anything_runs(tmp_path: Path, tiny_checkpoint, module: str):
    proc = drive(module=module, args=["--model", str(tiny_checkpoint), "--no-verify", "--prompt", BAD_PROMPT, "A."])
    error_line(proc, f"argument --prompt: {WHERE}")


def test_a_prompt_that_is_not_utf8_leaves_no_shard_folder(tmp_path: Path, tiny_checkpoint):
    corpus = corpus_file(tmp_path, 20)
    out = tmp_path / "out"
    error_line(drive(args=shard_args(tiny_checkpoint, corpus, out, "--prompt", BAD_PROMPT)), "argument --prompt")
    assert not out.exists()


def test_the_library_names_a_bad_prompt_and_a_bad_query(tiny_encoder):
    with pytest.raises(ValueError, match=r"^the prompt is not valid Unicode \(a lone surrogate at character 5\)"):
        tiny_encoder.encode(["A sentence."], prompt=BAD_PROMPT)
    with pytest.raises(ValueError, match=r"^texts\[1\] is not valid Unicode"):
        check_texts(["fine", "bad \udcff"])


def test_a_rerank_query_that_is_not_utf8_is_named_as_the_query(tmp_path: Path):
    documents = tmp_path / "docs.txt"
    documents.write_text("A document.\n", encoding="utf-8")
    proc = drive(module="minilm.rerank", args=[BAD_PROMPT, "--input", str(documents)])
    error_line(proc, f"argument query: {WHERE}")


@pytest.mark.parametrize("module, args", [("heads.predict", []), ("minilm.embed", ["--format", "jsonl"])])
def test_an_empty_input_file_says_it_holds_no_texts(tmp_path: Path, module: str, args: list[str]):
    """heads.predict on an empty file said "holds no texts to embed": it embeds nothing, it labels."""
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    line = error_line(drive(module=module, args=["--input", str(empty), *args]), f"{empty} holds no texts")
    assert "embed" not in line
