"""A cross-encoder: BERT reads a query and a passage together and scores the pair.

Hugging Face's `BertForSequenceClassification`, which the cross-encoder/ms-marco-MiniLM-L-*-v2
rerankers are:

    [CLS] query [SEP] passage [SEP]  ->  BertModel  ->  BertPooler: tanh(dense(h_CLS))
                                     ->  dropout (training only)  ->  classifier: C -> num_labels logits

The two texts are told apart by token_type_ids (0 for the query and its [CLS] and [SEP], 1 for the
passage and the last [SEP]); the tokenizer makes them (minilm.text.tokenization.PairTokenizer).
Every token attends to every other, across the two texts: that is what makes a cross-encoder a
better ranker than comparing two sentence embeddings, and a slower one (one pass per pair).

Module names mirror the checkpoint keys (`bert.embeddings...`, `bert.pooler.dense`, `classifier`),
so minilm.model.loading loads it strictly, as it does the sentence encoder. The activation that
turns a logit into a score (sigmoid or none) is the caller's: minilm.encoders.cross_encoder.

Shape legend: B pairs, T tokens per pair (padded), C hidden size, L labels (1 for a reranker).
"""

from __future__ import annotations

import torch
from torch import nn

from .encoder import BertConfig, BertModel

# What turns a logit into a score, by the name of the torch.nn module sentence-transformers stores.
ACTIVATIONS = {
    "Identity": lambda logits: logits,  # the raw logit (ms-marco rerankers)
    "Sigmoid": torch.sigmoid,  # into (0, 1): sentence-transformers' default for one label
    "Tanh": torch.tanh,
}


class BertForSequenceClassification(nn.Module):
    def __init__(self, config: BertConfig, num_labels: int = 1):
        super().__init__()
        self.num_labels = num_labels
        self.bert = BertModel(config, add_pooling_layer=True)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        """(B, T) ids, mask (1 = real token) and token types (0 = first text, 1 = second) -> (B, L) logits."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        pooled = self.bert.pooler(hidden)  # (B, C), from [CLS]
        return self.classifier(self.dropout(pooled))  # (B, L)
