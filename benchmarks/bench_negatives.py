"""Chapter 06b's hard-negative experiment across seeds: CLIP against NegCLIP at an equal budget.

    python benchmarks/bench_negatives.py --seeds 0 1 2 --jobs 2    # about 6 minutes on 2 cores

A quality benchmark, not a speed one. Two settings, each with a CLIP arm and a NegCLIP arm at the same budget:
*scratch* trains a fresh CLIP with chapter 02's tiny towers (`vlm_primer.zoo.recipes.contrastive_config`, 48 px,
AdamW at 2e-3) for `STEPS` random batches of 32 pairs of one- or two-object scenes (the data of `clip-tiny-pairs`);
*fine-tune* starts from the zoo's `clip-tiny-pairs` and trains `FT_STEPS` more batches at `FT_LR`, as the paper
fine-tunes a pretrained CLIP. NegCLIP's batches also carry each caption's hard negative
(chapter 01's `hard_negative`: an attribute, object or order swap, false of the image) and train with
`vlm_primer.recipes.negatives.negclip_loss`. Each run reports the evaluation harness's ARO-style suite (score and
per-type breakdown, with its blind text prior), chapter 02's binding probe (the true caption against a one-word
replacement, the control, and against a binding swap) and zero-shot top-1 over the 48 colour-shape names (the cost).
It writes `benchmarks/results/negatives.json`, with a reduced run (`CHECK`) that `tests/test_bench_negatives.py`
repeats.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fit_contrastive, seed_parser, write_seed_runs  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "negatives.json"
STEPS, BATCH = 1000, 32
FT_STEPS, FT_LR = 300, 2e-4
ARMS = ("clip", "negclip", "clip_ft", "negclip_ft")
CHECK = dict(steps=3)


def run(job: tuple) -> dict:
    """One arm at one seed: ``(arm, seed, steps)``."""
    import torch

    torch.set_num_threads(1)
    from vlm_primer.contrastive import CLIP
    from vlm_primer.evaluation import evaluate, wrap
    from vlm_primer.recipes.negatives import NegCLIP, negative_collate
    from vlm_primer.text import Tokenizer
    from vlm_primer.utils import seed_everything
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig
    from vlm_primer.zoo import recipes

    arm, seed, steps = job
    start = time.perf_counter()
    from vlm_primer import zoo

    seed_everything(seed)
    tok = Tokenizer.load()
    finetune = arm.endswith("_ft")
    clip = zoo.load("clip-tiny-pairs").float().train().requires_grad_(True) if finetune else CLIP(
        recipes.contrastive_config("clip", tok))
    model = NegCLIP(clip) if arm.startswith("negclip") else clip
    steps = min(steps, FT_STEPS) if finetune else steps
    pre = recipes.normalizer(*recipes.pixel_stats())
    data = ShapesCaptionDataset("train", steps * BATCH, WorldConfig(**recipes.WORLD), seed=seed, num_objects=(1, 2),
                                num_paraphrases=1, statements=False, negatives=True, transform=pre)
    collate = negative_collate(tok, recipes.CONTEXT, recipes.WORLD["image_size"])
    if not arm.startswith("negclip"):  # the same batches, the negatives dropped
        collate = _drop_negatives(collate)
    fit_contrastive(model, data, collate, steps, seed, lr=FT_LR if finetune else 2e-3, batch=BATCH)
    clip = clip.float().eval()
    aro = evaluate(wrap(clip, transform=pre, world=recipes.WORLD, name=arm), "aro", n=100, seed=0, keep_items=False)
    out = {"arm": arm, "seed": seed, "aro": aro["score"], "aro_ci95": aro["ci95"], "aro_blind": aro["blind"]["score"],
           "aro_by_type": {k: v["score"] for k, v in aro["breakdown"].items()},
           **recipes.binding_scores(clip, tok), "zero_shot_top1": recipes.zero_shot_top1(clip, tok),
           "seconds": round(time.perf_counter() - start, 1)}
    print(f"  done {arm} seed {seed}: ARO {out['aro']:.3f}, zero-shot {out['zero_shot_top1']:.3f} "
          f"in {out['seconds']} s", flush=True)
    return out


def _drop_negatives(collate):
    def plain(samples):
        batch = collate(samples)
        batch.pop("negative_ids")
        batch.pop("negative_mask")
        return batch

    return plain


def main() -> None:
    import numpy as np

    ap = seed_parser(__doc__)
    args = ap.parse_args()
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(run, [(a, s, STEPS) for s in args.seeds for a in ARMS]))
        check = list(pool.map(run, [(a, 0, CHECK["steps"]) for a in ARMS]))
    write_seed_runs(OUT, "bench_negatives.py", args.seeds, args.jobs, start, runs, steps=STEPS, batch=BATCH,
                    ft_steps=FT_STEPS, ft_lr=FT_LR,
                    check=[{k: v for k, v in r.items() if k != "seconds"} for r in check], check_size=CHECK)
    for arm in ARMS:
        for key in ("aro", "binding_swap_win", "replace_control_win", "zero_shot_top1"):
            vals = [r[key] for r in runs if r["arm"] == arm]
            print(f"{arm:8s} {key:20s} mean {np.mean(vals):.3f} (min {min(vals):.3f}, max {max(vals):.3f})")
    print(json.dumps({r["arm"]: r["aro_by_type"] for r in runs if r["seed"] == args.seeds[0]}))


if __name__ == "__main__":
    main()
