"""Finding what was embedded: search a shard folder (python -m minilm.embed --output DIR/).

topk.py      exact top-k over chunks (TopK), and semantic_search with sentence-transformers' signature
searcher.py  Searcher: a folder's rows ranked against queries, with ids and texts (every stored precision)
__main__.py  python -m minilm.search DIR "query"
"""

from .searcher import Hit, Searcher
from .topk import TopK, cos_sim, semantic_search

__all__ = ["Hit", "Searcher", "TopK", "cos_sim", "semantic_search"]
