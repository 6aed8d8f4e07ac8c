"""A shard folder's manifest.json, typed: what the run is (`RunIdentity`), what it has written (`Shard`s),
and what it met on the way (skipped lines, repeated ids).

    {"format": "minilm-shards/2", "model_sha256": ..., "dim": 384, "precision": "float32", ...   the identity
     "ranges": null, "complete": true, "rows": 1200,
     "shards": [{"file": "part-00000.npy", "ids": "part-00000.ids.json", "rows": 500, ...}, ...],
     "skipped": {"count": 0, "examples": []}, "repeated_ids": {"count": 0, "examples": []}}

`Manifest.read` checks a file field by field, so a damaged or hand-edited manifest is one InputError,
never a KeyError later; `Manifest.to_json` writes the same layout back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..base.textio import InputError

MANIFEST = "manifest.json"
FORMAT = "minilm-shards/2"


def shard_name(index: int) -> str:
    return f"part-{index:05d}"


@dataclass(frozen=True)
class RunIdentity:
    """Everything that shapes the rows: a rerun continues only a run whose identity is equal, field by field."""

    format: str
    model_sha256: Optional[str]  # noqa: UP045  (read at run time, so no `str | None` on Python 3.9)
    model_files: Optional[dict]  # noqa: UP045  file name -> sha256 of every checkpoint file
    dim: int
    precision: str  # how the shards store the vectors (minilm.corpus.quantize)
    dtype: str  # the NumPy dtype of the stored vectors
    compute_dtype: str  # the encoder's float32, bfloat16, int8, ...
    normalized: bool
    pooling: str
    max_seq_length: int
    input: dict  # path, size and sha256 of the whole input file
    shard_rows: int
    text_field: Optional[str]  # noqa: UP045  None for .txt input, which has no fields
    id_field: Optional[str]  # noqa: UP045  None: ids are line numbers
    skip_bad_lines: bool
    prompt: Optional[str] = None  # noqa: UP045  None where there is none, as in manifests written before prompts
    int8_scales_sha256: Optional[str] = None  # noqa: UP045  int8 compute only: the calibrated scales
    window: Optional[int] = None  # noqa: UP045  --window: word pieces per row of a long text; None: one row a text
    stride: Optional[int] = None  # noqa: UP045  --stride: word pieces between window starts

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("int8_scales_sha256", "window", "stride"):  # absent when unused, as before they existed
            if data[key] is None:
                del data[key]
        return data

    def differences(self, other: RunIdentity) -> list[str]:
        """The names of the fields where `other` differs from this identity."""
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


@dataclass(frozen=True)
class Shard:
    """One finished shard: its two files with their sizes and hashes, and the input bytes it was read from."""

    file: str  # part-00000.npy: (rows, dim) in the stored precision
    ids: str  # part-00000.ids.json: the ids of those rows, in order
    rows: int
    bytes: int  # of the .npy
    sha256: str  # of the .npy
    ids_sha256: str
    input: dict  # {"start", "end", "sha256"}: the byte range of the input it was read from
    truncated: int = 0  # texts longer than max_seq_length
    longest: int = 0  # the longest text, in tokens
    texts: Optional[str] = None  # noqa: UP045  part-00000.texts.json: the rows' texts; None in folders written before
    texts_sha256: Optional[str] = None  # noqa: UP045
    spans: Optional[str] = None  # noqa: UP045  part-00000.spans.json with --window: each row's [start, end] in its text
    spans_sha256: Optional[str] = None  # noqa: UP045
    documents: Optional[int] = None  # noqa: UP045  with --window: the input records its rows are windows of

    @property
    def records(self) -> int:
        """How many input records this shard was read from (its rows, unless they are windows)."""
        return self.rows if self.documents is None else self.documents

    def to_json(self) -> dict[str, Any]:
        """The entry as written: the window fields only in a run with --window."""
        data = asdict(self)
        return {k: v for k, v in data.items() if v is not None or k not in ("spans", "spans_sha256", "documents")}

    def files(self) -> list[str]:
        """The files this shard lists: its vectors, its ids and (when kept) its texts and spans."""
        return [self.file, self.ids, *(name for name in (self.texts, self.spans) if name)]


@dataclass
class Counted:
    """Things counted over a run (skipped lines, repeated ids): all counted, the first few quoted."""

    count: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class Manifest:
    identity: RunIdentity
    shards: list[Shard] = field(default_factory=list)
    ranges: Optional[list] = None  # noqa: UP045  int8/uint8: per-dimension [min, max], from the first shard
    complete: bool = False
    skipped: Counted = field(default_factory=Counted)
    repeated_ids: Counted = field(default_factory=Counted)
    model: Optional[str] = None  # noqa: UP045  the checkpoint folder it was embedded with (what search loads); not identity
    stopped_by: Optional[str] = None  # noqa: UP045  SIGINT or SIGTERM when a signal stopped this run; not written

    @property
    def rows(self) -> int:
        return sum(shard.rows for shard in self.shards)

    @property
    def dim(self) -> int:
        return self.identity.dim

    @property
    def precision(self) -> str:
        return self.identity.precision

    def ranges_array(self) -> np.ndarray | None:
        return None if self.ranges is None else np.array(self.ranges, dtype=np.float32)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.identity.to_json(),
            "ranges": self.ranges,
            "complete": self.complete,
            "rows": self.rows,
            "shards": [shard.to_json() for shard in self.shards],
            "skipped": asdict(self.skipped),
            "repeated_ids": asdict(self.repeated_ids),
            "model": self.model,
        }

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """The manifest at `path`, checked field by field: a damaged or hand-edited one is an InputError."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{path} cannot be read ({e}); pass --force to start over") from None
        if not isinstance(data, dict) or not isinstance(data.get("shards"), list):
            raise InputError(f"{path} is not a minilm shard manifest (no list of shards); pass --force to start over")
        if data.get("format") != FORMAT:
            raise InputError(f"{path} is of format {data.get('format')!r}, not {FORMAT}; pass --force to start over")
        if problems := _problems(data):
            raise InputError(f"{path} is damaged ({'; '.join(problems[:3])}); pass --force to start over")
        return cls(
            identity=RunIdentity(**{f.name: data.get(f.name) for f in fields(RunIdentity)}),
            shards=[Shard(**{f.name: shard.get(f.name, f.default) for f in fields(Shard)}) for shard in data["shards"]],
            ranges=data.get("ranges"),
            complete=data["complete"],
            skipped=Counted(**data.get("skipped") or {}),
            repeated_ids=Counted(**data.get("repeated_ids") or {}),
            model=data.get("model"),
        )


