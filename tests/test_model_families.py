"""Parity with sentence-transformers on the checkpoint layouts of the BERT model families people use.

This machine cannot download those checkpoints, so each test builds one at test time: a
`transformers.BertModel` randomly initialised (seeded) in the family's shape, saved with the
sentence-transformers metadata files that family ships (pooling, Normalize, max_seq_length,
prompts, default prompt, include_prompt), and the real uncased WordPiece tokenizer files. Both
sentence-transformers and minilm load the same folder; their vectors must agree to 1e-6 on STS-B
sentences and on texts of 300-600 tokens.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from minilm import SentenceEncoder

BGE_QUERY = "Represent this sentence for searching relevant passages: "
FAMILIES = {  # the metadata of each family, on a small random BERT of its layer count and length
    "bge-small-en-v1.5": dict(  # CLS pooling, 12 layers, 512 tokens, an optional query instruction
        layers=12,
        max_seq_length=512,
        pooling={"pooling_mode": "cls"},
        normalize=True,
        st_config={"prompts": {"query": BGE_QUERY}, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    ),
    "e5-small-v2": dict(  # mean pooling, "query: " and "passage: " required
        layers=12,
        max_seq_length=512,
        pooling={"pooling_mode_mean_tokens": True},
        normalize=True,
        st_config={"prompts": {"query": "query: ", "passage": "passage: "}},
    ),
    "gte-small": dict(layers=12, max_seq_length=512, pooling={"pooling_mode_mean_tokens": True}, normalize=True),
    "all-MiniLM-L12-v2": dict(
        layers=12, max_seq_length=128, pooling={"pooling_mode_mean_tokens": True}, normalize=True
    ),
    "multi-qa-MiniLM-L6-cos-v1": dict(
        layers=6, max_seq_length=512, pooling={"pooling_mode_mean_tokens": True}, normalize=True
    ),
    "paraphrase-MiniLM-L6-v2": dict(
        layers=6, max_seq_length=128, pooling={"pooling_mode_mean_tokens": True}, normalize=False
    ),
    "snowflake-arctic-embed-xs": dict(  # CLS pooling, a query prefix
        layers=6,
        max_seq_length=512,
        pooling={"pooling_mode": "cls"},
        normalize=True,
        st_config={"prompts": {"query": BGE_QUERY}, "default_prompt_name": None},
    ),
    "a default prompt": dict(  # every text gets the default prompt unless another is asked for
        layers=2,
        max_seq_length=256,
        pooling={"pooling_mode": "mean"},
        normalize=True,
        st_config={"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "passage"},
    ),
    "a default prompt, no query prompt": dict(  # encode_query and encode_document use no prompt, not the default
        layers=2,
        max_seq_length=256,
        pooling={"pooling_mode": "mean"},
        normalize=True,
        st_config={"prompts": {"passage": "passage: "}, "default_prompt_name": "passage"},
    ),
    "include_prompt false, mean": dict(  # INSTRUCTOR-style: the prompt is read but not pooled
        layers=2,
        max_seq_length=256,
        pooling={"pooling_mode": "mean", "include_prompt": False},
        normalize=True,
        st_config={"prompts": {"query": "Represent the question for retrieving documents: "}},
    ),
    "include_prompt false, cls": dict(
        layers=2,
        max_seq_length=256,
        pooling={"pooling_mode": "cls", "include_prompt": False},
        normalize=False,
        st_config={"prompts": {"query": "query: "}},
    ),
    "include_prompt false, weightedmean": dict(
        layers=2,
        max_seq_length=256,
        pooling={"pooling_mode": "weightedmean", "include_prompt": False},
        normalize=True,
        st_config={"prompts": {"query": "query: "}},
    ),
    "include_prompt false, lasttoken": dict(
        layers=2,
        max_seq_length=256,
        pooling={"pooling_mode": "lasttoken", "include_prompt": False},
        normalize=True,
        st_config={"prompts": {"query": "query: "}},
    ),
}
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def save_small_bert(model_class, folder, checkpoint_dir, layers: int, seed: int = 0, **settings):
    """A random (seeded) transformers `model_class` 32 wide, on the real vocabulary and 512 positions,
    saved to `folder` with the real uncased WordPiece tokenizer files."""
    import torch
    import transformers

    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        **settings,
    )
    torch.manual_seed(seed)
    model_class(config).save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(checkpoint_dir / name, folder / name)


def write_family(folder, checkpoint_dir, family: dict, seed: int = 0):
    """A sentence-transformers folder: a random transformers BertModel plus the family's metadata."""
    import transformers

    save_small_bert(transformers.BertModel, folder, checkpoint_dir, family["layers"], seed)
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": family["max_seq_length"], "do_lower_case": False})
    )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if family["normalize"]:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **family["pooling"]}))
    if "st_config" in family:
        (folder / "config_sentence_transformers.json").write_text(json.dumps(family["st_config"]))
    return folder


