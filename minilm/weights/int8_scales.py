"""The int8 smoothing scales of a checkpoint: where they live, and the checks before they are used.

`python -m minilm.calibrate` measures them on calibration text and writes one small safetensors
file: one (K,) float32 vector per int8 Linear layer, keyed by the checkpoint name of the layer's
input (see minilm.model.int8.linear_quantized_inputs). Its metadata holds the sha256 of the
model.safetensors it was calibrated on, so scales are never applied to other weights.

Where the scales of a checkpoint are looked for, first hit wins:
1. `int8_scales.safetensors` inside the checkpoint folder (what `minilm.calibrate --model DIR` writes);
2. for a known checkpoint, `int8/<name>.safetensors` in `$MINILM_WEIGHTS_DIR` when that holds it (your
   own: checked like a checkpoint's own file, not against the pin), else the file shipped with minilm
   (`weights/int8/`, package data in a wheel), pinned by sha256 in `INT8_SCALE_PINS`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..base.textio import atomic_path
from ..model.int8 import check_smoothing, quantized_input_widths
from .checkpoint import Checkpoint
from .errors import WeightsError
from .files import read_safetensors
from .known import KNOWN_CHECKPOINTS, PinnedFile
from .resolve import from_override, shipped_origin, shipped_path
from .verify import pin_problem

FILE_NAME = "int8_scales.safetensors"

# the scales minilm ships, per known checkpoint (written by python -m minilm.calibrate on STS-B dev)
INT8_SCALE_PINS = {
    "all-MiniLM-L6-v2": PinnedFile("0b3392b5512db5ef7748424d2e04e3a78293538000bbb24183239feb3b6a7559", 67_048),
}


def shipped_scales_path(name: str) -> Path:
    return shipped_path("int8", f"{name}.safetensors")


def find_int8_scales(checkpoint: Checkpoint) -> tuple[Path, PinnedFile | None] | None:
    """(the scales file for this checkpoint, its pin if it is a shipped one), or None when there is none."""
    own = checkpoint.folder / FILE_NAME
    if own.is_file():
        return own, None
    for known in KNOWN_CHECKPOINTS.values():
        if known.pins["model.safetensors"].sha256 == checkpoint.sha256 and known.name in INT8_SCALE_PINS:
            path = shipped_scales_path(known.name)
            if path.is_file():
                return path, None if from_override(path) else INT8_SCALE_PINS[known.name]
    return None


def load_int8_scales(checkpoint: Checkpoint, verify: bool = True) -> dict[str, torch.Tensor] | None:
    """The checkpoint's smoothing scales, checked; None when it has none.

    Raises WeightsError when the file is damaged, differs from its pin, was calibrated on other weights,
    or holds a vector int8 cannot use: a wrong width, or a value that is not finite or outside
    minilm.model.int8.SMOOTHING_RANGE (a zero scale gave NaN vectors with exit 0; pins do not cover a
    checkpoint's own file).
    """
    found = find_int8_scales(checkpoint)
    if found is None:
        return None
    path, pin = found
    if verify and pin is not None and (problem := pin_problem(path, pin)):
        raise WeightsError(f"{problem}; the shipped int8 scales are corrupt or changed: {shipped_origin(path)}")
    scales = read_safetensors(path)  # WeightsError when it is truncated or not safetensors
    with safe_open(str(path), framework="pt") as f:
        calibrated_on = (f.metadata() or {}).get("model_sha256")
    if calibrated_on != checkpoint.sha256:
        raise WeightsError(
            f"{path} was calibrated for model.safetensors with sha256 {calibrated_on}, "
            f"but this checkpoint's is {checkpoint.sha256}; "
            f"recalibrate: python -m minilm.calibrate --model {checkpoint.folder}"
        )
    widths = quantized_input_widths(checkpoint.model)
    for name, width in widths.items():
        if name not in scales:
            raise WeightsError(f"{path}: scales {name!r} are missing; rerun python -m minilm.calibrate")
        try:
            check_smoothing(scales[name], width, f"{path}: scales {name!r}")
        except ValueError as e:  # a wrong shape, or a value int8 would turn into NaN vectors (0, NaN, 1e-40, ...)
            raise WeightsError(f"{e}; rerun python -m minilm.calibrate --model {checkpoint.folder}") from None
    return {name: scales[name] for name in widths}


def smoothing_sha256(scales: dict[str, torch.Tensor]) -> str:
    """sha256 of the scales' names and float32 values: what a shard folder written in int8 records."""
    digest = hashlib.sha256()
    for name in sorted(scales):
        digest.update(name.encode())
        digest.update(scales[name].float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_int8_scales(path: Path, scales: dict[str, torch.Tensor], metadata: dict[str, str], force: bool) -> None:
    """Write the scales atomically (a temporary file, then a rename); an existing file needs force."""
    if path.exists() and not force:
        raise WeightsError(f"{path} exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # as public as the weights, and never half written
        save_file({name: t.float().contiguous() for name, t in sorted(scales.items())}, str(tmp), metadata=metadata)
