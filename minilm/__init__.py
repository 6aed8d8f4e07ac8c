"""minilm: a hand-written, readable PyTorch MiniLM/BERT sentence encoder.

    from minilm import SentenceEncoder
    enc = SentenceEncoder.from_pretrained()                 # all-MiniLM-L6-v2, offline
    vectors = enc.encode(["A sentence.", "Another one."])   # float32 (2, 384), unit length

The layers, bottom up (docs/design.md draws them): minilm.base (text input, errors, atomic files,
numbers), minilm.model (the maths) and minilm.text (tokenizers), minilm.weights (finding and checking
checkpoints), minilm.encoders (texts -> vectors, text pairs -> relevance scores), minilm.corpus and
minilm.serve (files in, stored vectors out; the HTTP server), and on top the commands: the modules
beside this file (embed, rerank, explain, calibrate; cli.py their shared helpers), weights/__main__
and serve/__main__.
"""

from .encoders.cross_encoder import CrossEncoder
from .encoders.sentence_encoder import EncodeResult, SentenceEncoder
from .model.encoder import BertConfig, BertModel
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
