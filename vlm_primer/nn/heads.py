"""BERT's language-model head, shared by the Q-Former's ITG (BLIP-2) and BLIP's text decoder.

Explained in notebook 04, §The MED.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlm_primer.nn.mlp import activation


class BertLMHead(nn.Module):
    """``dense -> act -> LayerNorm -> word embeddings^T + bias``: the output weights are the input word embeddings
    ``word_emb`` (shared, not copied), plus a bias of their own; ``transformers``' ``BertLMPredictionHead``."""

    def __init__(self, word_emb: nn.Embedding, act: str = "gelu", eps: float = 1e-12) -> None:
        super().__init__()
        vocab, dim = word_emb.weight.shape
        self.dense = nn.Linear(dim, dim)
        self.act = activation(act)
        self.ln = nn.LayerNorm(dim, eps=eps)
        self.word_emb = word_emb
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(self.ln(self.act(self.dense(hidden))), self.word_emb.weight, self.bias)
