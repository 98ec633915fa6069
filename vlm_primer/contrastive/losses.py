"""Contrastive losses: CLIP's symmetric InfoNCE, SigLIP's pairwise sigmoid loss and SimCLR's NT-Xent.

Explained in notebook 02, §InfoNCE and §SigLIP: the sigmoid loss. Small modules in the style of open_clip's
``loss.py``: each takes L2-normalised image and text features plus the (log) temperature, and
works unchanged on one process or across ranks of a ``torch.distributed`` group.

Distributed convention (the one DDP needs)
------------------------------------------
With ``W`` ranks each holding a local batch of ``B`` pairs, every rank returns the *mean over its
local rows* of the global-batch loss, so the mean of the ``W`` rank losses equals the loss that one
process computes on the whole ``W*B`` batch. Features from other ranks are gathered with an
autograd-aware all-gather whose backward *sums* the gradient over ranks: the gradient that reaches
rank ``r``'s local features is therefore ``W`` times the gradient of the single-process loss with
respect to those features. DDP then averages parameter gradients over ranks (divides by ``W``),
and the result is exactly the single-process gradient on the global batch.
``tests/test_contrastive_distributed.py`` checks this with two gloo processes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vlm_primer.validate import check_finite

__all__ = ["ClipLoss", "SigLipLoss", "all_gather_with_grad", "clip_loss", "nt_xent_loss", "siglip_loss"]


# --------------------------------------------------------------------------- distributed helpers


def _world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default group, ``(0, 1)`` when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums the incoming gradients over ranks.

    Rank ``r``'s slice of the gathered tensor *is* its local input, so its gradient is the sum,
    over all ranks, of the gradient each rank's loss sends to that slice.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, world = _world()
        sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
        sizes = [int(s) for s in sizes]
        if len(set(sizes)) != 1:
            raise ValueError(f"all ranks must hold the same local batch size, got {sizes}")
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.local = rank, x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.local : (ctx.rank + 1) * ctx.local]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0 (rank order); identity on one process.

    Unlike ``torch.distributed.all_gather`` the result stays in the autograd graph: the local
    slice keeps its gradient and the gradients of the other slices flow back to their ranks.
    """
    if _world()[1] == 1:
        return x
    return _AllGatherWithGrad.apply(x)


def _check_features(image_features: torch.Tensor, text_features: torch.Tensor) -> None:
    for name, t in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(t, torch.Tensor) or t.ndim != 2:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must have shape (B, D), got {shape}")
        if t.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch (shape {tuple(t.shape)})")
    if image_features.shape != text_features.shape:
        raise ValueError(
            f"image_features {tuple(image_features.shape)} and text_features {tuple(text_features.shape)} "
            "must have the same shape (B, D): one caption per image"
        )


def _check_logits(logits: torch.Tensor, name: str) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (B_img, B_txt), got "
                        f"{getattr(logits, 'dtype', type(logits).__name__)}")
    if logits.ndim != 2 or 0 in logits.shape:
        raise ValueError(f"{name} must have shape (B_img, B_txt) with both > 0, got {tuple(logits.shape)}")


# --------------------------------------------------------------------------- functional forms