@pytest.fixture(scope="module")
def family_texts(stsb_sentences) -> list[str]:
    long_texts = [" ".join(stsb_sentences[i : i + n]) for i, n in ((0, 25), (100, 35), (200, 45))]  # 300-600 tokens
    return stsb_sentences[:200] + long_texts


def assert_same(got: np.ndarray, expected: np.ndarray) -> float:
    error = float(np.abs(got - expected).max())
    assert got.shape == expected.shape
    assert error <= 1e-6 * max(1.0, float(np.abs(expected).max())), error
    return error


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_equals_sentence_transformers(tmp_path, checkpoint_dir, family_texts, name):
    from sentence_transformers import SentenceTransformer

    family = FAMILIES[name]
    folder = write_family(tmp_path / "model", checkpoint_dir, family)
    ours = SentenceEncoder.from_pretrained(str(folder), verify=False)
    reference = SentenceTransformer(str(folder), device="cpu")
    assert ours.max_seq_length == reference.max_seq_length == family["max_seq_length"]
    # sentence-transformers adds empty "query" and "document" prompts of its own
    assert ours.prompts == {name: text for name, text in reference.prompts.items() if text or name in ours.prompts}
    errors = [assert_same(ours.encode(family_texts), reference.encode(family_texts))]  # the default prompt, if any
    errors.append(assert_same(ours.encode_query(family_texts[:50]), reference.encode_query(family_texts[:50])))
    # encode_document takes the checkpoint's "document", "passage" or "corpus" prompt, the first it has.
    # sentence-transformers 6.2 always holds an empty "document" prompt of its own, so its
    # encode_document never reaches "passage" (e5's required document prompt); compare with the named prompt.
    documents = family_texts[-53:]
    document = next((n for n in ("document", "passage", "corpus") if n in ours.prompts), None)
    expected = reference.encode(documents, prompt_name=document) if document else reference.encode_document(documents)
    errors.append(assert_same(ours.encode_document(documents), expected))
    for prompt_name in ours.prompts:
        errors.append(
            assert_same(
                ours.encode(family_texts[:40], prompt_name=prompt_name),
                reference.encode(family_texts[:40], prompt_name=prompt_name),
            )
        )
    own = "Instruct: find the same meaning. Query: "
    errors.append(
        assert_same(ours.encode(family_texts[:40], prompt=own), reference.encode(family_texts[:40], prompt=own))
    )
    print(f"{name}: at most {max(errors):.1e} off over {len(errors)} comparisons")


def test_prompts_are_checked(tmp_path, checkpoint_dir):
    folder = write_family(tmp_path / "model", checkpoint_dir, FAMILIES["e5-small-v2"] | {"layers": 1})
    encoder = SentenceEncoder.from_pretrained(str(folder), verify=False)
    with pytest.raises(
        ValueError, match=r"prompt_name 'search' is not one of this checkpoint's prompts \('query', 'passage'\)"
    ):
        encoder.encode(["a"], prompt_name="search")
    with pytest.raises(ValueError, match="give prompt or prompt_name, not both"):
        encoder.encode(["a"], prompt_name="query", prompt="query: ")
    # the prompt is text: "query: " + text, so a prompt and its by-hand concatenation agree
    np.testing.assert_array_equal(encoder.encode(["a b"], prompt_name="query"), encoder.encode(["query: a b"]))


@pytest.mark.parametrize(
    "st_config, message",
    [
        (
            {"prompts": {"query": "q: "}, "default_prompt_name": "passage"},
            r"default_prompt_name 'passage' is not among",
        ),
        ({"similarity_fn_name": "dot"}, "similarity_fn_name 'dot' is not supported; only cosine is"),
        ({"prompts": ["query: "]}, "prompts must map names to texts"),
        ({"truncate_dim": 128}, "truncate_dim 128 is not supported"),
    ],
)
def test_metadata_we_cannot_follow_is_refused_in_one_line(tmp_path, checkpoint_dir, st_config, message):
    from minilm.weights import WeightsError

    family = FAMILIES["gte-small"] | {"layers": 1, "st_config": st_config}
    folder = write_family(tmp_path / "model", checkpoint_dir, family)
    with pytest.raises(WeightsError, match=message):
        SentenceEncoder.from_pretrained(str(folder), verify=False)
