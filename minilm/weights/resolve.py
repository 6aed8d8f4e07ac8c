"""Where a checkpoint name is found (`resolve_checkpoint`, in the order of minilm.weights' docstring), the
local weight store, and the files minilm ships (`shipped_path`)."""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import WeightsError
from .files import pickle_refusal
from .known import DEFAULT_CHECKPOINT, PICKLE_SUFFIXES, KnownCheckpoint, lookup_known

OVERRIDE = "MINILM_WEIGHTS_DIR"


def weights_dir_override(*, must_exist: bool = True) -> Path | None:
    """`$MINILM_WEIGHTS_DIR` with `~` expanded, or None when it is unset or empty.

    must_exist: a value that is not an existing folder (a typo, a file) is a WeightsError naming it, never
    silently passed over; download (must_exist=False) creates the folder.
    """
    value = os.environ.get(OVERRIDE)
    if not value:
        return None
    path = Path(value).expanduser()
    if must_exist and not readable(path, is_dir=True):
        problem = "is a file, not a folder" if readable(path) else "does not exist"
        raise WeightsError(
            f"{OVERRIDE}={value} {problem}; point it at a folder of weights "
            f"(python -m minilm.weights download fills it) or unset it"
        )
    return path


def checkout_weights_dir(checkout: Path | None = None) -> Path | None:
    """`weights/` of the minilm source checkout this module runs from (or `checkout`); None for an installed copy."""
    checkout = checkout or Path(__file__).resolve().parents[2]
    pyproject = checkout / "pyproject.toml"
    try:  # another project's pyproject.toml and weights/ beside a `pip install --target` folder are not ours
        ours = pyproject.is_file() and re.search(r'(?m)^name\s*=\s*"minilm"\s*$', pyproject.read_text("utf-8"))
    except (OSError, UnicodeDecodeError):
        ours = False
    return checkout / "weights" if ours and (checkout / "weights").is_dir() else None


def local_weights_dir(*, must_exist: bool = True) -> Path:
    """The local weight store: `$MINILM_WEIGHTS_DIR` when set (see weights_dir_override); else `weights/` of the
    source checkout this runs from; else, for an installed copy, `$XDG_CACHE_HOME/minilm/weights`
    (~/.cache/minilm/weights; a relative XDG_CACHE_HOME is ignored, as the XDG spec says)."""
    override = weights_dir_override(must_exist=must_exist)
    if override is not None:
        return override
    if (checkout := checkout_weights_dir()) is not None:
        return checkout
    cache = os.environ.get("XDG_CACHE_HOME", "")
    return Path(cache if os.path.isabs(cache) else Path.home() / ".cache", "minilm", "weights")


def readable(path: Path, *, is_dir: bool = False) -> bool:
    """Whether `path` is a file (or, with is_dir, a folder); a permission error on the way is a WeightsError
    naming it, not a "no" (which would fall back to another file) and not a traceback."""
    try:
        return path.is_dir() if is_dir else path.is_file()
    except PermissionError:
        raise WeightsError(f"cannot read {path}: permission denied; fix its permissions") from None


def shipped_path(*parts: str, is_dir: bool = False) -> Path:
    """A file (or, with is_dir, a folder) minilm ships: the task heads ("heads", is_dir=True) or a checkpoint's
    int8 scales ("int8", NAME).

    `$MINILM_WEIGHTS_DIR/<parts>` when that is set and holds it, else the package's own data,
    minilm/shipped/<parts> (found through importlib.resources: links to weights/ in a checkout, copies
    in an installed wheel). Something of the other kind there (a folder where a file belongs) is a
    WeightsError, not a silent fall back to the package's copy.
    """
    override = weights_dir_override()
    if override is not None:
        path = Path(override, *parts)
        if readable(path, is_dir=is_dir):
            return path
        if path.exists():
            kind = "folder" if is_dir else "file"
            raise WeightsError(f"{path} is not a {kind}; fix or remove it in {OVERRIDE}={os.environ[OVERRIDE]}")
    return package_data(*parts)


def package_data(*parts: str) -> Path:
    """minilm/shipped/<parts>: the package's own copy, whatever $MINILM_WEIGHTS_DIR holds."""
    return Path(str(importlib.resources.files("minilm").joinpath("shipped", *parts)))


def from_override(path: Path) -> bool:
    """Whether `path` lies in $MINILM_WEIGHTS_DIR (the user's copy), not in minilm's own files."""
    override = os.environ.get(OVERRIDE)
    return bool(override) and Path(override).expanduser() in path.parents


def shipped_origin(path: Path) -> str:
    """Where a shipped file came from and how to restore it, for messages: the override, the checkout or the wheel."""
    if from_override(path):
        return f"it comes from {OVERRIDE}={os.environ[OVERRIDE]}: replace it there, or remove it to use minilm's own"
    if checkout_weights_dir() is not None:
        return "restore it: git checkout weights/"
    return "reinstall minilm (pip install --force-reinstall minilm)"


@dataclass(frozen=True)
class ResolvedCheckpoint:
    path: Path  # the checkpoint folder
    source: str  # where it was found, for messages and `list`
    known: KnownCheckpoint | None  # None for an explicit path: it is identified by content when verified


def _has_weights(folder: Path) -> bool:
    if not readable(folder, is_dir=True):
        return False
    try:
        return readable(folder / "model.safetensors") or any(folder.glob("*.bin")) or any(folder.glob("*.pt"))
    except PermissionError:
        raise WeightsError(f"cannot read {folder}: permission denied; fix its permissions") from None


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
        return ResolvedCheckpoint(folder, f"local weights {folder.parent}", known)
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
