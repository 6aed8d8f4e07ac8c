"""Corpus files in, stored vectors out: writing shards, quantizing, Ray (the readers are minilm.base's).

shards.py    embed a file into resumable, verified shards (--output DIR/), and load them back
quantize.py  float16, int8/uint8 and binary storage, as sentence-transformers quantizes
ray.py       the same embeddings on a Ray cluster with Ray Data (--engine ray; needs minilm[ray])
"""

from .shards import CorpusSettings, DamagedShards, embed_corpus, load_shards, read_manifest, verify_shards

__all__ = ["CorpusSettings", "DamagedShards", "embed_corpus", "load_shards", "read_manifest", "verify_shards"]
