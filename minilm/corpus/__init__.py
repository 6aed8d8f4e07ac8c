"""Corpus files in, stored vectors out: writing shards, quantizing, Ray (the readers are minilm.base's).

shards.py    embed a file into resumable, verified shards (--output DIR/): the writer
folder.py    a shard folder on disk: its lock, its manifest's fields, one shard checked against it
reader.py    a finished folder read back and verified (load_shards, verify_shards)
quantize.py  float16, int8/uint8 and binary storage, as sentence-transformers quantizes
ray.py       the same embeddings on a Ray cluster with Ray Data (--engine ray; needs minilm[ray])
"""

from .folder import DamagedShards
from .reader import load_shards, read_manifest, verify_shards
from .shards import CorpusSettings, embed_corpus

__all__ = ["CorpusSettings", "DamagedShards", "embed_corpus", "load_shards", "read_manifest", "verify_shards"]
