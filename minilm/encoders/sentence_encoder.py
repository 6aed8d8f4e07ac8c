"""`SentenceEncoder`: texts in, sentence embeddings out, the same numbers as sentence-transformers.

The pipeline mirrors sentence-transformers' `Transformer -> Pooling -> Normalize` modules:
tokenize and truncate (minilm.text.tokenization), run the model (minilm.model.encoder), pool over
the attention mask and L2-normalize (minilm.model.pooling). Texts are batched longest-first, so
each batch carries little padding, and the results are put back in input order. `dtype` picks the
compute precision (minilm.model.precision): float32, the default, is the exact parity path;
bfloat16, float16 and int8 are faster where the hardware has them, and "auto" picks among them.
Finding and checking the checkpoint is minilm.weights' job (`load_checkpoint`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..model.encoder import BertModel
from ..model.int8 import SMOOTHING_ALPHA, InputAbsmax, calibrated_smoothing
from ..model.packed import PackedEncoder
from ..model.pooling import PoolingMode, mask_prompt, sentence_embedding
from ..model.precision import ComputeDtype, choose_auto, inference_model, resolve_dtype
from ..text.tokenization import AnyEncoding, SentenceTokenizer, TokenBatch, TokenizerKind
from ..weights import Checkpoint, SentenceConfig, WeightsError, load_checkpoint
from ..weights.int8_scales import load_int8_scales
from .batching import batches_with_progress, default_batching, show_bar


@dataclass
class EncodeResult:
    embeddings: np.ndarray  # (N, C) float32, in input order
    n_tokens: list[int]  # token count with [CLS]/[SEP], before truncation
    truncated: list[bool]  # n_tokens > max_seq_length


def check_text(text: str, name: str) -> str:
    """`text`, or a ValueError naming it when it holds a lone surrogate, as Python decodes bytes that are
    not UTF-8 in argv (the tokenizer would raise a TypeError deep inside instead)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"{name} is not valid Unicode (a lone surrogate at character {e.start}); decode it as UTF-8 first"
        ) from None
    return text


def check_texts(texts: Sequence[str]) -> list[str]:
    """A list of str, or TypeError naming the first item that is not one."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
        check_text(text, f"texts[{i}]")
    return list(texts)


class NonFiniteOutput(ValueError):
    """The model gave NaN or infinity for a text: damaged weights or int8 scales, or a float16 overflow.
    Raised instead of returning the vector, so that no NaN reaches a file, a response or a cosine.
    `index`: the text's position in the call; `where` names it ("text 3", or a caller's "file:line")."""

    def __init__(self, where: str, dtype: str, index: int):
        super().__init__(
            f"the model gave NaN or infinite values for {where} (dtype {dtype}): its weights or int8 scales are "
            "damaged, or half precision overflowed; restore the checkpoint or use --dtype float32"
        )
        self.where, self.dtype, self.index = where, dtype, index


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


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Unit-length rows of (N, C) vectors, in NumPy: x / max(|x|, 1e-12), as sentence-transformers'
    Normalize (and minilm.model.pooling.l2_normalize, its torch form)."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of a (N, C) with every row of b (M, C): (N, M) float32."""
    return normalized(a.astype(np.float32)) @ normalized(b.astype(np.float32)).T  # (N, M)


