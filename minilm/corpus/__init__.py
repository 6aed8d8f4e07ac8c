"""Corpus files in, stored vectors out: writing shards, quantizing, Ray (the readers are minilm.base's).

shards.py    embed a file into resumable, verified shards (--output DIR/): the writer
manifest.py  the manifest, typed: the run's identity, its shards, what it skipped; read and checked
folder.py    a shard folder on disk: its lock, atomic files, a rerun checked, one shard checked
reader.py    a finished folder read back and verified (load_shards, verify_shards)
quantize.py  float16, int8/uint8 and binary storage, as sentence-transformers quantizes
ray.py       the same embeddings on a Ray cluster with Ray Data (--engine ray; needs minilm[ray])
"""

from .folder import DamagedShards
from .manifest import Manifest, RunIdentity, Shard
from .reader import load_shards, read_manifest, verify_shards
from .shards import CorpusSettings, embed_corpus

__all__ = [
    "CorpusSettings",
    "DamagedShards",
    "Manifest",
    "RunIdentity",
    "Shard",
    "embed_corpus",
    "load_shards",
    "read_manifest",
    "verify_shards",
]
