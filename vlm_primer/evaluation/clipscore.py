"""CLIPScore and RefCLIPScore (Hessel et al. 2021): how well a caption fits its image, read off a contrastive model.

Explained in notebook 07, §CLIPScore. A caption ``c`` of an image ``v`` is good when a CLIP-like model puts their
embeddings close together, so no human reference is needed:

* **CLIPScore**, per (image, caption) pair: ``CLIP-S(c, v) = w * max(cos(E_c, E_v), 0)`` with ``w = 2.5``; the
  corpus score is the mean over pairs. Negative cosines count as 0, and ``w`` only rescales: the paper picks 2.5 to
  stretch the cosines it observed (roughly 0 to 0.4) over about [0, 1].
* **RefCLIPScore**, when human references ``R`` exist: ``RefCLIP-S(c, R, v) = H-Mean(CLIP-S(c, v),
  max(max_{r in R} cos(E_c, E_r), 0))``, the harmonic mean of CLIP-S and the best cosine between the caption and
  a reference (text against text, both through the text tower). The reference side is a plain cosine, **not**
  multiplied by ``w`` (the paper's formula, and ``get_refonlyclipscore`` of the reference code,
  jmhessel/clipscore). The reference code does not clip that side at 0 either; the paper's formula does, and so
  do we (the two differ only when every reference of an item has a negative cosine with the caption). A harmonic
  mean with a term at 0 is 0, including 0 and 0 (where the reference code divides 0 by 0).

Conventions to know when comparing numbers:

* The reference code prepends ``"A photo depicts "`` to every caption and reference (its CLIP read web alt-text);
  here texts are scored as given: add such a prefix yourself when the model was trained with one.
* ``torchmetrics``' ``CLIPScore`` reports ``100 * cos``, and clips the *mean* over a batch at 0 instead of every
  pair: per pair it is ``40 x`` our CLIP-S (with ``w = 2.5``), and so is its mean when no cosine is negative.
* A text longer than ``max_length`` is cut keeping its EOS as the last token (what the book's tokenizer does,
  and where CLIP pools the text); ``max_length`` defaults to the model's ``cfg.text.context_length``.

Model-agnostic as zero-shot classification is (:mod:`vlm_primer.evaluation.zeroshot`): anything with
``encode_image(pixel_values)`` and ``encode_text(input_ids, attention_mask=...)``, and a model whose image
embedding depends on the text (Llip) is scored with its own ``similarity``. The tokenizer is any callable
``tokenizer(list_of_str, max_length=...) -> {"input_ids", "attention_mask"}``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from vlm_primer.evaluation.zeroshot import build_classifier, zero_shot_classify
from vlm_primer.validate import check_int

__all__ = ["clip_score", "pair_cosines", "ref_clip_score"]


def _check_texts(texts: object, name: str) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a list of str (one per image), got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(text).__name__}")
    return list(texts)


def _check_pairs(images: object, captions: object) -> list[str]:
    captions = _check_texts(captions, "captions")
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor (N, C, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[0] != len(captions):
        raise ValueError(f"{images.shape[0]} images but {len(captions)} captions: one caption per image")
    if not captions:
        raise ValueError("captions is empty: nothing to score")
    return captions


def _check_references(references: object, n: int) -> list[list[str]]:
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise TypeError(f"references must be a list (one list of reference str per image), "
                        f"got {type(references).__name__}")
    if len(references) != n:
        raise ValueError(f"{n} captions but {len(references)} reference lists: one list per caption")
    out = []
    for i, refs in enumerate(references):
        if isinstance(refs, str):
            raise TypeError(f"references[{i}] must be a list of str, not one str ({refs!r}): wrap it in a list")
        refs = _check_texts(refs, f"references[{i}]")
        if not refs:
            raise ValueError(f"references[{i}] is empty: each caption needs at least one reference")
        out.append(refs)
    return out


def _check_options(w: object, batch_size: object) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)):
        raise TypeError(f"w must be a number, got {type(w).__name__}")
    if not (w > 0 and math.isfinite(w)):  # NaN fails too
        raise ValueError(f"w must be a positive finite number (the paper's is 2.5), got {w}")
    check_int(batch_size, "batch_size")
    return float(w)


def _text_embeddings(model: torch.nn.Module, tokenizer: Callable[..., dict], texts: list[str],
                     max_length: int | None, batch_size: int) -> torch.Tensor:
    """``(len(texts), D)`` L2-normalised text embeddings: a zero-shot classifier whose one template is the text
    itself has exactly these rows (same batching, device, eval mode and default ``max_length``)."""
    return build_classifier(model, tokenizer, texts, ("{}",), max_length=max_length, batch_size=batch_size).float()


def _image_text_cosines(model: torch.nn.Module, images: torch.Tensor, text: torch.Tensor,
                        batch_size: int) -> torch.Tensor:
    """``(N,)`` cosine of image ``i`` with text embedding ``i``: the diagonal of the zero-shot scores of each
    batch (which use the model's own ``similarity`` when it has one)."""
    return torch.cat([zero_shot_classify(model, images[s : s + batch_size], text[s : s + batch_size]).diagonal()
                      for s in range(0, images.shape[0], batch_size)])


def _harmonic_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``2ab / (a + b)`` for non-negative ``a``, ``b``; 0 where both are 0."""
    total = a + b
    return torch.where(total > 0, 2 * a * b / torch.where(total > 0, total, torch.ones_like(total)), 0.0)


def pair_cosines(
    model: torch.nn.Module,
    tokenizer: Callable[..., dict],
    images: torch.Tensor,
    captions: Sequence[str],
    *,
    max_length: int | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Cosine of image ``i`` with caption ``i``, ``(N,)``: CLIPScore's cosine before its weight and its clipping at
    0 (:func:`clip_score`; the caption probes of notebook 02 compare these). A model whose image embedding depends
    on the caption (Llip) scores each pair with its own ``similarity``. Explained in notebook 07, §CLIPScore."""
    captions = _check_pairs(images, captions)
    check_int(batch_size, "batch_size")
    text = _text_embeddings(model, tokenizer, captions, max_length, batch_size)
    return _image_text_cosines(model, images, text, batch_size)


def clip_score(
    model: torch.nn.Module,
    tokenizer: Callable[..., dict],
    images: torch.Tensor,
    captions: Sequence[str],
    *,
    w: float = 2.5,
    max_length: int | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """CLIPScore of each (image, caption) pair, ``(N,)`` on the CPU: ``w * max(cos(E_caption, E_image), 0)``.

    ``images`` ``(N, C, H, W)`` are already normalised for the model (e.g. ``zoo.preprocess(name)``), with
    ``captions`` one str per image; the corpus CLIPScore is the mean. Explained in notebook 07, §CLIPScore.
    """
    w = _check_options(w, batch_size)
    return w * pair_cosines(model, tokenizer, images, captions, max_length=max_length,
                            batch_size=batch_size).float().clamp(min=0)


def ref_clip_score(
    model: torch.nn.Module,
    tokenizer: Callable[..., dict],
    images: torch.Tensor,
    captions: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    w: float = 2.5,
    max_length: int | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """RefCLIPScore of each item, ``(N,)`` on the CPU: the harmonic mean of :func:`clip_score` and
    ``max(max_{r in references[i]} cos(E_caption, E_r), 0)`` (the reference side is not scaled by ``w``).

    ``references`` holds one non-empty list of human references per caption; the corpus RefCLIPScore is the mean.
    Explained in notebook 07, §CLIPScore.
    """
    captions = _check_pairs(images, captions)
    references = _check_references(references, len(captions))
    w = _check_options(w, batch_size)
    text = _text_embeddings(model, tokenizer, captions, max_length, batch_size)
    clip_s = w * _image_text_cosines(model, images, text, batch_size).float().clamp(min=0)
    flat = [r for refs in references for r in refs]
    ref_text = _text_embeddings(model, tokenizer, flat, max_length, batch_size)
    owner = torch.arange(len(captions)).repeat_interleave(torch.tensor([len(refs) for refs in references]))
    cosines = (text[owner.to(text.device)] * ref_text).sum(-1).cpu()  # cos(caption i, each reference of item i)
    best = torch.stack([c.max() for c in cosines.split([len(refs) for refs in references])])
    return _harmonic_mean(clip_s, best.clamp(min=0))