class SentenceEncoder:
    """A BERT encoder plus the pooling and normalization its sentence-transformers checkpoint asks for."""

    def __init__(
        self,
        model: BertModel,
        tokenizer: SentenceTokenizer,
        config: SentenceConfig,
        device: str | torch.device | None = None,
        dtype: ComputeDtype | Literal["auto"] = "float32",
        checkpoint: Checkpoint | None = None,
        int8_smoothing: dict[str, torch.Tensor] | None = None,
        fuse: bool = False,
    ):
        """dtype: "float32" (exact), "bfloat16", "float16", "int8" or "auto". A reduced precision on a
        CPU without native support falls back to float32 with a warning; `self.dtype` says what runs,
        and for "auto" `self.auto_choice` says why.
        checkpoint: what `model` and `tokenizer` were loaded from, if anything (its folder and hashes).
        int8_smoothing: the checkpoint's int8 scales (minilm.weights.int8_scales), needed by "int8".
        fuse: int8 only: compile its element-wise steps between the matmuls (minilm.model.fused; the first
            batch compiles, about 15 s, 3 s once inductor's cache has it). With "auto" it applies when auto
            picks int8, and `self.fuse_note` says when it did not; with any other dtype it is a ValueError.
        """
        if fuse and dtype not in ("int8", "auto"):
            raise ValueError(
                f'fuse=True compiles int8\'s steps between its matmuls; it needs dtype "int8" or "auto", not {dtype!r}'
            )
        self.checkpoint = checkpoint
        self.device = resolve_device(device)
        self.auto_choice = None
        if dtype == "auto":
            dtype, self.auto_choice = choose_auto(self.device, int8_smoothing is not None)
        self.dtype, self.precision_note = resolve_dtype(dtype, self.device)
        self.int8_smoothing = int8_smoothing if self.dtype == "int8" else None  # the scales in use, if any
        if self.precision_note:
            warnings.warn(self.precision_note, RuntimeWarning, stacklevel=3)
        self.model = model.to(self.device).eval()  # the plain model; its weights are cast to self.dtype
        # what encode() calls: the model, or its packed half-precision or int8 twin
        self.runner = inference_model(self.model, self.dtype, int8_smoothing, fuse_int8=fuse)
        self.fuse_note = (
            f"fuse has no effect: {self.dtype} runs here, not int8" if fuse and self.dtype != "int8" else None
        )
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
        dtype: ComputeDtype | Literal["auto"] = "float32",
        tokenizer: TokenizerKind = "fast",
        fuse: bool = False,
    ) -> SentenceEncoder:
        """Load a checkpoint by name or folder (default all-MiniLM-L6-v2), offline;
        see `minilm.weights.load_checkpoint`.

        dtype: the compute precision, "float32" (default, exact), "bfloat16", "float16", "int8" (with the
            checkpoint's calibrated scales) or "auto" (the fastest inside the quality budget here);
            see minilm.model.precision and docs/performance.md.
        tokenizer: "fast" (default), the Rust `tokenizers` library, or "python", minilm.text.wordpiece:
            the same ids, so the same embeddings, in plain Python (slower).
        fuse: with int8, its quantize, dequantize, GELU and LayerNorm steps compiled into one loop between
            the matmuls (minilm.model.fused): faster, after a compile on the first batch.
        verify: check pinned sha256 hashes (turn off for your own checkpoints).
        download: if the checkpoint is not found locally, fetch it from the hub into weights/.
        Raises WeightsError with a one-line fix when files are missing, corrupt or do not fit.
        """
        checkpoint = load_checkpoint(model, verify=verify, download=download, tokenizer=tokenizer)
        smoothing = load_int8_scales(checkpoint, verify) if dtype in ("int8", "auto") else None
        if dtype == "int8" and smoothing is None:
            raise WeightsError(
                f"{checkpoint.folder} has no int8 scales; make them with "
                f"python -m minilm.calibrate --model {checkpoint.folder} (or choose another --dtype)"
            )
        return cls(
            checkpoint.model,
            checkpoint.tokenizer,
            checkpoint.sentence_config,
            device,
            dtype,
            checkpoint,
            smoothing,
            fuse,
        )

    @property
    def folder(self) -> Path | None:
        """The checkpoint folder it was loaded from, if any."""
        return self.checkpoint.folder if self.checkpoint else None

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def max_seq_length(self) -> int:
        return self.config.max_seq_length

    @property
    def prompts(self) -> dict[str, str]:
        """The checkpoint's named prompts (config_sentence_transformers.json), e.g. {"query": "query: "}."""
        return dict(self.config.prompts)

    def resolve_prompt(self, prompt_name: str | None = None, prompt: str | None = None) -> str:
        """The text put before every input, as sentence-transformers chooses it: `prompt` itself, else
        the checkpoint's prompt called `prompt_name`, else its default prompt, else none ("")."""
        if prompt is not None and prompt_name is not None:
            raise ValueError("give prompt or prompt_name, not both")
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
            return check_text(prompt, "the prompt")
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                known = ", ".join(repr(name) for name in self.prompts) or "none"
                raise ValueError(f"prompt_name {prompt_name!r} is not one of this checkpoint's prompts ({known})")
            return self.prompts[prompt_name]
        if self.config.default_prompt_name is not None:
            return self.prompts[self.config.default_prompt_name]
        return ""

    def prompt_length(self, prompt: str) -> int:
        """How many leading positions pooling leaves out for this prompt: [CLS] and the prompt's word
        pieces when the checkpoint pools without its prompt (include_prompt false), else 0."""
        if not prompt or self.config.include_prompt:
            return 0
        encodings, _ = self.tokenizer.encode([prompt])
        return len(encodings[0].ids) - 1  # all but the closing [SEP]

    def use_packed(self) -> SentenceEncoder:
        """Run float32 through the packed encoder too (minilm.model.packed: no padding rows in the matmuls).

        It pays when batches mix lengths, as a server's batches of many clients' texts do (2x on STS-B
        sentences in random batches of 32); encode's own longest-first batches carry little padding,
        so the default keeps the plain model. The vectors stay encode's (tests/model/test_packed.py).
        Half precision and int8 are packed already. Returns self.
        """
        if self.dtype == "float32":
            self.runner = PackedEncoder(self.model).eval()
        return self

    def calibrate_int8(self, texts: list[str], alpha: float = SMOOTHING_ALPHA) -> dict[str, torch.Tensor]:
        """The SmoothQuant smoothing scales of this float32 encoder, measured on `texts`: the largest
        |activation| of every input channel of every int8 layer (minilm.model.int8), seen through the
        packed encoder, the int8 encoder's own layer layout (fused QKV). What `python -m minilm.calibrate`
        saves and `dtype="int8"` then loads."""
        if self.dtype != "float32":
            raise ValueError("calibrate a float32 encoder: the scales are measured on the exact activations")
        packed = PackedEncoder(self.model).eval()
        self.runner, float_runner = packed, self.runner
        observer = InputAbsmax(packed)
        try:
            self.encode(texts, batch_size=64)  # the progress bar shows from 1,000 texts on
        finally:
            self.runner = float_runner
            absmax = observer.close()
        return calibrated_smoothing(packed, absmax, alpha)

    # ------------------------------------------------------------------ batching

    def batching(self, batch_size: int | None = None, max_batch_tokens: int | None = None) -> tuple[int, int | None]:
        """(texts, padded tokens) per encoder call at most: what is given, the rest from this encoder's
        dtype and device (minilm.encoders.batching.default_batching). A batch_size alone keeps the token
        budget: batch size is then an upper bound, and no batch size falls off the cache cliff."""
        default_size, default_tokens = default_batching(self.dtype, self.device)
        return (
            default_size if batch_size is None else batch_size,
            default_tokens if max_batch_tokens is None else max_batch_tokens,
        )

    def _hidden_states(
        self,
        encodings: list[AnyEncoding],
        batch_size: int | None,
        max_batch_tokens: int | None,
        show_progress_bar: bool | None,
    ) -> Iterator[tuple[list[int], torch.Tensor, TokenBatch]]:
        """Run the encoder longest-first. Yields (input indices, float32 hidden states (B, T, C), the batch)."""
        batch_size, max_batch_tokens = self.batching(batch_size, max_batch_tokens)
        lengths, show = [len(e.ids) for e in encodings], show_bar(len(encodings), show_progress_bar)
        for indices in batches_with_progress(
            lengths, batch_size, max_batch_tokens, show=show, desc="Embedding", unit="text"
        ):
            batch = self.tokenizer.pad([encodings[i] for i in indices]).to(self.device)
            with torch.inference_mode():
                hidden = self.runner(batch.input_ids, batch.attention_mask, batch.token_type_ids)  # (B, T, C)
            yield indices, hidden.float(), batch  # pooling sums in float32 whatever the model ran in

    # ------------------------------------------------------------------ public API

    def encode_detailed(
        self,
        texts: Sequence[str],
        batch_size: int | None = None,
        normalize: bool | None = None,
        pooling: PoolingMode | None = None,
        show_progress_bar: bool | None = None,
        max_batch_tokens: int | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
    ) -> EncodeResult:
        """Like `encode` for a list, plus each text's token count (its prompt included) and whether it was truncated."""
        texts = check_texts(texts)
        if normalize is not None and not isinstance(normalize, bool):
            raise TypeError(f"normalize must be True, False or None, got {normalize!r}")
        prompt = self.resolve_prompt(prompt_name, prompt)
        encodings, n_tokens = self.tokenizer.encode([prompt + text for text in texts] if prompt else texts)
        embeddings = self.encode_encodings(
            encodings, batch_size, normalize, pooling, show_progress_bar, max_batch_tokens, self.prompt_length(prompt)
        )
        return EncodeResult(embeddings, n_tokens, [n > self.max_seq_length for n in n_tokens])

    def encode_encodings(
        self,
        encodings: Sequence[AnyEncoding],
        batch_size: int | None = None,
        normalize: bool | None = None,
        pooling: PoolingMode | None = None,
        show_progress_bar: bool | None = False,
        max_batch_tokens: int | None = None,
        prompt_length: int = 0,
    ) -> np.ndarray:
        """`encode` for texts already through `self.tokenizer.encode` (truncated, special tokens added, a
        prompt already before each): float32 (N, C) in input order. prompt_length: the leading positions
        pooling leaves out (`self.prompt_length(prompt)`). The server tokenizes off its event loop and
        embeds here."""
        normalize = self.config.normalize if normalize is None else normalize
        embeddings = np.zeros((len(encodings), self.dim), dtype=np.float32)
        for indices, hidden, batch in self._hidden_states(
            list(encodings), batch_size, max_batch_tokens, show_progress_bar
        ):
            mask = mask_prompt(batch.attention_mask, prompt_length) if prompt_length else batch.attention_mask
            vectors = sentence_embedding(hidden, mask, pooling or self.config.pooling, normalize)  # (B, C)
            embeddings[indices] = vectors.float().cpu().numpy()
        if not np.isfinite(embeddings).all():
            first = int(np.flatnonzero(~np.isfinite(embeddings).all(axis=1))[0])
            raise NonFiniteOutput(f"text {first}", self.dtype, first)
        return embeddings

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int | None = None,
        normalize: bool | None = None,
        pooling: PoolingMode | None = None,
        show_progress_bar: bool | None = None,
        max_batch_tokens: int | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
    ) -> np.ndarray:
        """Embed texts: a list gives float32 (N, C); a single str gives (C,).

        normalize: L2-normalize; None follows the checkpoint (modules.json has Normalize for all-MiniLM-L6-v2).
        pooling: one of minilm.model.pooling.POOLING_MODES; None follows the checkpoint's 1_Pooling/config.json.
        prompt_name, prompt: text put before each input, by its name in `self.prompts` or itself; neither
            gives the checkpoint's default prompt, if it has one (as sentence-transformers). A checkpoint
            whose pooling has include_prompt false pools without the prompt's tokens.
        show_progress_bar: None shows a bar on stderr from 1,000 texts on.
        batch_size, max_batch_tokens: at most this many texts, and this many tokens (padding included),
            per encoder call. None takes the default for this dtype and device (`batching`: on a CPU,
            a token budget measured per dtype, so short texts share big batches and long ones small).
        """
        single = isinstance(texts, str)
        result = self.encode_detailed(
            [texts] if single else texts,
            batch_size,
            normalize,
            pooling,
            show_progress_bar,
            max_batch_tokens,
            prompt_name,
            prompt,
        )
        return result.embeddings[0] if single else result.embeddings

    def encode_query(
        self, texts: str | Sequence[str], prompt_name: str | None = None, prompt: str | None = None, **kwargs
    ) -> np.ndarray:
        """`encode` for search queries: with neither prompt given, the checkpoint's "query" prompt, or none
        (never the default prompt, as in sentence-transformers)."""
        if prompt_name is None and prompt is None:
            prompt = self.prompts.get("query", "")
        return self.encode(texts, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def encode_document(
        self, texts: str | Sequence[str], prompt_name: str | None = None, prompt: str | None = None, **kwargs
    ) -> np.ndarray:
        """`encode` for the searched texts: with neither prompt given, the checkpoint's "document",
        "passage" or "corpus" prompt, the first it has, or none. sentence-transformers 6.2 stops at its
        own empty "document" prompt, so it never reaches "passage" (docs/models.md)."""
        if prompt_name is None and prompt is None:
            name = next((name for name in ("document", "passage", "corpus") if name in self.prompts), None)
            prompt = self.prompts[name] if name else ""  # never the default prompt, as in sentence-transformers
        return self.encode(texts, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def encode_tokens(
        self,
        texts: str | Sequence[str],
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
        max_batch_tokens: int | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
    ) -> list[np.ndarray]:
        """Token-level embeddings (the encoder's last hidden states, unpooled, unnormalized).

        Returns one float32 (n_i, C) array per text, n_i its token count after truncation,
        [CLS], [SEP] and any prompt included: sentence-transformers' `output_value="token_embeddings"`.
        """
        texts = check_texts([texts] if isinstance(texts, str) else texts)
        out: list[np.ndarray] = [np.empty(0)] * len(texts)
        prompt = self.resolve_prompt(prompt_name, prompt)
        encodings, _ = self.tokenizer.encode([prompt + text for text in texts] if prompt else texts)
        for indices, hidden, batch in self._hidden_states(encodings, batch_size, max_batch_tokens, show_progress_bar):
            lengths = batch.attention_mask.sum(dim=1).tolist()
            states = hidden.cpu().numpy()
            for row, i in enumerate(indices):
                out[i] = states[row, : lengths[row]].copy()
        return out

    def similarity(
        self, a: str | Sequence[str] | np.ndarray, b: str | Sequence[str] | np.ndarray
    ) -> np.ndarray | float:
        """Cosine similarity between texts or embeddings.

        (N, C) and (M, C) give (N, M); two single texts give a float.
        """
        single = isinstance(a, str) and isinstance(b, str)
        va = np.atleast_2d(self.encode(a) if not isinstance(a, np.ndarray) else a)
        vb = np.atleast_2d(self.encode(b) if not isinstance(b, np.ndarray) else b)
        sims = cosine_similarity(va, vb)  # (N, M)
        return float(sims[0, 0]) if single else sims
