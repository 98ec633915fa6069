"""Boxes as tokens a causal VLM writes (survey §3.4.1): Kosmos-2's location tokens taught to the tiny LLaVA.

Chapter 06b (survey §3.4) explains it. Kosmos-2 (Peng et al. 2023) adds ``P x P`` location tokens to its language
model's vocabulary; a box is written as two of them, the bins of its corners
(:func:`~vlm_primer.recipes.grounding.box_to_location_tokens`), so the same next-token loss that teaches the model
to talk teaches it to point. Here:

* :func:`add_location_tokens` gives a LLaVA ``P²`` more tokens: a copy whose embedding table and output head have
  ``P²`` new rows after the ``V`` existing ones (the mean embedding plus a little noise; the old rows and every
  other weight unchanged), so token ``V + k`` is ``<patch_index_k>``;
* :func:`location_item` writes a training conversation, "<image>where is the red circle?" answered by the two
  location tokens and ``<|end|>`` (the only targets), in :func:`~vlm_primer.backbones.data.llava_collate`'s format;
* :func:`predict_boxes` reads a box back: greedy decoding restricted to the location tokens for two steps
  (top-left, then bottom-right), then the bins' centres (their outer edges where the two corners share a
  row or column).

Left out: Kosmos-2's markup (``<grounding>`` prompts, ``<phrase>...</phrase><object>...</object>`` around the two
tokens, a delimiter between several boxes): a question names the object and the answer is the bare pair. Kosmos-2
uses ``P = 32`` (1,024 location tokens); ``num_bins`` defaults to 16 here, and ``bench_kosmos.py`` (quoted in
chapter 06b) uses 8.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from vlm_primer.backbones.llava import IMAGE_TOKEN_ID, Llava
from vlm_primer.recipes.grounding import _check_bins, box_to_location_tokens, location_tokens_to_box

__all__ = ["LOCATION_PROMPT", "add_location_tokens", "location_base", "location_batches", "location_item",
           "predict_boxes"]

LOCATION_PROMPT = "where is {}?"


def add_location_tokens(model: Llava, num_bins: int = 16, seed: int = 0) -> Llava:
    """A copy of ``model`` whose language model has ``num_bins ** 2`` more tokens, ``<patch_index_0000>`` ... at ids
    ``V, V + 1, ...`` (``V`` the old vocabulary size). New rows of the embedding table and of the (untied) output
    head start at the mean of the old rows plus Gaussian noise of a tenth of their spread (seeded); everything else
    is copied. With a tied head, embedding and head share the head's new rows."""
    if not isinstance(model, Llava):
        raise TypeError(f"model must be a Llava, got {type(model).__name__}")
    n = _check_bins(num_bins) ** 2
    cfg = model.cfg.replace(text=model.cfg.text.replace(vocab_size=model.cfg.text.vocab_size + n))
    new = type(model)(cfg)
    state = model.state_dict()
    g = torch.Generator().manual_seed(seed)
    grown = {}
    for key in ("language_model.tok_emb.weight", "language_model.lm_head.weight"):
        old = state[key]
        rows = old.mean(0) + 0.1 * old.std(0) * torch.randn(n, old.shape[1], generator=g, dtype=old.dtype)
        grown[key] = torch.cat([old, rows])
    new.load_state_dict(state | grown)
    new.location_bins = num_bins  # read by location_base (a model loaded from disk: set it again)
    return new.to(next(model.parameters()).device)


def location_base(model: Llava, num_bins: int) -> int:
    """The id of ``<patch_index_0000>`` in a model made by :func:`add_location_tokens` with ``num_bins``."""
    if getattr(model, "location_bins", None) != _check_bins(num_bins):
        raise ValueError(f"this model has no {num_bins}x{num_bins} location tokens (its location_bins: "
                         f"{getattr(model, 'location_bins', None)}): make it with add_location_tokens")
    return model.cfg.text.vocab_size - num_bins ** 2