def clip_loss(logits_per_image: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE on a ``(B_img, B_txt)`` logit matrix (CLIP, Radford et al. 2021).

    ``labels[i]`` is the column of image ``i``'s caption (default ``arange``). The loss is the mean
    of the image->text cross-entropy over rows and the text->image cross-entropy over columns.
    Explained in notebook 02, §InfoNCE.
    """
    _check_logits(logits_per_image, "logits_per_image")
    if labels is None:
        if logits_per_image.shape[0] != logits_per_image.shape[1]:
            raise ValueError(f"logits_per_image {tuple(logits_per_image.shape)} is not square: pass labels")
        labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.t(), labels))


def siglip_loss(logits: torch.Tensor, positive: torch.Tensor | None = None) -> torch.Tensor:
    """Pairwise sigmoid loss on a ``(B_img, B_txt)`` logit matrix (SigLIP, Zhai et al. 2023).

    ``-1/B_img * sum_ij log sigmoid(l_ij * logits_ij)`` with labels ``l_ij = +1`` for matching pairs
    (``positive``, default the diagonal) and ``-1`` otherwise: every pair is an independent binary
    classification, normalised by the number of images as in the paper.
    Explained in notebook 02, §SigLIP: the sigmoid loss.
    """
    _check_logits(logits, "logits")
    if positive is None:
        positive = torch.eye(*logits.shape, dtype=torch.bool, device=logits.device)
    elif not isinstance(positive, torch.Tensor) or positive.shape != logits.shape:
        raise ValueError(f"positive must be a tensor of the logits' shape {tuple(logits.shape)}, "
                         f"got {tuple(getattr(positive, 'shape', ()))}")
    labels = positive.to(logits.dtype) * 2 - 1
    return -F.logsigmoid(labels * logits).sum() / logits.shape[0]


def nt_xent_loss(view1: torch.Tensor, view2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al. 2020): InfoNCE between two augmented views of the same ``B`` images.

    ``view1[i]`` and ``view2[i]`` (``(B, D)``, normalised here) are positives; each of the ``2B`` views
    is classified against the other ``2B - 1``, so both views of every other image are its negatives
    (CLIP's negatives come only from the other modality). Mean over the ``2B`` rows.
    Explained in notebook 02, §SimCLR. One process: gather the views first to use it across ranks.
    """
    _check_features(view1, view2)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b = view1.shape[0]
    z = F.normalize(torch.cat([view1, view2]), dim=-1)
    self_pairs = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    logits = (z @ z.t() / temperature).masked_fill(self_pairs, float("-inf"))  # a view is not its own negative
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(logits, targets)


# --------------------------------------------------------------------------- modules


class ClipLoss(nn.Module):
    """CLIP's symmetric InfoNCE loss, local or across ``torch.distributed`` ranks.

    ``forward(image_features, text_features, logit_scale)`` takes L2-normalised ``(B, D)`` features
    and the *already exponentiated* scale (``model.logit_scale.exp()``), like open_clip.

    On several ranks the features of all ranks are gathered with gradient. With
    ``local_loss=True`` (default) rank ``r`` scores only its own ``B`` images against all ``W*B``
    texts (and its texts against all images), with labels ``arange(B) + r*B``, and returns the
    mean over those rows: ``O(B * W*B)`` logits instead of ``O((W*B)^2)``. With
    ``local_loss=False`` every rank computes the whole global loss (open_clip's default), and the rank
    losses are all equal to it. See the module docstring for the gradient convention; open_clip's default
    also gathers *without* gradient (``gather_with_grad=False``), so only its local features get one there.
    """

    def __init__(self, local_loss: bool = True) -> None:
        super().__init__()
        self.local_loss = local_loss

    def forward(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float
    ) -> torch.Tensor:
        _check_features(image_features, text_features)
        check_finite(logit_scale, "logit_scale")
        rank, world = _world()
        if world == 1:
            return clip_loss(logit_scale * image_features @ text_features.t())
        all_images = all_gather_with_grad(image_features)
        all_texts = all_gather_with_grad(text_features)
        if not self.local_loss:
            # Every rank computes the full loss; the mean over ranks is then the same number, but
            # the gradient (after the gather's sum) is W times the global one, as with local_loss.
            return clip_loss(logit_scale * all_images @ all_texts.t())
        b = image_features.shape[0]
        labels = torch.arange(b, device=image_features.device) + rank * b
        logits_per_image = logit_scale * image_features @ all_texts.t()  # (B, W*B)
        logits_per_text = logit_scale * text_features @ all_images.t()  # (B, W*B)
        # The global loss averages over W*B rows in each direction; this rank owns B of them.
        # Mean over ranks of these local means = global loss.
        return 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels))


class SigLipLoss(nn.Module):
    """SigLIP's pairwise sigmoid loss, local or across ``torch.distributed`` ranks.

    ``forward(image_features, text_features, logit_scale, logit_bias)`` takes L2-normalised
    ``(B, D)`` features, the exponentiated scale ``t`` and the bias ``b``; logits are
    ``t * x_i . y_j + b``.

    On several ranks each rank keeps its images and scores them against the texts of every rank:
    its own texts hold the positives (the diagonal), the other ranks' texts are all negatives.
    ``exchange="gather"`` all-gathers the texts with gradient; ``exchange="ring"`` is the paper's
    memory-saving variant: the text chunks travel around the ring of ranks (``W-1`` hops), so only
    one extra chunk is in memory at a time. Each rank returns its images' share of the global loss
    ``-1/(W*B) sum log sigmoid(...)`` times ``W``, i.e. ``-1/B sum_{i local, all j}``; the mean over
    ranks is the global loss (see the module docstring for gradients).
    """

    def __init__(self, exchange: str = "gather") -> None:
        super().__init__()
        if exchange not in ("gather", "ring"):
            raise ValueError(f"exchange must be 'gather' or 'ring', got {exchange!r}")
        self.exchange = exchange

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        logit_bias: torch.Tensor | float = 0.0,
    ) -> torch.Tensor:
        _check_features(image_features, text_features)
        check_finite(logit_scale, "logit_scale")
        check_finite(logit_bias, "logit_bias")
        rank, world = _world()
        b = image_features.shape[0]
        local = siglip_loss(logit_scale * image_features @ text_features.t() + logit_bias)
        if world == 1:
            return local
        if self.exchange == "gather":
            all_texts = all_gather_with_grad(text_features)
            others = torch.cat([all_texts[: rank * b], all_texts[(rank + 1) * b :]])
            negatives = [others]
        else:
            negatives, chunk = [], text_features
            for _ in range(world - 1):
                chunk = _RingPass.apply(chunk)  # texts of rank (rank - hop) mod W
                negatives.append(chunk)
        loss = local
        for texts in negatives:
            logits = logit_scale * image_features @ texts.t() + logit_bias
            loss = loss - F.logsigmoid(-logits).sum() / b
        return loss


class _RingPass(torch.autograd.Function):
    """Send ``x`` to the next rank and receive the previous rank's; backward sends the gradient back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return _ring_exchange(x.contiguous(), step=+1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _ring_exchange(grad.contiguous(), step=-1)


def _ring_exchange(x: torch.Tensor, step: int) -> torch.Tensor:
    rank, world = _world()
    out = torch.empty_like(x)
    ops = [
        dist.P2POp(dist.isend, x, (rank + step) % world),
        dist.P2POp(dist.irecv, out, (rank - step) % world),
    ]
    for req in dist.batch_isend_irecv(ops):
        req.wait()
    return out
