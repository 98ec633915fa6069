"""CapFilt: bootstrap a cleaner caption set out of noisy image-text pairs with a captioner and a filter.

Explained in notebook 04, §CapFilt (Li et al. 2022, "BLIP", §3.3). Web alt-text is often wrong about its image.
BLIP fine-tunes two copies of a pre-trained model on a small clean set: the **captioner** (the image-grounded
decoder) writes synthetic captions for the web images with nucleus sampling, and the **filter** (the
image-grounded encoder's ITM head) removes every caption, original or synthetic, that it judges not to match its
image. The kept pairs form a new training set.

Shapes World knows which captions are wrong, so :func:`corrupt_captions` plants the web's kinds of error at a known
rate (a wrong attribute, a wrong object, an unrelated caption) and :func:`filter_report` measures the filter
against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from vlm_primer.generative.captioner import with_bos
from vlm_primer.validate import check_finite

__all__ = ["CORRUPTIONS", "WEB_NOISE", "CapFiltResult", "capfilt", "corrupt_captions", "filter_report",
           "removal_report"]

CORRUPTIONS = ("attribute", "object", "unrelated")
#: Chapter 06's kinds of web noise: CapFilt's three and a caption cut short ("a large red" for "a large red circle").
WEB_NOISE = CORRUPTIONS + ("truncated",)


def _replacement_kind(true, edited) -> str | None:
    """``attribute`` or ``object`` when ``edited`` changes one noun phrase's colour/size or its shape."""
    from vlm_primer.world.negatives import _nps

    pairs = [(a, b) for a, b in zip(_nps(true), _nps(edited)) if a != b]
    if len(_nps(true)) != len(_nps(edited)) or len(pairs) != 1:
        return None
    a, b = pairs[0]
    return "object" if a.shape != b.shape else "attribute"


def _corrupt(item: dict[str, Any], kind: str, rng: np.random.Generator, others: Sequence[str],
             margin: float) -> str | None:
    from vlm_primer.world.language import caption_scene, holds, realize
    from vlm_primer.world.negatives import candidates

    if kind == "unrelated":
        wrong = [c for c in others if c != item["caption"]]
        return wrong[int(rng.integers(len(wrong)))] if wrong else None
    if kind == "truncated":
        words = item["caption"].split()
        return " ".join(words[:int(rng.integers(min(2, len(words) - 1), len(words)))]) if len(words) > 1 else None
    caption = caption_scene(item["scene"], rng, "objects", margin)
    edits = [m for m in candidates(caption.meaning, "replace", item["scene"])
             if not holds(m, item["scene"], margin) and _replacement_kind(caption.meaning, m) == kind]
    if not edits:
        return None
    return realize(edits[int(rng.integers(len(edits)))], caption.style, caption.template)


def corrupt_captions(items: Sequence[dict[str, Any]], fraction: float, kinds: Sequence[str] = CORRUPTIONS,
                     seed: int = 0, margin: float = 0.0) -> list[dict[str, Any]]:
    """Copies of Shapes World ``items`` (with ``caption`` and ``scene``) where ``fraction`` of the captions are
    made false of their image, the kinds taking turns: ``attribute`` (one colour or size word wrong), ``object``
    (one shape wrong), ``unrelated`` (another image's caption), and with ``kinds`` including it, ``truncated``
    (the caption cut after a random word from the second on, as web alt-text often is; chapter 06). Each copy gets ``corruption``: its kind, or ``""``
    for a caption left true. An item whose kind cannot apply gets an unrelated caption instead."""
    check_finite(fraction, "fraction")
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    unknown = sorted(set(kinds) - set(WEB_NOISE))
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {WEB_NOISE}, got {list(kinds)}")
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(items))[:round(fraction * len(items))]
    captions = [it["caption"] for it in items]
    out = [dict(it, corruption="") for it in items]
    for turn, i in enumerate(chosen):
        kind = kinds[turn % len(kinds)]
        text = _corrupt(items[i], kind, rng, captions, margin)
        if text is None and kind != "unrelated":
            kind, text = "unrelated", _corrupt(items[i], "unrelated", rng, captions, margin)
        if text is not None:
            out[i].update(caption=text, corruption=kind)
    return out


