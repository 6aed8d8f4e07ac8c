"""Write a float16 copy of a sentence-transformers checkpoint folder, small enough to carry.

The GPU benchmark (benchmarks/GPU.md) runs on a machine that cannot download weights and takes at
most 64 MiB of files. all-MiniLM-L6-v2's model.safetensors is 90.9 MB in float32 and about 45 MB
in float16. Both sentence-transformers and minilm load this float16 folder (minilm copies it into
float32 parameters), so the two sides compare the same rounded weights.

    python benchmarks/convert_fp16.py                          # the stock checkpoint -> weights/all-MiniLM-L6-v2-fp16/
    python benchmarks/convert_fp16.py --source DIR --out DIR --force

The output is a complete checkpoint folder: model.safetensors with every floating-point tensor in
float16 (integer buffers such as position_ids kept as they are), plus copies of the small files
beside it (config.json, modules.json, sentence_bert_config.json, 1_Pooling/, tokenizer files, ...).
Other weight formats (pytorch_model.bin, onnx/, openvino/, ...) and hidden files are not copied.
It is written to a temporary folder beside the target and renamed into place when complete.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "weights" / "all-MiniLM-L6-v2-fp16"
WEIGHTS_FILE = "model.safetensors"

# Left behind: other copies of the weights, in formats nobody here loads.
SKIPPED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".msgpack", ".ot", ".onnx", ".safetensors")
SKIPPED_FOLDERS = ("onnx", "openvino")
FLOAT16_MAX = torch.finfo(torch.float16).max  # 65504: a larger weight would become inf


class ConversionError(Exception):
    """A user-fixable problem; main() prints it as a one-line `error:`."""


def default_source() -> Path:
    """The stock all-MiniLM-L6-v2 folder, checked against its pinned hashes."""
    sys.path.insert(0, str(REPO))
    from minilm.weights import WeightsError, resolve_checkpoint, verify_checkpoint

    try:
        resolved = resolve_checkpoint()
        verify_checkpoint(resolved)
    except WeightsError as e:
        raise ConversionError(str(e)) from None
    return resolved.path


def to_float16(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating-point tensors cast to float16; others unchanged. Refuses a value float16 cannot hold."""
    out = {}
    for name, tensor in tensors.items():
        if tensor.is_floating_point():
            largest = tensor.abs().max().item() if tensor.numel() else 0.0
            if largest > FLOAT16_MAX:
                raise ConversionError(
                    f"{name} holds {largest:g}, beyond float16's {FLOAT16_MAX:g}; "
                    "this checkpoint cannot be stored in float16"
                )
            tensor = tensor.to(torch.float16)
        out[name] = tensor.contiguous()
    return out


def small_files(source: Path) -> list[Path]:
    """Files to copy as they are, relative to `source`: everything but the weights and hidden files."""
    files = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        if relative.parts[0] in SKIPPED_FOLDERS or path.suffix in SKIPPED_SUFFIXES:
            continue
        files.append(relative)
    return files


def write_folder(source: Path, staging: Path) -> dict[str, int]:
    """Fill `staging` with the float16 checkpoint. Returns counts for the summary."""
    with safe_open(str(source / WEIGHTS_FILE), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open, not a dict)
    half = to_float16(tensors)
    save_file(
        half, str(staging / WEIGHTS_FILE), metadata={**metadata, "format": "pt"}
    )  # transformers expects format=pt
    copied = small_files(source)
    for relative in copied:
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / relative, staging / relative)
    converted = sum(t.is_floating_point() for t in tensors.values())
    return {
        "tensors": len(tensors),
        "converted": converted,
        "parameters": sum(t.numel() for t in tensors.values()),
        "copied": len(copied),
    }


def convert(source: Path, out: Path, force: bool = False) -> dict[str, int]:
    """Write the float16 copy of checkpoint folder `source` to `out`, atomically."""
    if not source.is_dir():
        raise ConversionError(f"source folder {source} does not exist")
    if not (source / WEIGHTS_FILE).is_file():
        raise ConversionError(
            f"{source / WEIGHTS_FILE} is missing; the source must be a checkpoint folder with safetensors weights"
        )
    if out.exists() and not force:
        raise ConversionError(f"{out} already exists; pass --force to replace it")
    if out.resolve() == source.resolve():
        raise ConversionError(f"--out {out} is the source folder; choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        counts = write_folder(source, staging)
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp and save_file create private (0700/0600) entries; give the usual ones
        (staging / WEIGHTS_FILE).chmod(0o666 & ~umask)
        if (
            out.exists()
        ):  # --force: move the old folder aside first, since a folder cannot be renamed over a non-empty one
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(staging, out)
            shutil.rmtree(old)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a float16 copy of a sentence-transformers checkpoint folder.")
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="checkpoint folder (default: the stock all-MiniLM-L6-v2, hash-checked)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT.relative_to(REPO)})"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    try:
        if args.out.exists() and not args.force:  # before the source is hashed: fail fast
            raise ConversionError(f"{args.out} already exists; pass --force to replace it")
        source = args.source if args.source is not None else default_source()
        counts = convert(source, args.out, args.force)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"float16: {counts['converted']} of {counts['tensors']} tensors ({counts['parameters']:,} values); "
        f"copied {counts['copied']} small files from {source}",
        file=sys.stderr,
    )
    weights = (args.out / WEIGHTS_FILE).stat().st_size
    print(
        f"{args.out}  model.safetensors {weights:,} bytes ({weights / 2**20:.1f} MiB), "
        f"folder {folder_size(args.out) / 2**20:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
