"""The model maths: a BERT encoder written out by hand, and what runs it. No files, no network.

encoder.py    BertConfig, BertModel (embeddings + BertEncoder, the layer stack, optional BertPooler), key_mask
classifier.py BertForSequenceClassification: BERT + pooler + classifier, the cross-encoder reranker
pooling.py    token vectors -> one sentence vector (the six sentence-transformers modes), L2 normalization
loading.py    config.json's settings -> BertConfig; checkpoint tensors -> BertModel, strictly
packed.py     PackedEncoder: the same maths without padding, Q/K/V fused (half precision)
precision.py  which compute dtype runs (float32, bfloat16, float16, int8) and the model for it
int8.py       W8A8 Linear layers with SmoothQuant smoothing, and the calibration that measures it
fused.py      FusedEncoder: int8 with its element-wise steps compiled between the matmuls (opt-in)
"""

from .encoder import ALL_MINILM_L6_V2, BertConfig, BertModel, key_mask

__all__ = ["ALL_MINILM_L6_V2", "BertConfig", "BertModel", "key_mask"]
