"""The encoders: what turns texts into vectors and pairs into scores, over the model, the tokenizer and
the checkpoint files below them.

sentence_encoder.py  SentenceEncoder: texts -> sentence embeddings, as sentence-transformers gives them
cross_encoder.py     CrossEncoder: (query, passage) pairs -> relevance scores, a reranker
trace.py             one forward pass kept stage by stage with its attention (minilm.explain, the walkthrough)

`from minilm import SentenceEncoder, CrossEncoder` is the usual way in.
"""
