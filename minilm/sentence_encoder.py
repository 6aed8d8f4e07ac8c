"""`SentenceEncoder`: texts in, sentence embeddings out, the same numbers as sentence-transformers.

The pipeline mirrors sentence-transformers' `Transformer -> Pooling -> Normalize` modules:
tokenize and truncate (minilm.tokenization), run the encoder (minilm.encoder), pool over the
attention mask and L2-normalize (minilm.pooling). Texts are batched longest-first, so each batch
carries little padding, and the results are put back in input order. `dtype` picks the precision
(minilm.precision): float32, the default, is the exact parity path.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .encoder import BertEncoder
from .pooling import PoolingMode, l2_normalize, pool
from .precision import inference_model, resolve_dtype
from .tokenization import TOKENIZER_KINDS, AnyEncoding, SentenceTokenizer, TokenBatch, TokenizerKind
from .weights import (
    DEFAULT_CHECKPOINT,
    SentenceConfig,
    WeightsError,
    download_checkpoint,
    load_encoder,
    lookup_known,
    read_bert_config,
    read_sentence_config,
    resolve_checkpoint,
    verify_checkpoint,
)

PROGRESS_BAR_MIN_TEXTS = 1000  # auto mode shows a progress bar from this many texts on


@dataclass
class EncodeResult:
    embeddings: np.ndarray  # (N, C) float32, in input order
    n_tokens: list[int]  # token count with [CLS]/[SEP], before truncation
    truncated: list[bool]  # n_tokens > max_seq_length


def check_texts(texts: Sequence[str]) -> list[str]:
    """A list of str, or TypeError naming the first item that is not one."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate, as Python decodes bytes that are not UTF-8 in argv
            raise ValueError(f"texts[{i}] is not valid Unicode (a lone surrogate at character {e.start}); decode it as UTF-8 first") from None
    return list(texts)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` means CPU. A CUDA or MPS device that is not available is a ValueError, not a crash later."""
    try:
        device = torch.device(device or "cpu")
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(device)!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {str(device)!r} is not supported; use cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r} requested but MPS is not available; use --device cpu")
    return device


def length_sorted_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None = None) -> list[list[int]]:
    """Indices into `lengths`, longest first, cut into batches of at most batch_size texts and, when
    max_batch_tokens is set, at most that many padded tokens (count x longest length).

    A text longer than max_batch_tokens still gets a batch of its own.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_batch_tokens is not None and max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be at least 1, got {max_batch_tokens}")
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        batch = batches[-1] if batches else []
        longest = lengths[batch[0]] if batch else 0  # sorted: the first in a batch is its longest
        if not batch or len(batch) == batch_size or (max_batch_tokens is not None and (len(batch) + 1) * longest > max_batch_tokens):
            batches.append([i])
        else:
            batch.append(i)
    return batches


class SentenceEncoder:
    """A BERT encoder plus the pooling and normalization its sentence-transformers checkpoint asks for."""

    def __init__(
        self,
        model: BertEncoder,
        tokenizer: SentenceTokenizer,
        config: SentenceConfig,
        device: str | torch.device | None = None,
        folder: Path | None = None,
        dtype: str = "float32",
    ):
        """dtype: "float32" (exact), "bfloat16" or "float16". Half precision on a CPU without native
        support falls back to float32 with a warning; `self.dtype` says what runs.
        """
        self.folder = folder  # the checkpoint folder it was loaded from, if any
        self.device = resolve_device(device)
        self.dtype, self.precision_note = resolve_dtype(dtype, self.device)
        if self.precision_note:
            warnings.warn(self.precision_note, RuntimeWarning, stacklevel=3)
        self.model = model.to(self.device).eval()  # the plain encoder; its weights are cast to self.dtype
        self.runner = inference_model(self.model, self.dtype)  # what encode() calls: the model, or its packed half-precision twin
        self.tokenizer = tokenizer
        self.config = config

    @classmethod
    def from_pretrained(
        cls,
        model: str | None = None,
        *,
        device: str | torch.device | None = None,
        verify: bool = True,
        download: bool = False,
        dtype: str = "float32",
        tokenizer: TokenizerKind = "fast",
    ) -> "SentenceEncoder":
        """Load a checkpoint by name or folder (default all-MiniLM-L6-v2), offline.

        dtype: "float32" (default, exact), "bfloat16" or "float16"; see minilm.precision.
        tokenizer: "fast" (default), the Rust `tokenizers` library, or "python", minilm.wordpiece:
            the same ids, so the same embeddings, in plain Python (slower).

        verify: check pinned sha256 hashes (turn off for your own checkpoints).
        download: if the checkpoint is not found locally, fetch it from the hub into weights/.
        Raises WeightsError with a one-line fix when files are missing, corrupt or do not fit.
        """
        if tokenizer not in TOKENIZER_KINDS:
            raise ValueError(f"tokenizer={tokenizer!r}: choose one of {', '.join(TOKENIZER_KINDS)}")
        try:
            resolved = resolve_checkpoint(model)
        except WeightsError:
            known = lookup_known(model or DEFAULT_CHECKPOINT)
            if not (download and known):
                raise
            download_checkpoint(known.name)
            resolved = resolve_checkpoint(model)
        if verify:
            verify_checkpoint(resolved)
        folder = resolved.path
        sentence_config = read_sentence_config(folder, read_bert_config(folder))
        needed = ["tokenizer.json"] + (["vocab.txt"] if tokenizer == "python" else [])
        for name in needed:
            if not (folder / name).is_file():
                raise WeightsError(f"{folder / name} is missing; re-download or reinstall the checkpoint")
        try:
            text_tokenizer = SentenceTokenizer.from_file(
                folder / "tokenizer.json", sentence_config.max_seq_length, sentence_config.do_lower_case, kind=tokenizer
            )
        except Exception as e:  # the tokenizers library raises a bare Exception for unreadable files
            raise WeightsError(f"{folder / 'tokenizer.json'} could not be read ({e}); re-download or reinstall the checkpoint") from None
        encoder = load_encoder(folder)
        if (largest := text_tokenizer.largest_id()) >= encoder.config.vocab_size:
            raise WeightsError(
                f"{folder / 'tokenizer.json'} has token ids up to {largest}, but config.json's vocab_size is {encoder.config.vocab_size}; "
                "the tokenizer does not belong to these weights"
            )
        return cls(encoder, text_tokenizer, sentence_config, device, folder, dtype)

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def max_seq_length(self) -> int:
        return self.config.max_seq_length

    # ------------------------------------------------------------------ batching

    def _hidden_states(
        self, encodings: list[AnyEncoding], batch_size: int, max_batch_tokens: int | None, show_progress_bar: bool | None
    ) -> Iterator[tuple[list[int], torch.Tensor, TokenBatch]]:
        """Run the encoder longest-first. Yields (input indices, float32 hidden states (B, T, C), the batch)."""
        show = len(encodings) >= PROGRESS_BAR_MIN_TEXTS if show_progress_bar is None else show_progress_bar
        with tqdm(total=len(encodings), desc="Embedding", unit="text", disable=not show, file=sys.stderr) as bar:
            for indices in length_sorted_batches([len(e.ids) for e in encodings], batch_size, max_batch_tokens):
                batch = self.tokenizer.pad([encodings[i] for i in indices]).to(self.device)
                with torch.inference_mode():
                    hidden = self.runner(batch.input_ids, batch.attention_mask, batch.token_type_ids)  # (B, T, C)
                yield indices, hidden.float(), batch  # pooling sums in float32 whatever the model ran in
                bar.update(len(indices))

    # ------------------------------------------------------------------ public API

    def encode_detailed(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        pooling: PoolingMode | None = None,
        show_progress_bar: bool | None = None,
        max_batch_tokens: int | None = None,
    ) -> EncodeResult:
        """Like `encode` for a list, plus each text's token count and whether it was truncated."""
        texts = check_texts(texts)
        if normalize is not None and not isinstance(normalize, bool):
            raise TypeError(f"normalize must be True, False or None, got {normalize!r}")
        normalize = self.config.normalize if normalize is None else normalize
        encodings, n_tokens = self.tokenizer.encode(texts)
        embeddings = np.zeros((len(texts), self.dim), dtype=np.float32)
        for indices, hidden, batch in self._hidden_states(encodings, batch_size, max_batch_tokens, show_progress_bar):
            vectors = pool(hidden, batch.attention_mask, pooling or self.config.pooling)  # (B, C)
            if normalize:
                vectors = l2_normalize(vectors)
            embeddings[indices] = vectors.float().cpu().numpy()
        return EncodeResult(embeddings, n_tokens, [n > self.max_seq_length for n in n_tokens])

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        pooling: PoolingMode | None = None,
        show_progress_bar: bool | None = None,
        max_batch_tokens: int | None = None,
    ) -> np.ndarray:
        """Embed texts: a list gives float32 (N, C); a single str gives (C,).

        normalize: L2-normalize; None follows the checkpoint (modules.json has Normalize for all-MiniLM-L6-v2).
        pooling: "mean", "cls" or "max"; None follows the checkpoint's 1_Pooling/config.json.
        show_progress_bar: None shows a bar on stderr from 1,000 texts on.
        max_batch_tokens: also cap each batch at this many tokens, padding included (batch_size still
            caps the count). Short texts then share bigger batches and long ones smaller ones.
        """
        single = isinstance(texts, str)
        result = self.encode_detailed([texts] if single else texts, batch_size, normalize, pooling, show_progress_bar, max_batch_tokens)
        return result.embeddings[0] if single else result.embeddings

    def encode_tokens(
        self, texts: str | Sequence[str], batch_size: int = 32, show_progress_bar: bool | None = None, max_batch_tokens: int | None = None
    ) -> list[np.ndarray]:
        """Token-level embeddings (the encoder's last hidden states, unpooled, unnormalized).

        Returns one float32 (n_i, C) array per text, n_i its token count after truncation,
        [CLS] and [SEP] included: sentence-transformers' `output_value="token_embeddings"`.
        """
        texts = check_texts([texts] if isinstance(texts, str) else texts)
        out: list[np.ndarray] = [np.empty(0)] * len(texts)
        encodings, _ = self.tokenizer.encode(texts)
        for indices, hidden, batch in self._hidden_states(encodings, batch_size, max_batch_tokens, show_progress_bar):
            lengths = batch.attention_mask.sum(dim=1).tolist()
            states = hidden.cpu().numpy()
            for row, i in enumerate(indices):
                out[i] = states[row, : lengths[row]].copy()
        return out

    def similarity(self, a: str | Sequence[str] | np.ndarray, b: str | Sequence[str] | np.ndarray) -> np.ndarray | float:
        """Cosine similarity between texts or embeddings. (N, C) and (M, C) give (N, M); two single texts give a float."""
        single = isinstance(a, str) and isinstance(b, str)
        va = np.atleast_2d(self.encode(a) if not isinstance(a, np.ndarray) else a).astype(np.float32)
        vb = np.atleast_2d(self.encode(b) if not isinstance(b, np.ndarray) else b).astype(np.float32)
        va = va / np.maximum(np.linalg.norm(va, axis=1, keepdims=True), 1e-12)
        vb = vb / np.maximum(np.linalg.norm(vb, axis=1, keepdims=True), 1e-12)
        sims = va @ vb.T  # (N, M)
        return float(sims[0, 0]) if single else sims