# The type of every field a manifest must have; a None in the types allows null.
_REQUIRED = {
    "complete": bool,
    "rows": int,
    "dim": int,
    "precision": str,
    "dtype": str,
    "compute_dtype": str,
    "normalized": bool,
    "pooling": str,
    "max_seq_length": int,
    "input": dict,
    "shard_rows": int,
    "skip_bad_lines": bool,
}
_OPTIONAL = {  # may be null or absent
    "model_sha256": str,
    "model_files": dict,
    "text_field": str,
    "id_field": str,
    "prompt": str,
    "int8_scales_sha256": str,
    "window": int,
    "stride": int,
    "ranges": list,
    "skipped": dict,
    "repeated_ids": dict,
    "model": str,
}
_SHARD_REQUIRED = {"file": str, "ids": str, "rows": int, "bytes": int, "sha256": str, "ids_sha256": str, "input": dict}
_SHARD_OPTIONAL = {
    "truncated": int,
    "longest": int,
    "texts": str,
    "texts_sha256": str,
    "spans": str,
    "spans_sha256": str,
    "documents": int,
}
_COUNTED = {"count": int, "examples": list}


def _problems(data: dict[str, Any]) -> list[str]:
    problems = _wrong_fields("", data, _REQUIRED, _OPTIONAL)
    for key in ("skipped", "repeated_ids"):
        if isinstance(data.get(key), dict):
            problems += _wrong_fields(f"{key}.", data[key], _COUNTED, {})
    for i, shard in enumerate(data["shards"]):
        if not isinstance(shard, dict):
            problems.append(f"shards[{i}] is not an object")
            continue
        problems += _wrong_fields(f"shards[{i}].", shard, _SHARD_REQUIRED, _SHARD_OPTIONAL)
        if shard.get("file") != f"{shard_name(i)}.npy" or shard.get("ids") != f"{shard_name(i)}.ids.json":
            problems.append(f"shards[{i}] names {shard.get('file')}, not {shard_name(i)}.npy")
        for kind in ("texts", "spans"):
            if shard.get(kind) not in (None, f"{shard_name(i)}.{kind}.json"):
                problems.append(f"shards[{i}] names {kind} {shard.get(kind)!r}, not {shard_name(i)}.{kind}.json")
            elif (shard.get(kind) is None) != (shard.get(f"{kind}_sha256") is None):
                problems.append(f"shards[{i}] has one of {kind} and {kind}_sha256 without the other")
        if (shard.get("spans") is None) != (data.get("window") is None):
            problems.append(
                f"shards[{i}] {'has no' if shard.get('spans') is None else 'has'} spans in a run "
                f"{'with' if data.get('window') is not None else 'without'} --window"
            )
    if isinstance(data.get("input"), dict):
        problems += _wrong_fields("input.", data["input"], {"path": str, "size": int, "sha256": str}, {})
    if not problems and data["rows"] != (held := sum(shard["rows"] for shard in data["shards"])):
        problems.append(f"rows is {data['rows']}, but the shards hold {held}")
    return problems


def _wrong_fields(where: str, data: dict[str, Any], required: dict[str, type], optional: dict[str, type]) -> list[str]:
    wrong = [f"{where}{key} is not a {kind.__name__}" for key, kind in required.items() if not _is(data.get(key), kind)]
    return wrong + [
        f"{where}{key} is not a {kind.__name__} or null"
        for key, kind in optional.items()
        if data.get(key) is not None and not _is(data[key], kind)
    ]


def _is(value: Any, kind: Union[type, tuple]) -> bool:  # noqa: UP007
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))
