"""The transformer feed-forward block: two layers with GELU & co, or SwiGLU with three.

Explained in notebook 02, §Transformer blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlm_primer.validate import check_choice

ACTIVATIONS = ("gelu", "quick_gelu", "gelu_tanh", "relu", "silu", "swiglu")


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's sigmoid approximation of GELU: ``x * sigmoid(1.702 x)``."""
    return x * torch.sigmoid(1.702 * x)


def activation(name: str):
    """The elementwise activation function called ``name`` (not ``swiglu``, which is a gated MLP)."""
    fns = {
        "gelu": F.gelu,
        "quick_gelu": quick_gelu,
        "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
        "relu": F.relu,
        "silu": F.silu,
    }
    check_choice(name, tuple(fns), "act")
    return fns[name]


class MLP(nn.Module):
    """``fc2(act(fc1(x)))``; for ``act="swiglu"`` (Llama) ``fc2(silu(fc1(x)) * fc3(x))``.

    With SwiGLU, ``fc1`` is the gate (Llama ``gate_proj``), ``fc3`` the up projection (``up_proj``)
    and ``fc2`` the down projection (``down_proj``), as in Meta's ``w1``/``w3``/``w2``.
    """

    def __init__(self, dim: int, hidden_dim: int, act: str = "gelu", bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        check_choice(act, ACTIVATIONS, "act")
        self.act_name = act
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)
        if act == "swiglu":
            self.fc3 = nn.Linear(dim, hidden_dim, bias=bias)
            self.act = F.silu
        else:
            self.act = activation(act)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc1(x))
        if self.act_name == "swiglu":
            h = h * self.fc3(x)
        return self.fc2(self.drop(h))

    def extra_repr(self) -> str:
        return f"act={self.act_name}"
