"""Frame order from shuffled frames: the machinery MERLOT and VideoOFA share, one implementation of each piece.

Explained in notebook 08, §Frame order: MERLOT and VideoOFA. A clip's frames are put in a new order
(:func:`shuffle_frames`): ``perm[b, t]`` is the original index of the frame that now sits in slot ``t``, and
``shuffled[b, t]`` says whether slot ``t`` took part. Two ways to ask a model for the original order:

* **pairwise** (MERLOT, Zellers et al. 2021): for every pair of shuffled slots ``i < j``, is the frame in slot ``i``
  earlier than the frame in slot ``j``? (:func:`pairwise_order_targets`, :class:`PairwiseOrderHead`, two logits;
  the paper's objective: the released code scores all pairs four ways, other video / same / before / after, with
  unshuffled pairs weighted 0.01, and language-frame pairs too);
* **per frame** (VideoOFA's frame-order modelling, Chen et al. 2023): which original index does each shuffled frame
  have? (:func:`position_targets`, :class:`FramePositionHead`, one logit per index).

Both losses are :func:`order_loss`; :func:`order_accuracy` reports accuracy next to the chance level. A frame alone
holds no time: a clip and the same clip played backwards have the same frames, so order has to come from something
that breaks the symmetry (frames whose time is still known, the text, the arrow of time of real videos).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vlm_primer.masking.masks import IGNORE_INDEX
from vlm_primer.nn import Transformer, init_weights
from vlm_primer.validate import check_images, check_int

__all__ = ["FramePositionHead", "FrameShuffle", "OrderAccuracy", "OrderPairs", "PairwiseOrderHead", "check_frames",
           "flatten_frames", "gather_frames", "order_accuracy", "order_loss", "pairwise_order_targets",
           "position_targets", "shuffle_frames"]


def check_frames(frames: torch.Tensor, *, channels: int, size: int, max_frames: int, name: str = "frames",
                 device: torch.device | None = None) -> torch.Tensor:
    """Check a batch of clips ``(B, T, channels, size, size)`` of floats with ``1 <= T <= max_frames``."""
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, T, {channels}, H, W), got {type(frames).__name__}")
    if frames.ndim != 5:
        raise ValueError(f"{name} must have shape (B, T, {channels}, H, W): a batch of clips of frames, got shape "
                         f"{tuple(frames.shape)}")
    if not 1 <= frames.shape[1] <= max_frames:
        raise ValueError(f"{name} has {frames.shape[1]} frames per clip; the model takes 1 to max_frames={max_frames}")
    check_images(flatten_frames(frames), channels=channels, size=size, name=f"{name} (as B*T images)", device=device)
    return frames


class FrameShuffle(NamedTuple):
    perm: torch.Tensor      # (B, T) long: slot t holds original frame perm[b, t]
    shuffled: torch.Tensor  # (B, T) bool: slots that took part in the shuffle (their time is unknown)


class OrderPairs(NamedTuple):
    batch: torch.Tensor     # (P,) clip of each pair
    first: torch.Tensor     # (P,) slot i
    second: torch.Tensor    # (P,) slot j > i
    labels: torch.Tensor    # (P,) 1 if the frame in slot i is earlier than the frame in slot j, else 0


class OrderAccuracy(NamedTuple):
    accuracy: float         # fraction of targets predicted right
    chance: float           # the best constant guess: the frequency of the most common target
    count: int              # how many targets were scored


def shuffle_frames(batch: int, num_frames: int, fraction: float, generator: torch.Generator | None = None
                   ) -> FrameShuffle:
    """Pick ``round(fraction * num_frames)`` slots of each clip and permute the frames among them (uniformly, so a
    picked frame may stay put); the other frames keep their slots. ``fraction=0``: nothing moves."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be a number in [0, 1], got {fraction!r}")
    check_int(batch, "batch")
    check_int(num_frames, "num_frames")
    k = int(round(fraction * num_frames))
    picked = torch.rand(batch, num_frames, generator=generator).argsort(dim=1)[:, :k].sort(dim=1).values
    moved = torch.rand(batch, k, generator=generator).argsort(dim=1)
    perm = torch.arange(num_frames).repeat(batch, 1)
    perm.scatter_(1, picked, picked.gather(1, moved))
    shuffled = torch.zeros(batch, num_frames, dtype=torch.bool).scatter_(1, picked, True)
    return FrameShuffle(perm, shuffled)


