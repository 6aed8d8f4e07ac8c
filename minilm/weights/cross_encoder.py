"""Finding, checking and reading a cross-encoder checkpoint (cross-encoder/ms-marco-MiniLM-L-6-v2 and kin).

    checkpoint = load_cross_encoder("path/to/ms-marco-MiniLM-L-6-v2", verify=False)
    checkpoint.model, checkpoint.tokenizer, checkpoint.config

The folder is found and its pins checked as for a sentence encoder (minilm.weights). What
sentence-transformers' CrossEncoder reads around the model, read here the same way:

- config.json: a BERT (model_type "bert") of any depth, with `BertForSequenceClassification`
  among its architectures when it names any; the number of labels is the length of `id2label`.
- the score's activation, the first found of: config_sentence_transformers.json `activation_fn`
  (sentence-transformers 5+), config.json `sentence_transformers.activation_fn` (4.x),
  config.json `sbert_ce_default_activation_function` (before 4.0); without any, sigmoid for one
  label and none (the logits) for more. ms-marco's rerankers name Identity: their scores are logits.
- the pair length: sentence_bert_config.json `max_seq_length`, else tokenizer_config.json
  `model_max_length`, capped at the model's positions (512).
- modules.json, when present, must be the one Transformer module; prompts are refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..model.classifier import ACTIVATIONS, BertForSequenceClassification
from ..model.encoder import BertConfig
from ..model.loading import short_repr
from ..text.tokenization import PairTokenizer
from .checkpoint import resolve_and_verify
from .errors import WeightsError
from .files import build_from_safetensors, checked_field, checked_length, open_tokenizer, read_json
from .sentence_config import read_bert_config, read_modules


@dataclass(frozen=True)
class CrossEncoderConfig:
    """What sentence-transformers' CrossEncoder does around the model, read from the checkpoint's files."""

    num_labels: int
    activation: str  # a key of minilm.model.classifier.ACTIVATIONS
    max_length: int  # tokens per pair, specials included


@dataclass(frozen=True)
class CrossEncoderCheckpoint:
    folder: Path
    source: str
    model: BertForSequenceClassification  # in eval mode, float32
    tokenizer: PairTokenizer
    config: CrossEncoderConfig


def load_cross_encoder(
    name_or_path: str | os.PathLike, *, verify: bool = True, download: bool = False
) -> CrossEncoderCheckpoint:
    """Find a cross-encoder by name or folder, check its pins, and load it; WeightsError says what to fix."""
    resolved = resolve_and_verify(name_or_path, verify=verify, download=download)
    folder = resolved.path
    bert = read_bert_config(folder)
    config = read_cross_encoder_config(folder, bert)
    tokenizer = open_tokenizer(folder, lambda path: PairTokenizer.from_file(path, config.max_length), bert.vocab_size)
    model = build_from_safetensors(
        folder / "model.safetensors",
        lambda: BertForSequenceClassification(bert, config.num_labels),
        bert.num_hidden_layers,
    )
    return CrossEncoderCheckpoint(folder, resolved.source, model, tokenizer, config)


def _activation_name(path: str, where: str) -> str:
    """A dotted torch activation ("torch.nn.modules.activation.Sigmoid") -> its ACTIVATIONS key, or refused."""
    name = path.rsplit(".", 1)[-1] if isinstance(path, str) else None
    if not (isinstance(path, str) and path.startswith("torch.") and name in ACTIVATIONS):
        raise WeightsError(
            f"{where}: activation {short_repr(path)} is not supported; "
            f"one of torch.nn {', '.join(ACTIVATIONS)} is (pass activation_fn= to predict for another)"
        )
    return name


def _read_activation(folder: Path, raw: dict, num_labels: int) -> str:
    """The score's activation, looked for where sentence-transformers looks, newest place first."""
    st_path = folder / "config_sentence_transformers.json"
    st_config = read_json(st_path, dict, default={})
    if st_config.get("prompts") or st_config.get("default_prompt_name"):
        raise WeightsError(f"{st_path}: cross-encoder prompts are not supported; remove them to score plain pairs")
    if st_config.get("activation_fn") is not None:
        return _activation_name(st_config["activation_fn"], str(st_path))
    nested = raw.get("sentence_transformers")
    if isinstance(nested, dict) and nested.get("activation_fn") is not None:
        return _activation_name(nested["activation_fn"], f"{folder / 'config.json'} sentence_transformers")
    if raw.get("sbert_ce_default_activation_function") is not None:
        return _activation_name(raw["sbert_ce_default_activation_function"], str(folder / "config.json"))
    return "Sigmoid" if num_labels == 1 else "Identity"


def _read_max_length(folder: Path, bert: BertConfig) -> int:
    """Tokens per pair: sentence_bert_config.json's max_seq_length, else tokenizer_config.json's
    model_max_length, else the model's positions; capped at the positions. Either length is held to the
    one rule the sentence encoder's is (minilm.weights.checked_length): 0, 3.5, NaN or Infinity are refused."""
    sbert_path, tok_path = folder / "sentence_bert_config.json", folder / "tokenizer_config.json"
    sbert = read_json(sbert_path, dict, default={})
    tok = read_json(tok_path, dict, default={})
    task = sbert.get("transformer_task", "sequence-classification")
    if task != "sequence-classification":
        raise WeightsError(
            f"{sbert_path}: transformer_task {short_repr(task)} is not supported; "
            "a cross-encoder here is sequence-classification"
        )
    if sbert.get("max_seq_length") is not None:
        length = checked_length(sbert["max_seq_length"], sbert_path, "max_seq_length")
    elif tok.get("model_max_length") is not None:
        length = checked_length(tok["model_max_length"], tok_path, "model_max_length")
    else:
        length = bert.max_position_embeddings
    return min(length, bert.max_position_embeddings)  # transformers' "no limit" is 10**30


MAX_LABELS = 1 << 16  # far above any classifier's; the header comparison then checks the classifier's shape


def read_cross_encoder_config(folder: Path, bert: BertConfig) -> CrossEncoderConfig:
    config_path = folder / "config.json"
    raw = read_json(config_path)  # read_bert_config has checked that it is an object
    architectures = raw.get("architectures") or ["BertForSequenceClassification"]
    if not isinstance(architectures, list) or "BertForSequenceClassification" not in architectures:
        raise WeightsError(
            f"{config_path}: architectures {short_repr(architectures, 200)} is not a cross-encoder "
            "(BertForSequenceClassification); load a sentence-embedding model with SentenceEncoder"
        )
    labels = raw.get("id2label")
    if isinstance(labels, dict) and labels:
        num_labels = checked_field(len(labels), config_path, "id2label", integer=True, maximum=MAX_LABELS)
    else:
        num_labels = checked_field(
            raw.get("num_labels", 2), config_path, "num_labels", integer=True, minimum=1, maximum=MAX_LABELS
        )
    # the second text of a pair has token type 1: a model with one token type would index past its table
    checked_field(bert.type_vocab_size, config_path, "type_vocab_size", integer=True, minimum=2)
    modules = read_modules(folder)
    if modules is not None and [kind for kind, _ in modules] != ["Transformer"]:
        raise WeightsError(
            f"{folder / 'modules.json'}: modules {short_repr([kind for kind, _ in modules], 200)} are not supported; "
            "a cross-encoder here is one Transformer module"
        )
    return CrossEncoderConfig(num_labels, _read_activation(folder, raw, num_labels), _read_max_length(folder, bert))
