"""Reading a checkpoint's files as hostile input: JSON metadata (bounded, typed, every number checked),
paths that stay inside the folder, and safetensors (never pickle; finite; shapes read from the header
before anything is built)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from ..base.numbers import NumberError, checked_number
from ..model.loading import StateMismatch, check_fits, load_state_strict, short_repr
from ..text.tokenization import PairTokenizer, SentenceTokenizer
from ..text.wordpiece import UnsupportedTokenizer
from .errors import WeightsError
from .known import PICKLE_SUFFIXES

Module = TypeVar("Module", bound=torch.nn.Module)
Tokenizer = TypeVar("Tokenizer", SentenceTokenizer, PairTokenizer)

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


def pickle_refusal(path: Path) -> str:
    return (
        f"{path}: pickle checkpoints (.bin/.pt) are refused because unpickling can run arbitrary code; "
        "convert it to model.safetensors (safetensors.torch.save_file) or use the safetensors files from the hub"
    )


def missing_safetensors(folder: Path) -> str:
    pickles = [p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES] if folder.is_dir() else []
    if pickles:
        return pickle_refusal(pickles[0])
    return f"{folder / 'model.safetensors'} is missing; reinstall or re-download the checkpoint"


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, each checked finite (check_finite); WeightsError names what is wrong."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise WeightsError(
            missing_safetensors(path.parent) if path.name == "model.safetensors" else f"{path} is missing"
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
        raise WeightsError(missing_safetensors(path.parent))
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


def build_from_safetensors(path: Path, build: Callable[[], Module], num_hidden_layers: int) -> Module:
    """The model `build` makes, filled from `path`, in eval mode: the header is checked first (check_header),
    so a config that does not fit the weights builds and allocates nothing."""
    check_header(path, build, num_hidden_layers)
    model = build()
    fill_from_safetensors(model, path)
    return model.eval()


def open_tokenizer(
    folder: Path, read: Callable[[Path], Tokenizer], vocab_size: int, needs: tuple[str, ...] = ()
) -> Tokenizer:
    """`read(folder / "tokenizer.json")`, with every way it fails one WeightsError, and checked against the model:
    a token id at or past config.json's vocab_size means the tokenizer belongs to other weights.

    needs: other files the reader opens (vocab.txt for the Python tokenizer), checked to be there first.
    """
    path = folder / "tokenizer.json"
    for name in ("tokenizer.json", *needs):
        if not (folder / name).is_file():  # a FIFO there would block the tokenizers library for ever
            raise WeightsError(
                f"{folder / name} is missing or not a regular file; re-download or reinstall the checkpoint"
            )
    try:
        tokenizer = read(path)
    except UnsupportedTokenizer as e:  # BPE, Unigram, ...: not BERT's WordPiece
        raise WeightsError(str(e)) from None
    except Exception as e:  # the tokenizers library raises a bare Exception for unreadable files
        raise WeightsError(f"{path} could not be read ({e}); re-download or reinstall the checkpoint") from None
    if (largest := tokenizer.largest_id()) >= vocab_size:
        raise WeightsError(
            f"{path} has token ids up to {largest}, but config.json's vocab_size is {vocab_size}; "
            "the tokenizer does not belong to these weights"
        )
    return tokenizer
