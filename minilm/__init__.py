"""minilm: a hand-written, readable PyTorch MiniLM/BERT sentence encoder.

    from minilm import SentenceEncoder
    enc = SentenceEncoder.from_pretrained()                 # all-MiniLM-L6-v2, offline
    vectors = enc.encode(["A sentence.", "Another one."])   # float32 (2, 384), unit length

Names are imported on first use, so `python -m minilm.weights` and `python -m minilm.embed`
run their module once, not a second copy already imported by this package.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "BertConfig": "encoder",
    "BertEncoder": "encoder",
    "EncodeResult": "sentence_encoder",
    "SentenceEncoder": "sentence_encoder",
    "WeightsError": "weights",
    "resolve_checkpoint": "weights",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'minilm' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
