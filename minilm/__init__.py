"""minilm: a hand-written, readable PyTorch MiniLM/BERT sentence encoder.

    from minilm import SentenceEncoder
    enc = SentenceEncoder.from_pretrained()                 # all-MiniLM-L6-v2, offline
    vectors = enc.encode(["A sentence.", "Another one."])   # float32 (2, 384), unit length

The packages, bottom up: minilm.model (the maths), minilm.text (tokenizers), minilm.weights
(finding and checking checkpoints), this package's sentence_encoder (texts -> vectors) and
cross_encoder (text pairs -> relevance scores),
minilm.corpus (files in, stored vectors out), and the entry points embed, explain and weights.
"""

from .cross_encoder import CrossEncoder
from .model.encoder import BertConfig, BertModel
from .sentence_encoder import EncodeResult, SentenceEncoder
from .weights import Checkpoint, WeightsError, load_checkpoint, resolve_checkpoint

__version__ = "0.1.0"
__all__ = [
    "BertConfig",
    "BertModel",
    "Checkpoint",
    "CrossEncoder",
    "EncodeResult",
    "SentenceEncoder",
    "WeightsError",
    "load_checkpoint",
    "resolve_checkpoint",
]
