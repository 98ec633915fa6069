"""AdamW with the usual weight-decay split, and the cosine schedule with linear warmup.

Explained in notebook 02, §Training a tiny CLIP.

Weight-decay rule: a parameter is decayed iff it has at least 2 dimensions (the matrices of linear
layers, convolution kernels, embedding tables) and the model does not list its name in
``model.no_weight_decay()`` (the timm convention, for e.g. positional embeddings or CLS tokens).
Everything with fewer than 2 dimensions (biases, LayerNorm/RMSNorm gains, a learned temperature,
1-D tokens) is never decayed: shrinking them towards zero only fights the normalisation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed and an undecayed AdamW group (rule above)."""
    skip: set[str] = set()
    if hasattr(model, "no_weight_decay"):
        skip = set(model.no_weight_decay())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and name not in skip else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.05,
    betas: Iterable[float] = (0.9, 0.98),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (fused on CUDA when available)."""
    groups = param_groups(model, weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters (all requires_grad=False?)")
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=on_cuda or None)


@dataclasses.dataclass
class CosineWarmup:
    """LR multiplier for ``LambdaLR``: linear warmup, then cosine decay to ``min_ratio``.

    Called with the number of optimizer steps already taken ``s``: during warmup the factor is
    ``(s + 1) / warmup_steps`` (the first step already moves), afterwards
    ``min_ratio + (1 - min_ratio) * (1 + cos(pi * progress)) / 2`` with progress going from 0 at the
    end of warmup to 1 at ``max_steps``. A dataclass (not a lambda) so its state is plain JSON.
    """

    warmup_steps: int
    max_steps: int
    min_ratio: float = 0.1

    def __call__(self, s: int) -> float:
        if s < self.warmup_steps:
            return (s + 1) / self.warmup_steps
        progress = min(1.0, (s - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_warmup_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int, min_ratio: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` with :class:`CosineWarmup` on every parameter group."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, CosineWarmup(warmup_steps, max_steps, min_ratio))
