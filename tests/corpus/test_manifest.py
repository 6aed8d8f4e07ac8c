"""minilm.corpus.manifest: the typed manifest reads what the writer wrote, field for field, reads the
manifests written before `prompt` and `int8_scales_sha256` existed, and names each wrong field."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from minilm.base.textio import InputError
from minilm.corpus import CorpusSettings, Manifest, embed_corpus
from minilm.corpus.shards import run_identity
from tests.conftest import real_lines


def corpus_lines() -> list[str]:
    """50 real texts as .jsonl lines, two of them bad."""
    lines = [json.dumps({"text": t}) for t in real_lines(50)]
    lines[3], lines[7] = "not json", '{"title": "no text"}'
    return lines


@pytest.fixture(scope="module")
def written(tmp_path_factory, tiny_encoder) -> tuple[Path, dict]:
    """A real run of 50 texts into shards of 20, with two bad lines skipped: the folder and its manifest's JSON."""
    folder = tmp_path_factory.mktemp("manifest")
    corpus = folder / "corpus.jsonl"
    corpus.write_text("\n".join(corpus_lines()) + "\n")
    embed_corpus(tiny_encoder, corpus, folder / "out", CorpusSettings(shard_rows=20, skip_bad_lines=True))
    return folder / "out", json.loads((folder / "out" / "manifest.json").read_text())


def test_a_written_manifest_reads_back_and_writes_the_same_json(written, tiny_encoder):
    out, data = written
    manifest = Manifest.read(out / "manifest.json")
    assert manifest.to_json() == data
    assert [shard.rows for shard in manifest.shards] == [20, 20, 8] and manifest.rows == data["rows"] == 48
    assert manifest.complete and manifest.dim == tiny_encoder.dim == 32 and manifest.precision == "float32"
    assert manifest.skipped.count == 2
    assert manifest.skipped.examples[0].endswith(
        ':4: invalid JSON (Expecting value); each line must be an object like {"text": "..."}'
    )
    assert manifest.shards[1].file == "part-00001.npy" and manifest.shards[1].input["start"] > 0
    # each shard keeps its rows' texts, listed and hashed like its ids: what a search hit shows
    texts = [t for shard in manifest.shards for t in json.loads((out / shard.texts).read_text())]
    good = [json.loads(line)["text"] for line in corpus_lines() if line.startswith("{") and '"text"' in line]
    assert texts == good and manifest.shards[2].files() == [
        f"part-00002.{e}" for e in ("npy", "ids.json", "texts.json")
    ]


def test_the_identity_is_what_run_identity_computes_and_a_change_is_named(written, tiny_encoder):
    out, data = written
    manifest = Manifest.read(out / "manifest.json")
    corpus = Path(data["input"]["path"])
    identity = run_identity(tiny_encoder, corpus, CorpusSettings(shard_rows=20, skip_bad_lines=True))
    assert identity.differences(manifest.identity) == []
    other = run_identity(tiny_encoder, corpus, CorpusSettings(shard_rows=10, precision="int8", skip_bad_lines=True))
    assert other.differences(manifest.identity) == ["precision", "dtype", "shard_rows"]


def test_a_manifest_from_before_prompts_and_int8_scales_reads_as_none(tmp_path: Path, written):
    _, data = written
    old = {key: value for key, value in data.items() if key not in ("prompt", "skipped", "repeated_ids")}
    old["shards"] = [{k: v for k, v in s.items() if not k.startswith("texts")} for s in data["shards"]]
    assert "int8_scales_sha256" not in old  # written only for int8 compute
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    manifest = Manifest.read(tmp_path / "manifest.json")
    assert manifest.identity.prompt is None and manifest.identity.int8_scales_sha256 is None
    assert manifest.skipped.count == 0 and manifest.identity == replace(manifest.identity, prompt=None)
    assert [shard.texts for shard in manifest.shards] == [None] * 3  # written before texts were kept


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda m: m["input"].pop("sha256"), "input.sha256 is not a str"),
        (lambda m: m.update(prompt=3), "prompt is not a str or null"),
        (lambda m: m.update(dim="384"), "dim is not a int"),
        (lambda m: m.update(normalized=1), "normalized is not a bool"),
        (lambda m: m["skipped"].update(count=True), "skipped.count is not a int"),
        (lambda m: m["shards"][2].update(longest="7"), "shards[2].longest is not a int or null"),
        (lambda m: m["shards"][0].update(file="part-00007.npy"), "shards[0] names part-00007.npy, not part-00000.npy"),
        (lambda m: m.update(rows=47), "rows is 47, but the shards hold 48"),
        (lambda m: m["shards"][1].pop("texts_sha256"), "shards[1] has one of texts and texts_sha256 without the other"),
    ],
)
def test_each_wrong_field_is_named(tmp_path: Path, written, edit, named: str):
    data = json.loads(json.dumps(written[1]))
    edit(data)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(InputError) as caught:
        Manifest.read(tmp_path / "manifest.json")
    assert str(caught.value) == f"{tmp_path / 'manifest.json'} is damaged ({named}); pass --force to start over"