def location_item(item: dict[str, Any], tokenizer: Any, model: Llava, num_bins: int,
                  transform: Callable[[torch.Tensor], torch.Tensor] | None = None, *,
                  with_answer: bool = True, image_id: int = IMAGE_TOKEN_ID) -> dict[str, Any]:
    """A referring item (:func:`~vlm_primer.recipes.grounding.referring_items`) as a LLaVA training example:
    ``<|user|><image>where is {text}?<|end|><|assistant|>`` then, with ``with_answer``, the two location tokens
    of its box and ``<|end|>`` (the targets). Without: the prompt alone, ready for :func:`predict_boxes`."""
    from vlm_primer.backbones.data import prompt_ids

    base = location_base(model, num_bins)
    ids = prompt_ids(tokenizer, LOCATION_PROMPT.format(item["text"]), model.tokens_per_image, image_id)
    target = [False] * len(ids)
    if with_answer:
        answer = [base + int(k) for k in box_to_location_tokens(item["box"], num_bins)] + [tokenizer.end_id]
        ids, target = ids + answer, target + [True] * len(answer)
    image = item["image"] if transform is None else transform(item["image"])
    return {"input_ids": ids, "target": target, "image": image}


@torch.no_grad()
def predict_boxes(model: Llava, prompts: dict[str, torch.Tensor], num_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes ``(B, 4)`` (normalised corners) and their two location-token indices ``(B, 2)`` from a batch of
    prompts (:func:`location_item` with ``with_answer=False`` through ``llava_collate``: right-padded): at each of
    two steps the most likely *location* token after the prompt, the second restricted to bins that can be a
    bottom-right corner of the first (its row or below, its column or to the right), so every answer is a box."""
    base = location_base(model, num_bins)
    ids, mask, pixels = prompts["input_ids"], prompts["attention_mask"], prompts["pixel_values"]
    lengths = mask.sum(1)
    picked = []
    for _ in range(2):
        logits = model(ids, pixels, attention_mask=mask).logits
        last = logits[torch.arange(len(ids)), lengths - 1, base:base + num_bins ** 2]
        if picked:  # the bottom-right bin: in the top-left's row or below, in its column or to the right
            bins = torch.arange(num_bins ** 2, device=last.device)
            first = picked[0][:, None]
            ok = (bins // num_bins >= first // num_bins) & (bins % num_bins >= first % num_bins)
            last = last.masked_fill(~ok, float("-inf"))
        k = last.argmax(-1)
        picked.append(k)
        ids = torch.cat([ids, torch.zeros_like(ids[:, :1])], 1)
        mask = torch.cat([mask, torch.zeros_like(mask[:, :1])], 1)
        ids[torch.arange(len(ids)), lengths] = base + k
        mask[torch.arange(len(ids)), lengths] = 1
        lengths = lengths + 1
    tokens = torch.stack(picked, 1)
    boxes = torch.stack([location_tokens_to_box(t, num_bins) for t in tokens])
    return boxes, tokens


def location_batches(items: Sequence[dict[str, Any]], tokenizer: Any, model: Llava, num_bins: int,
                     transform: Callable | None, batch: int, *, with_answer: bool = True) -> list[dict[str, Any]]:
    """``items`` as :func:`location_item` examples collated into batches of ``batch`` (the last may be smaller);
    prompts (``with_answer=False``) come without ``labels``, ready for :func:`predict_boxes`."""
    from vlm_primer.backbones.data import llava_collate

    collate = llava_collate(model.cfg.text.pad_token_id)
    examples = [location_item(it, tokenizer, model, num_bins, transform, with_answer=with_answer) for it in items]
    batches = [collate(examples[i:i + batch]) for i in range(0, len(examples), batch)]
    if not with_answer:  # prompts: nothing to learn, so no labels
        for b in batches:
            del b["labels"]
    return batches
