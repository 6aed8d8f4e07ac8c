"""Text -> token ids, as sentence-transformers tokenizes for all-MiniLM-L6-v2.

tokenization.py  SentenceTokenizer: truncation, token counts, padding, longest-first batches
wordpiece.py     BERT's WordPiece tokenizer in plain Python (the same ids as the Rust one)
windows.py       word pieces' offsets in the original text, and overlapping windows of a long text
"""

from .tokenization import SentenceTokenizer

__all__ = ["SentenceTokenizer"]
