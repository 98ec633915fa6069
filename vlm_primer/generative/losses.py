"""The losses BLIP adds to contrastive learning, each small: ITC with momentum distillation, hard negatives for
ITM, and the momentum (EMA) update. The LM loss is :func:`~vlm_primer.nn.causal_lm_loss` with label smoothing.

Explained in notebook 04, §BLIP's three losses (Li et al. 2022, "BLIP", §3.2; ALBEF, Li et al. 2021, §3.3).
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from vlm_primer.contrastive.losses import clip_loss
from vlm_primer.validate import check_finite, value_checks_enabled

__all__ = ["hard_negatives", "itc_loss", "momentum_update"]


def itc_loss(logits_per_image: torch.Tensor, momentum_logits: torch.Tensor | None = None,
             alpha: float = 0.4) -> torch.Tensor:
    """Image-text contrastive loss over ``logits_per_image`` ``(B, B)`` (similarities over the temperature).

    Without ``momentum_logits`` it is CLIP's symmetric cross-entropy (:func:`~vlm_primer.contrastive.clip_loss`).
    With them (ALBEF's momentum distillation, used by BLIP) the targets are soft: ``alpha`` times the momentum
    encoder's softmax plus ``1 - alpha`` times the one-hot pairing, in each direction; so a caption that also
    fits another image in the batch is not pushed away from it as hard. ``alpha = 0`` is CLIP's loss. ALBEF and
    BLIP compute the student's logits against the momentum features plus a queue (57,600 in BLIP); here both
    ``logits_per_image`` and ``momentum_logits`` are in-batch."""
    if momentum_logits is None:
        return clip_loss(logits_per_image)
    check_finite(alpha, "alpha")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if momentum_logits.shape != logits_per_image.shape:
        raise ValueError(f"momentum_logits {tuple(momentum_logits.shape)} must match logits_per_image "
                         f"{tuple(logits_per_image.shape)}")
    eye = torch.eye(len(logits_per_image), device=logits_per_image.device)
    losses = []
    for logits, teacher in ((logits_per_image, momentum_logits), (logits_per_image.t(), momentum_logits.t())):
        targets = alpha * teacher.detach().float().softmax(dim=1) + (1 - alpha) * eye
        losses.append(-(F.log_softmax(logits.float(), dim=1) * targets).sum(1).mean())
    return (losses[0] + losses[1]) / 2


@torch.no_grad()
def momentum_update(pairs: Iterable[tuple[nn.Module, nn.Module]], momentum: float) -> None:
    """``teacher <- momentum * teacher + (1 - momentum) * student`` for every ``(student, teacher)`` pair of modules
    with the same parameters (ALBEF's and BLIP's momentum encoders, 0.995)."""
    for student, teacher in pairs:
        for p, p_m in zip(student.parameters(), teacher.parameters(), strict=True):
            p_m.mul_(momentum).add_(p.detach(), alpha=1 - momentum)


def hard_negatives(scores: torch.Tensor, same: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """For each row of ``scores`` ``(B, B)`` (row i: query i against candidates), a candidate index drawn with
    probability ``softmax(scores)``, never the row's own pair nor any candidate ``same`` marks as a match
    (e.g. an identical caption); a row with no negative left draws from the others with the same
    ``softmax(scores)`` weights.
    The ITM negatives of BLIP and BLIP-2: the contrastive scores point at the captions hardest to tell apart."""
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be a square (B, B) similarity matrix, got "
                         f"{tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__}")
    batch = scores.shape[0]
    if batch < 2:
        raise ValueError("hard negatives need a batch of at least 2 pairs")
    if value_checks_enabled() and not bool(torch.isfinite(scores).all()):
        raise ValueError("scores hold NaN or infinite values: no distribution to draw hard negatives from")
    banned = torch.eye(batch, dtype=torch.bool, device=scores.device)
    if same is not None:
        if not isinstance(same, torch.Tensor) or tuple(same.shape) != tuple(scores.shape):
            raise ValueError(f"same must be a (B, B) = {tuple(scores.shape)} mask of matching pairs, got "
                             f"{tuple(same.shape) if isinstance(same, torch.Tensor) else type(same).__name__}")
        banned = banned | same.to(scores.device).bool()
    none_left = banned.all(1, keepdim=True)
    banned = torch.where(none_left, torch.eye(batch, dtype=torch.bool, device=scores.device), banned)
    # unchecked (no value read on a GPU), a diverged step's NaN still draws: the loss carries it to the Trainer
    weights = torch.softmax(torch.nan_to_num(scores.detach().float()), dim=1)
    weights = weights.masked_fill(banned, 0.0) + (~banned) * 1e-8
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)
