"""The zoo's CLIPs for chapter 07's measurements that need a model trained on purpose: a planted bias and memorisation.

Explained in notebook 07, §Bias and §Memorization. Each is chapter 02's tiny CLIP (``clip-tiny``'s config and
optimiser: 2,000 steps of 32 pairs at 48 px, AdamW at 2e-3), trained on other data:

* ``clip-spurious-tiny``: one-object scenes whose background tint follows the shape's group 95 % of the time
  (:class:`~vlm_primer.evaluation.bias.SpuriousCaptionDataset`); ``clip-spurious-control-tiny``: the same at 50 %,
  where the tint says nothing (the control). Cards: the tint disparity and the WEAT association.
* ``clip-dejavu-a-tiny`` / ``clip-dejavu-b-tiny``: 100 fixed three-object pairs each (set A / set B of
  :func:`~vlm_primer.evaluation.memorization.dejavu_sets`), 640 passes over them, so that they can memorise;
  ``clip-dejavu-a-masked-tiny``: set A with text randomization (30 % of caption tokens masked at every batch).
  Cards: the recovery rate of the hidden object on the model's own captions and on the other set's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from vlm_primer.zoo.recipes import CONTEXT, WORLD, contrastive_config, normalizer, pixel_stats

SOURCES = ("vlm_primer.evaluation.bias:SpuriousCaptionDataset", "vlm_primer.evaluation.bias:tint_disparity",
           "vlm_primer.evaluation.bias:tint_association", "vlm_primer.evaluation.memorization:dejavu_sets",
           "vlm_primer.evaluation.memorization:_pairs", "vlm_primer.evaluation.memorization:recovery_rates",
           "vlm_primer.evaluation.memorization:PairDataset", "vlm_primer.evaluation.memorization:text_randomization",
           "vlm_primer.zoo.recipes:train_contrastive")
STEPS, BATCH, LR = 2000, 32, 2e-3
CORRELATION = {"clip-spurious-tiny": 0.95, "clip-spurious-control-tiny": 0.5}
DEJAVU_SIZE, DEJAVU_MASK = 100, 0.3


def _fit(model: nn.Module, data, collate, steps: int, seed: int, progress: bool, shuffle: bool) -> nn.Module:
    """``recipes.train_contrastive``'s Trainer settings on another dataset."""
    from vlm_primer.training import ResumableLoader, Trainer, TrainConfig

    config = TrainConfig(max_steps=steps, batch_size=BATCH, lr=LR, warmup_steps=min(20, steps // 5), weight_decay=0.2,
                         eps=1e-6, log_every=max(1, steps // 20), seed=seed, device="cpu", progress=progress,
                         live_plot=False)
    Trainer(model, ResumableLoader(data, BATCH, collate_fn=collate, shuffle=shuffle, seed=seed), config).fit()
    return model


def _clip() -> tuple[nn.Module, Any]:
    from vlm_primer.contrastive import CLIP
    from vlm_primer.text import Tokenizer
    from vlm_primer.utils import seed_everything

    seed_everything(0)
    tok = Tokenizer.load()
    return CLIP(contrastive_config("clip", tok)), tok


def train_spurious(correlation: float, steps: int = STEPS, seed: int = 0, progress: bool = False) -> nn.Module:
    """A fresh tiny CLIP on one-object scenes whose tint follows the shape with probability ``correlation``,
    in batches of distinct compositions (as ``clip-tiny``)."""
    from vlm_primer.contrastive.recipes import pair_collate
    from vlm_primer.evaluation.bias import SpuriousCaptionDataset
    from vlm_primer.world import WorldConfig

    model, tok = _clip()
    data = SpuriousCaptionDataset("train", steps * BATCH, WorldConfig(**WORLD), seed=seed, num_objects=1,
                                  num_paraphrases=1, statements=False, distinct=BATCH,
                                  transform=normalizer(*pixel_stats()), correlation=correlation)
    return _fit(model, data, pair_collate(tok, CONTEXT, WORLD["image_size"]), steps, seed, progress, shuffle=False)


def train_dejavu(which: str, mask: float = 0.0, steps: int = STEPS, seed: int = 0, progress: bool = False
                 ) -> nn.Module:
    """A fresh tiny CLIP on the 100 fixed pairs of set ``which`` ("a" or "b"), shuffled, with ``mask`` of the
    caption tokens masked at every batch (text randomization) if > 0."""
    from vlm_primer.contrastive.recipes import pair_collate
    from vlm_primer.evaluation.memorization import PairDataset, dejavu_sets, text_randomization

    model, tok = _clip()
    pairs = getattr(dejavu_sets(DEJAVU_SIZE, public=1), which)
    collate = pair_collate(tok, CONTEXT, WORLD["image_size"])
    if mask:
        collate = text_randomization(collate, mask, tok.mask_id, keep_ids=(tok.eos_id,), seed=seed)
    return _fit(model, PairDataset(pairs, normalizer(*pixel_stats())), collate, steps, seed, progress, shuffle=True)


def measure(name: str, model: nn.Module) -> dict[str, float]:
    """Spurious CLIPs: zero-shot top-1 on aligned and conflicting tints, their gap, and the WEAT effect size and
    p-value of tint against shape names. Déjà vu CLIPs: the hidden object's recovery rate (k = 50 of 3,000
    public scenes) on the model's own training captions and on the other set's, and their difference."""
    from vlm_primer.text import Tokenizer

    model, tok, pre = model.float().eval(), Tokenizer.load(), normalizer(*pixel_stats())
    if name in CORRELATION:
        from vlm_primer.evaluation.bias import tint_association, tint_disparity

        d = tint_disparity(model, pre, tok, n=480, max_length=CONTEXT)
        w = tint_association(model, pre, tok, n=200, n_resamples=1000, max_length=CONTEXT)
        out = {"aligned": d["aligned"], "conflicting": d["conflicting"], "gap": d["gap"],
               "shape_gap": d["shape_gap"], "tint_effect": w["effect_size"], "tint_p": w["p_value"]}
    else:
        from vlm_primer.evaluation.memorization import dejavu_sets, recovery_rates

        sets = dejavu_sets(DEJAVU_SIZE)
        own, other = ("a", "b") if "-a" in name else ("b", "a")
        rates = {k: float(np.mean(recovery_rates(model, pre, tok, getattr(sets, k), sets.public, k=50,
                                                 max_length=CONTEXT))) for k in (own, other)}
        out = {"rate_own": rates[own], "rate_other": rates[other], "rate_gap": rates[own] - rates[other]}
    return {k: round(float(v), 4) for k, v in out.items()}


def _spurious(name: str, steps: int | None, progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    model = train_spurious(CORRELATION[name], steps or STEPS, progress=progress)
    return model, measure(name, model)


def _dejavu(name: str, steps: int | None, progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    which = "b" if "-b-" in name else "a"
    model = train_dejavu(which, DEJAVU_MASK if "masked" in name else 0.0, steps or STEPS, progress=progress)
    return model, measure(name, model)


def clip_spurious_tiny(steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """``clip-tiny``'s recipe on tinted scenes, the tint following the shape's group 95 % of the time."""
    return _spurious("clip-spurious-tiny", steps, progress)


def clip_spurious_control_tiny(steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The control of ``clip-spurious-tiny``: the same tinted scenes, the tint independent of the shape (50 %)."""
    return _spurious("clip-spurious-control-tiny", steps, progress)


def clip_dejavu_a_tiny(steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The déjà vu target: 2,000 steps of 32 over the 100 pairs of set A."""
    return _dejavu("clip-dejavu-a-tiny", steps, progress)


def clip_dejavu_b_tiny(steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The déjà vu reference for set A (and target for set B): the same recipe on set B."""
    return _dejavu("clip-dejavu-b-tiny", steps, progress)


def clip_dejavu_a_masked_tiny(steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """``clip-dejavu-a-tiny`` with text randomization: 30 % of the caption tokens masked afresh at every batch."""
    return _dejavu("clip-dejavu-a-masked-tiny", steps, progress)


RECIPES = {"clip-spurious-tiny": clip_spurious_tiny, "clip-spurious-control-tiny": clip_spurious_control_tiny,
           "clip-dejavu-a-tiny": clip_dejavu_a_tiny, "clip-dejavu-b-tiny": clip_dejavu_b_tiny,
           "clip-dejavu-a-masked-tiny": clip_dejavu_a_masked_tiny}