@dataclass
class CapFiltResult:
    """What CapFilt made of ``N`` images: per image the ``original`` caption and ``synthetic`` ones, their ITM
    match probabilities, and which of each the filter kept (``score >= threshold``)."""

    original: list[str]
    synthetic: list[list[str]]
    original_score: torch.Tensor        # (N,)
    synthetic_score: torch.Tensor       # (N, S)
    threshold: float

    @property
    def keep_original(self) -> torch.Tensor:
        return self.original_score >= self.threshold

    @property
    def keep_synthetic(self) -> torch.Tensor:
        return self.synthetic_score >= self.threshold

    def pairs(self) -> list[tuple[int, str]]:
        """The bootstrapped dataset: ``(image index, caption)`` for every kept caption, original ones first."""
        kept = [(i, c) for i, (c, k) in enumerate(zip(self.original, self.keep_original.tolist())) if k]
        for i, (caps, keep) in enumerate(zip(self.synthetic, self.keep_synthetic.tolist())):
            kept += [(i, c) for c, k in zip(caps, keep) if k]
        return kept


@torch.no_grad()
def capfilt(captioner: torch.nn.Module, filter_model: torch.nn.Module, images: torch.Tensor, captions: Sequence[str],
            tokenizer: Any, *, num_samples: int = 1, top_p: float = 0.9, threshold: float = 0.5,
            batch_size: int = 128, max_new_tokens: int = 20, generator: torch.Generator | None = None) -> CapFiltResult:
    """Run CapFilt on ``images`` ``(N, 3, H, W)`` with their (noisy) ``captions``: ``captioner.generate`` samples
    ``num_samples`` captions per image (nucleus, ``top_p``), ``filter_model.itm_scores`` scores every original and
    synthetic caption against its image (an empty synthetic caption scores 0). The two may be one BLIP model, as in
    our small replication. BLIP's ``generate(sample=True)`` also sets a repetition penalty (1.1), a minimum length
    and the prompt "a picture of "; ours samples from the captioner's own prompt without them."""
    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    check_finite(threshold, "threshold")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold is a match probability in [0, 1], got {threshold}")
    tok = with_bos(tokenizer)
    synthetic, scores, synth_scores = [], [], []
    for start in range(0, len(images), batch_size):
        px, caps = images[start:start + batch_size], list(captions[start:start + batch_size])
        made = captioner.captions(px, tokenizer, strategy="nucleus", top_p=top_p, repeats=num_samples,
                                  max_new_tokens=max_new_tokens, generator=generator)
        made = [made[i * num_samples:(i + 1) * num_samples] for i in range(len(px))]
        synthetic += made
        enc = tok(caps)
        scores.append(filter_model.itm_scores(px, enc["input_ids"], enc["attention_mask"]))
        flat = [c for row in made for c in row]
        enc = tok([c or "." for c in flat])   # an empty caption is scored as "." and then given 0: never kept
        s = filter_model.itm_scores(px.repeat_interleave(num_samples, 0), enc["input_ids"], enc["attention_mask"])
        s = s.masked_fill(torch.tensor([not c for c in flat], device=s.device), 0.0)
        synth_scores.append(s.view(len(px), num_samples))
    return CapFiltResult(list(captions), synthetic, torch.cat(scores), torch.cat(synth_scores), threshold)


def filter_report(result: CapFiltResult, corruption: Sequence[str]) -> dict[str, float]:
    """The filter against the planted errors (``corruption[i]``: a kind, or ``""`` for a true caption):
    :func:`removal_report` of the original captions the filter removed."""
    return removal_report((~result.keep_original).tolist(), corruption)


def removal_report(removed: Sequence[bool], labels: Sequence[str]) -> dict[str, float]:
    """A cleaning method against known labels (``labels[i]``: the kind of problem of item ``i``, or ``""`` for a
    good one): the **precision** and **recall** of "removed" for the bad items, the share of good items kept
    (``clean_kept``), and the recall for each kind of problem (``recall_<kind>``). Used for CapFilt's filter
    (notebook 04) and for chapter 06's noise filters and deduplication."""
    removed, bad = [bool(r) for r in removed], [c != "" for c in labels]
    if len(bad) != len(removed):
        raise ValueError(f"{len(removed)} removal flags but {len(bad)} labels: one label per item")
    tp = sum(r and b for r, b in zip(removed, bad))
    out = {"precision": tp / max(1, sum(removed)), "recall": tp / max(1, sum(bad)),
           "clean_kept": sum(not r for r, b in zip(removed, bad) if not b) / max(1, len(bad) - sum(bad))}
    for kind in sorted({c for c in labels if c}):
        rows = [r for r, c in zip(removed, labels) if c == kind]
        out[f"recall_{kind}"] = sum(rows) / len(rows)
    return out
