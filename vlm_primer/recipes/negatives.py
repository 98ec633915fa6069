"""Hard negative captions in contrastive batches (survey §3.4.2): NegCLIP.

Chapter 06b (survey §3.4) explains it. A CLIP trained on web pairs can match "the horse is eating the grass" with
its image as well as "the grass is eating the horse": nothing in its batches ever asks it to tell them apart
(chapter 02's binding test, chapter 07's ARO-style suite). NegCLIP (Yuksekgonul et al. 2023, the ARO paper) adds,
for every image, a *hard negative* caption (its own caption with two attributes, two objects or the word order
swapped; chapter 01's :func:`~vlm_primer.world.negatives.hard_negative`) to the texts its image must choose from:

    logits_i2t = s · [T; N] I^T    (B images against B captions and B hard negatives)
    logits_t2i = s · I T^T         (B captions against B images, as in CLIP)
    loss = ½ (CE(logits_i2t, diag) + CE(logits_t2i, diag))

with ``I``, ``T``, ``N`` the unit image, caption and negative embeddings and ``s`` the learned logit scale. Only
the image-to-text direction sees the negatives (as the paper's open_clip fork does: its text batch is the captions
followed by the negatives, and the text-to-image logits use the captions only). A caption with no valid hard
negative gets none: its column is masked out. :class:`NegCLIP` wraps any CLIP of the book so the Trainer trains
it this way and every evaluation sees the plain CLIP.

Left out: NegCLIP's hard negative *images*. The paper's code also adds, for every item, one of its image's nearest
neighbours with that image's caption and hard negative (2B images against 4B texts); here only captions are hard.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NegCLIP", "negative_collate", "negclip_loss"]


def negclip_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, negative_embeds: torch.Tensor,
                 logit_scale: torch.Tensor | float, negative_valid: torch.Tensor | None = None) -> torch.Tensor:
    """NegCLIP's loss on unit embeddings ``(B, D)`` each; ``negative_valid`` ``(B,)`` bool marks the rows that have a
    hard negative (default: all). ``logit_scale`` is the multiplier ``s`` (``exp`` of CLIP's learned parameter)."""
    for name, t in (("image_embeds", image_embeds), ("text_embeds", text_embeds), ("negative_embeds", negative_embeds)):
        if not isinstance(t, torch.Tensor) or t.ndim != 2:
            raise ValueError(f"{name} must be a (B, D) tensor, got {getattr(t, 'shape', type(t).__name__)}")
    if not image_embeds.shape == text_embeds.shape == negative_embeds.shape:
        raise ValueError(f"image, text and negative embeddings must have one shape, got {tuple(image_embeds.shape)}, "
                         f"{tuple(text_embeds.shape)} and {tuple(negative_embeds.shape)}")
    b = image_embeds.shape[0]
    if b == 0:
        raise ValueError("the batch is empty: NegCLIP needs at least one image-caption pair")
    valid = torch.ones(b, dtype=torch.bool, device=image_embeds.device) if negative_valid is None else negative_valid
    if valid.shape != (b,) or valid.dtype != torch.bool:
        raise ValueError(f"negative_valid must be a bool tensor of shape ({b},), got {valid.dtype} {tuple(valid.shape)}")
    texts = torch.cat([text_embeds, negative_embeds])
    logits_i2t = logit_scale * image_embeds @ texts.t()
    logits_i2t = logits_i2t.masked_fill(torch.cat([torch.zeros_like(valid), ~valid])[None], float("-inf"))
    logits_t2i = logit_scale * text_embeds @ image_embeds.t()
    target = torch.arange(b, device=image_embeds.device)
    return (F.cross_entropy(logits_i2t, target) + F.cross_entropy(logits_t2i, target)) / 2


class NegCLIP(nn.Module):
    """A CLIP of the book trained with :func:`negclip_loss`: ``forward`` takes chapter 01's ``negative_ids`` and
    ``negative_mask`` (rows whose negative is empty are left without one); ``encode_image``, ``encode_text`` and
    ``similarity`` are the wrapped CLIP's, so zero-shot and the evaluation harness see a plain CLIP."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        if not all(hasattr(clip, a) for a in ("encode_image", "encode_text", "logit_scale")):
            raise TypeError(f"NegCLIP wraps a CLIP (encode_image, encode_text, logit_scale), got {type(clip).__name__}")
        self.clip = clip
        self.cfg = getattr(clip, "cfg", None)

    @torch.no_grad()
    def post_step(self) -> None:
        """The wrapped CLIP's clamp of its temperature after each optimizer step (``CLIP.post_step``)."""
        if hasattr(self.clip, "post_step"):
            self.clip.post_step()

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(pixel_values)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.clip.encode_text(input_ids, attention_mask)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                negative_ids: torch.Tensor | None = None, negative_mask: torch.Tensor | None = None) -> Any:
        if negative_ids is None:
            return self.clip(pixel_values, input_ids, attention_mask)
        if negative_ids.shape[0] != input_ids.shape[0]:
            raise ValueError(f"{input_ids.shape[0]} captions but {negative_ids.shape[0]} negatives: one per caption")
        image = F.normalize(self.clip.encode_image(pixel_values), dim=-1)
        text = F.normalize(self.clip.encode_text(input_ids, attention_mask), dim=-1)
        negative = F.normalize(self.clip.encode_text(negative_ids, negative_mask), dim=-1)
        valid = (negative_mask.sum(1) > 1) if negative_mask is not None else None  # more than an <eos>: a real text
        loss = negclip_loss(image, text, negative, self.clip.logit_scale.exp(), valid)
        return _Output(loss=loss)


class _Output:
    def __init__(self, loss: torch.Tensor) -> None:
        self.loss = loss


def negative_collate(tokenizer: Any, max_length: int, image_size: int) -> Callable[[list[dict[str, Any]]], dict]:
    """Chapter 02's pair collate plus ``negative_ids`` / ``negative_mask`` from items carrying ``negative`` (chapter
    01's ``ShapesCaptionDataset(negatives=True)``; ``""`` when no hard negative applies)."""
    from vlm_primer.contrastive.recipes import pair_collate

    pairs = pair_collate(tokenizer, max_length, image_size)

    def collate(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if any("negative" not in s for s in samples):
            raise ValueError("every sample needs a 'negative' caption (ShapesCaptionDataset(negatives=True))")
        out = pairs(samples)
        enc = tokenizer([s["negative"] for s in samples], max_length=max_length)
        return out | {"negative_ids": enc["input_ids"], "negative_mask": enc["attention_mask"]}

    return collate
