"""Fetching a known checkpoint from the hub (the only network use), verified before it is moved into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .errors import WeightsError
from .known import CHECKPOINT_FILES, KNOWN_CHECKPOINTS, lookup_known
from .resolve import ResolvedCheckpoint, local_weights_dir
from .verify import verify_checkpoint


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
