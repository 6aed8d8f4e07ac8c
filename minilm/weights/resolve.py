"""Where a checkpoint name is found (`resolve_checkpoint`, in the order of minilm.weights' docstring), the
local weight store, and the files minilm ships (`shipped_path`)."""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import WeightsError
from .files import pickle_refusal
from .known import DEFAULT_CHECKPOINT, PICKLE_SUFFIXES, KnownCheckpoint, lookup_known


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
                raise WeightsError(pickle_refusal(path))
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
