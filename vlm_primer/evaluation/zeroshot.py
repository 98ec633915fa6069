"""Zero-shot classification with a contrastive model: class names -> prompts -> text classifier.

Explained in notebook 02, §Zero-shot classification (reused in notebook 07).

CLIP turns any set of class names into a linear classifier without training: each class is
described by prompts ("a photo of a {}."), the prompts are encoded by the text tower, and the
normalised mean of their embeddings (a *prompt ensemble*, Radford et al. 2021 §3.1.4) is the
class's weight vector. An image is assigned to the class whose weight has the highest cosine
similarity with its embedding.

Model-agnostic: anything with ``encode_image(pixel_values)`` and
``encode_text(input_ids, attention_mask=...)`` works (CLIP, SigLIP, ...). A model whose image
representation depends on the text (Llip) provides ``similarity(image_features, text_embeds)``,
which is then used instead of the cosine. The tokenizer is any callable
``tokenizer(list_of_str, max_length=...) -> {"input_ids": (B, L), "attention_mask": (B, L)}``
such as :class:`vlm_primer.text.Tokenizer`.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from vlm_primer.evaluation.retrieval import first_hit_rank

__all__ = ["build_classifier", "zero_shot_accuracy", "zero_shot_classify"]

Template = str | Callable[[str], str]


def _device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def fill_template(template: Template, classname: str) -> str:
    """A prompt for ``classname``: the template's ``{}`` or ``{c}`` slot filled, or the callable called."""
    if callable(template):
        return template(classname)
    if "{}" not in template and "{c}" not in template:
        raise ValueError(f"template {template!r} has no '{{}}' or '{{c}}' slot for the class name")
    return template.replace("{c}", classname).replace("{}", classname)


def _context_length(model: torch.nn.Module) -> int | None:
    cfg = getattr(model, "cfg", None)
    text = getattr(cfg, "text", None)
    return getattr(text, "context_length", None)


@torch.no_grad()
def build_classifier(
    model: torch.nn.Module,
    tokenizer: Callable[..., dict],
    classnames: Sequence[str],
    templates: Sequence[Template] = ("a photo of a {}.",),
    *,
    max_length: int | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Zero-shot classifier weights ``(num_classes, D)``, one L2-normalised row per class.

    For each class every template is filled in (``"a photo of a {}."`` or a callable), the prompts
    are encoded, each prompt embedding is L2-normalised, the class's embeddings are averaged over
    templates and the mean is normalised again. ``max_length`` defaults to the model's
    ``cfg.text.context_length`` when it has one.
    """
    if isinstance(classnames, str) or not len(classnames):
        raise ValueError("classnames must be a non-empty sequence of strings")
    if isinstance(templates, str) or not len(templates):
        raise ValueError("templates must be a non-empty sequence of templates (e.g. ['a photo of a {}.'])")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    max_length = max_length if max_length is not None else _context_length(model)
    prompts = [fill_template(t, c) for c in classnames for t in templates]
    device = _device(model)
    was_training = model.training
    model.eval()
    embeds = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        batch = tokenizer(chunk, max_length=max_length) if max_length is not None else tokenizer(chunk)
        ids = torch.as_tensor(batch["input_ids"], device=device)
        mask = batch.get("attention_mask")
        mask = torch.as_tensor(mask, device=device) if mask is not None else None
        embeds.append(F.normalize(model.encode_text(ids, attention_mask=mask).float(), dim=-1))
    model.train(was_training)
    per_prompt = torch.cat(embeds).view(len(classnames), len(templates), -1)
    return F.normalize(per_prompt.mean(dim=1), dim=-1)


@torch.no_grad()
def zero_shot_classify(
    model: torch.nn.Module, images: torch.Tensor, classifier: torch.Tensor, *, batch_size: int = 256
) -> torch.Tensor:
    """Class scores ``(N, num_classes)`` of ``images`` ``(N, C, H, W)`` against ``classifier``.

    The scores are cosine similarities (or the model's own ``similarity`` when it has one); the
    predicted class is the ``argmax``. No temperature is applied: it does not change the ranking.
    """
    if not isinstance(classifier, torch.Tensor) or classifier.ndim != 2:
        shape = tuple(classifier.shape) if isinstance(classifier, torch.Tensor) else type(classifier).__name__
        raise ValueError(f"classifier must be (num_classes, D) (from build_classifier), got {shape}")
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must have shape (N, C, H, W), got {shape}")
    if images.shape[0] == 0:
        raise ValueError(f"images is an empty batch (shape {tuple(images.shape)})")
    device = _device(model)
    classifier = classifier.to(device)
    was_training = model.training
    model.eval()
    scores = []
    for start in range(0, images.shape[0], batch_size):
        feats = model.encode_image(images[start : start + batch_size].to(device))
        if hasattr(model, "similarity"):
            scores.append(model.similarity(feats, classifier.to(feats.dtype)).float())
        else:
            if feats.ndim != 2 or feats.shape[1] != classifier.shape[1]:
                raise ValueError(
                    f"image embeddings {tuple(feats.shape)} do not match the classifier {tuple(classifier.shape)}"
                )
            scores.append(F.normalize(feats.float(), dim=-1) @ classifier.float().t())
    model.train(was_training)
    return torch.cat(scores).cpu()


def zero_shot_accuracy(
    model: torch.nn.Module,
    images: torch.Tensor | Iterable[tuple[torch.Tensor, torch.Tensor]],
    labels: torch.Tensor | Sequence[int] | None,
    classifier: torch.Tensor,
    *,
    topk: Sequence[int] = (1, 5),
    batch_size: int = 256,
) -> dict[str, float]:
    """Top-k zero-shot accuracy, ``{"top1": ..., "top5": ...}`` as fractions.

    ``images`` is an ``(N, C, H, W)`` tensor with ``labels`` ``(N,)``, or an iterable of
    ``(images, labels)`` batches (a ``DataLoader``; then pass ``labels=None``). A ``k`` larger than
    the number of classes counts every image as correct. Ties count against the model (see
    :mod:`vlm_primer.evaluation.retrieval`).
    """
    ks = tuple(topk)
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"topk must be positive ints, got {topk!r}")
    if isinstance(images, torch.Tensor):
        if labels is None:
            raise ValueError("labels are required when images is a tensor")
        batches: Iterable = [(images, labels)]
    else:
        if labels is not None:
            raise ValueError("pass labels=None when images is an iterable of (images, labels) batches")
        batches = images
    ranks = []
    for imgs, labs in batches:
        labs = torch.as_tensor(labs).long().flatten()
        if labs.shape[0] != imgs.shape[0]:
            raise ValueError(f"mismatched batch sizes: images={imgs.shape[0]}, labels={labs.shape[0]}")
        if labs.numel() and (labs.min() < 0 or labs.max() >= classifier.shape[0]):
            raise ValueError(f"labels must be in [0, {classifier.shape[0]}), got {labs.min()}..{labs.max()}")
        scores = zero_shot_classify(model, imgs, classifier, batch_size=batch_size)
        correct = F.one_hot(labs, classifier.shape[0]).bool()
        ranks.append(first_hit_rank(scores, correct))
    if not ranks:
        raise ValueError("no images to evaluate")
    rank = torch.cat(ranks)
    return {f"top{k}": (rank < k).float().mean().item() for k in ks}
