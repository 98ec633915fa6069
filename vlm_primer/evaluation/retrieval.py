"""Image-text retrieval: Recall@K in both directions, with several captions per image.

Explained in notebook 02, §Retrieval (and reused in notebook 07, the evaluation chapter).

The data are ``N_img`` images and ``N_txt`` captions; ``text_to_image[j]`` is the image that
caption ``j`` describes (COCO/Flickr30k have 5 captions per image).

* **text -> image**: caption ``j`` is a hit at K if its image is among the K images most similar
  to it.
* **image -> text**: image ``i`` is a hit at K if *any* of its captions is among the K captions
  most similar to it.

For a model whose image embedding depends on the caption (Llip), build the matrix with
``model.similarity(model.encode_image(images), model.encode_text(ids))`` and call
:func:`recall_at_k`; :func:`retrieval_metrics` covers the usual cosine case.

Ties are broken *against* the model: a correct candidate is ranked after every wrong candidate
with an equal score. So a model that scores everything the same gets Recall@K = 0 for K below the
number of wrong candidates (a ``topk``-based implementation would reward it by index order).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from vlm_primer.validate import as_tensor, check_finite, check_int

__all__ = ["first_hit_rank", "recall_at_k", "retrieval_metrics"]


def _check_ks(ks: Sequence[int] | int) -> tuple[int, ...]:
    ks = (ks,) if isinstance(ks, int) else tuple(ks)
    if not ks:
        raise ValueError("ks must name at least one K")
    for k in ks:
        check_int(k, "each K", hint="Recall@K")
    return ks


def first_hit_rank(scores: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """0-based rank of the best correct candidate of each query, ties broken against the model.

    ``scores``: ``(Q, C)`` similarities of ``Q`` queries to ``C`` candidates; ``correct``: ``(Q, C)``
    bool, at least one True per row. The rank is the number of *wrong* candidates that score at
    least as high as the best correct one; a hit at K means ``rank < K``. A NaN score counts against
    the model (a NaN correct candidate scores lowest, a NaN wrong one highest), so a diverged model
    scores 0, not 1 (``x >= nan`` is always false).
    """
    if scores.shape != correct.shape or scores.ndim != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and correct {tuple(correct.shape)} must both be (Q, C)")
    if not bool(correct.any(dim=1).all()):
        raise ValueError("every query needs at least one correct candidate")
    if scores.is_floating_point():
        worst = torch.where(correct, float("-inf"), float("inf")).to(scores.dtype)
        scores = torch.where(scores.isnan(), worst, scores)
    best_correct = scores.masked_fill(~correct, float("-inf")).amax(dim=1, keepdim=True)
    return ((scores >= best_correct) & ~correct).sum(dim=1)


def recall_at_k(
    similarity: torch.Tensor,
    text_to_image: torch.Tensor | Sequence[int] | None = None,
    ks: Sequence[int] | int = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K both ways from an ``(N_img, N_txt)`` similarity matrix.

    ``text_to_image``: ``(N_txt,)`` image index of each caption; default ``arange`` (one caption
    per image, ``N_img == N_txt``). Returns ``{"i2t_R@K": ..., "t2i_R@K": ...}`` as fractions in
    [0, 1]. Every image must have at least one caption.
    """
    ks = _check_ks(ks)
    if not isinstance(similarity, torch.Tensor) or similarity.ndim != 2:
        shape = tuple(similarity.shape) if isinstance(similarity, torch.Tensor) else type(similarity).__name__
        raise ValueError(f"similarity must be an (N_img, N_txt) matrix, got {shape}")
    n_img, n_txt = similarity.shape
    if n_img == 0 or n_txt == 0:
        raise ValueError(f"similarity is empty: shape {(n_img, n_txt)}")
    check_finite(similarity, "similarity")  # a NaN score would count as a hit
    if text_to_image is None:
        if n_img != n_txt:
            raise ValueError(
                f"similarity is {n_img}x{n_txt}: with several captions per image pass text_to_image "
                "(the image index of each caption)"
            )
        text_to_image = torch.arange(n_txt)
    text_to_image = as_tensor(text_to_image, "text_to_image", "a (N_txt,) tensor of image indices").to(similarity.device)
    if text_to_image.shape != (n_txt,):
        raise ValueError(
            f"text_to_image must have shape ({n_txt},) (one entry per caption), got {tuple(text_to_image.shape)}"
        )
    if text_to_image.is_floating_point() or text_to_image.dtype == torch.bool:
        raise TypeError(f"text_to_image must hold integer image indices, got dtype {text_to_image.dtype}")
    if text_to_image.min() < 0 or text_to_image.max() >= n_img:
        raise ValueError(f"text_to_image has indices outside [0, {n_img})")
    # correct[i, j]: caption j describes image i.
    correct = text_to_image[None, :] == torch.arange(n_img, device=similarity.device)[:, None]
    if not bool(correct.any(dim=1).all()):
        missing = (~correct.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"images {missing[:10]} have no caption in text_to_image")
    sim = similarity if similarity.is_floating_point() else similarity.float()  # float64 ties stay apart
    i2t = first_hit_rank(sim, correct)
    t2i = first_hit_rank(sim.t(), correct.t())
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_R@{k}"] = (i2t < k).float().mean().item()
    for k in ks:
        out[f"t2i_R@{k}"] = (t2i < k).float().mean().item()
    return out


def retrieval_metrics(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    text_to_image: torch.Tensor | Sequence[int] | None = None,
    ks: Sequence[int] | int = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K from ``(N_img, D)`` and ``(N_txt, D)`` embeddings (cosine similarity)."""
    for name, e in (("image_embeds", image_embeds), ("text_embeds", text_embeds)):
        if not isinstance(e, torch.Tensor) or e.ndim != 2:
            shape = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
            raise ValueError(f"{name} must have shape (N, D), got {shape}")
    if image_embeds.shape[1] != text_embeds.shape[1]:
        raise ValueError(
            f"image_embeds {tuple(image_embeds.shape)} and text_embeds {tuple(text_embeds.shape)} "
            "must have the same embedding size D"
        )
    sim = F.normalize(image_embeds.float(), dim=-1) @ F.normalize(text_embeds.float(), dim=-1).t()
    return recall_at_k(sim, text_to_image, ks)