def gather_frames(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, T, ...)`` in the order ``perm`` ``(B, T)``: ``out[b, t] = x[b, perm[b, t]]``."""
    rows = torch.arange(x.shape[0], device=x.device)[:, None]
    return x[rows, perm.to(x.device)]


def pairwise_order_targets(perm: torch.Tensor, shuffled: torch.Tensor) -> OrderPairs:
    """MERLOT's pairs: every ``(clip, i, j)`` with ``i < j`` both shuffled, label ``perm[i] < perm[j]``; in
    clip-major, then row-major order of ``(i, j)``. Empty when fewer than two frames of a clip were shuffled."""
    if perm.shape != shuffled.shape or perm.ndim != 2:
        raise ValueError(f"perm and shuffled must both be (B, T), got {tuple(perm.shape)} and {tuple(shuffled.shape)}")
    i, j = torch.triu_indices(perm.shape[1], perm.shape[1], offset=1, device=perm.device)
    both = shuffled[:, i] & shuffled[:, j]                                   # (B, T(T-1)/2)
    b, p = both.nonzero(as_tuple=True)
    first, second = i[p], j[p]
    return OrderPairs(b, first, second, (perm[b, first] < perm[b, second]).long())


def position_targets(perm: torch.Tensor, shuffled: torch.Tensor | None = None) -> torch.Tensor:
    """VideoOFA's per-frame targets ``(B, T)``: each slot's original index, :data:`IGNORE_INDEX` where the frame
    was not shuffled (its time was never hidden)."""
    return perm.long() if shuffled is None else perm.long().masked_fill(~shuffled.bool(), IGNORE_INDEX)


def order_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of order logits ``(..., C)`` against ``labels`` ``(...)`` (:data:`IGNORE_INDEX` skipped); 0,
    with a gradient path, when nothing is to be predicted."""
    logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    if not bool((labels != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels.to(logits.device), ignore_index=IGNORE_INDEX)


@torch.no_grad()
def order_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> OrderAccuracy:
    """Accuracy of ``argmax(logits)`` on the scored labels and the chance level to compare it with."""
    logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1).to(logits.device)
    keep = labels != IGNORE_INDEX
    if not bool(keep.any()):
        return OrderAccuracy(float("nan"), float("nan"), 0)
    pred, labels = logits[keep].argmax(-1), labels[keep]
    chance = labels.bincount().max().item() / len(labels)
    return OrderAccuracy((pred == labels).float().mean().item(), chance, len(labels))


class PairwiseOrderHead(nn.Module):
    """MERLOT's order classifier: an MLP on ``[h_i ; h_j]`` (the two frames' states) -> 2 logits (1: i before j).
    PyTorch's default init (a head of N(0, 0.02) layers after a from-scratch encoder stalls at chance for long)."""

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden or dim), nn.GELU(), nn.Linear(hidden or dim, 2))

    def forward(self, states: torch.Tensor, pairs: OrderPairs) -> torch.Tensor:
        """``states`` ``(B, T, dim)`` -> logits ``(P, 2)`` for the pairs."""
        x = torch.cat([states[pairs.batch, pairs.first], states[pairs.batch, pairs.second]], dim=-1)
        return self.mlp(x)


class FramePositionHead(nn.Module):
    """VideoOFA-style frame-order head: ``depth`` transformer blocks over the frames (no positions: a frame's
    answer comes from its content and the other frames'), then one logit per original index ``< max_frames``."""

    def __init__(self, dim: int, max_frames: int, heads: int = 4, depth: int = 1) -> None:
        super().__init__()
        self.blocks = Transformer(depth, dim, heads)
        self.blocks.apply(init_weights)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, max_frames)

    def forward(self, frame_features: torch.Tensor) -> torch.Tensor:
        """``(B, T, dim)`` -> logits ``(B, T, T)``: the scores of the first ``T`` indices (a clip's possible ones)."""
        x, _ = self.blocks(frame_features)
        logits = self.out(self.norm(x))
        return logits[..., : frame_features.shape[1]]


def flatten_frames(frames: torch.Tensor) -> torch.Tensor:
    """``(B, T, C, H, W)`` -> ``(B*T, C, H, W)``: every frame through an image encoder at once."""
    return rearrange(frames, "b t c h w -> (b t) c h w")
