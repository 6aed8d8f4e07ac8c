"""Finding what was embedded: search a shard folder (python -m minilm.embed --output DIR/).

topk.py      exact top-k over chunks (TopK), and semantic_search with sentence-transformers' signature
searcher.py  Searcher: a folder's rows ranked against queries, with ids and texts (every stored precision)
folders.py   the folders searched, behind one face: shard folders and --engine ray's Parquet folders
index.py     an HNSW or binary index (usearch) beside a folder, and the check that it still covers it
vectors.py   stored vectors as unit float32: what is scored, rescored and indexed
__main__.py  python -m minilm.search DIR "query"
"""

from .searcher import Hit, Searcher
from .topk import TopK, cos_sim, semantic_search

__all__ = ["Hit", "Searcher", "TopK", "cos_sim", "semantic_search"]
