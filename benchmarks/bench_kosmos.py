"""Chapter 06b's boxes-as-tokens experiment across seeds: the tiny LLaVA taught Kosmos-2's location tokens.

    python benchmarks/bench_kosmos.py --seeds 0 1 2 --jobs 2    # about 15 minutes on 2 cores

A quality benchmark, not a speed one. Each run starts from the zoo's ``llava-tiny``, gives its language model
``BINS x BINS`` location tokens (:func:`vlm_primer.recipes.kosmos.add_location_tokens`) and trains it, stage 2 with
the vision tower unfrozen (X-VLM's grounder trains its towers too), for ``STEPS`` steps of ``BATCH`` referring
expressions of chapter 06b's grounding world (``TRAIN_ITEMS`` of
:func:`~vlm_primer.recipes.grounding.referring_items`, seed 1 + the run's seed, half relational, in passes: the
budget of ``grounder-tiny``), AdamW at ``LR`` with a one-cycle schedule: "<image>where is the red circle left of
the blue square?" answered by two location tokens and ``<|end|>``. It reports the referring accuracy (IoU >= 0.5)
on ``grounder-tiny``'s 600 held-out expressions (:func:`vlm_primer.zoo.grounding_recipes.test_items`), by kind,
read with :func:`~vlm_primer.recipes.kosmos.predict_boxes`; the ceiling that ``BINS`` bins allow (the true boxes
written as tokens and read back); the largest-object control; the accuracy along training (``curve``); and the
tokens it wrote for the first ``SHOW`` held-out items, which chapter 06b draws. It writes
``benchmarks/results/kosmos.json`` with a reduced run (``CHECK``) that ``tests/test_bench_kosmos.py`` repeats.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import seed_parser, write_seed_runs  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "kosmos.json"
BINS, STEPS, BATCH, LR, TRAIN_ITEMS = 8, 3000, 32, 1e-3, 24_000
TEST, SHOW, EVAL_EVERY = 600, 10, 500
CHECK = dict(steps=3, test=60)


def _accuracy(model, prompts, items, true, bins):
    import torch

    from vlm_primer.recipes import kosmos as K
    from vlm_primer.recipes.grounding import referring_accuracy_by_kind

    model.eval()
    boxes, tokens = (torch.cat(x) for x in zip(*[K.predict_boxes(model, b, bins) for b in prompts]))
    model.train()
    scores = referring_accuracy_by_kind(boxes, true, [it["kind"] for it in items])
    return {"referring_accuracy" + ("" if k == "all" else f"_{k}"): v for k, v in scores.items()}, tokens


def run(job: tuple, *, test: int = TEST) -> dict:
    """One run: ``(seed, steps)``."""
    import torch

    torch.set_num_threads(1)
    from vlm_primer import zoo
    from vlm_primer.backbones.data import llava_collate
    from vlm_primer.recipes import kosmos as K
    from vlm_primer.recipes.grounding import (box_to_location_tokens, largest_object_baseline, location_tokens_to_box,
                                              referring_accuracy, referring_items)
    from vlm_primer.text import Tokenizer
    from vlm_primer.utils import seed_everything
    from vlm_primer.zoo import grounding_recipes

    seed, steps = job
    start = time.perf_counter()
    seed_everything(seed)
    tok, transform = Tokenizer.load(), zoo.preprocess("llava-tiny")
    model = K.add_location_tokens(zoo.load("llava-tiny"), BINS, seed=seed)
    items = grounding_recipes.test_items(test)
    true = torch.stack([it["box"] for it in items])
    prompts = K.location_batches(items, tok, model, BINS, transform, 100, with_answer=False)
    ceiling = torch.stack([location_tokens_to_box(box_to_location_tokens(b, BINS), BINS) for b in true])
    train = referring_items(min(TRAIN_ITEMS, steps * BATCH), grounding_recipes.world(), seed=1 + seed)
    collate = llava_collate(model.cfg.text.pad_token_id)
    model.set_stage(2, train_vision=True)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.1)
    curve, losses = [], []
    for step in range(steps):
        first = step * BATCH % len(train)  # passes over the items in order, as grounder-tiny's recipe sees them
        chunk = [train[(first + k) % len(train)] for k in range(BATCH)]
        batch = collate([K.location_item(it, tok, model, BINS, transform) for it in chunk])
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % EVAL_EVERY == 0 and step + 1 < steps:
            curve.append((step + 1, round(_accuracy(model, prompts, items, true, BINS)[0]["referring_accuracy"], 4)))
    scores, tokens = _accuracy(model, prompts, items, true, BINS)
    curve.append((steps, round(scores["referring_accuracy"], 4)))
    control = largest_object_baseline([it["scene"] for it in items], grounding_recipes.world().image_size)
    out = {"seed": seed, "steps": steps, **scores, "ceiling": referring_accuracy(ceiling, true),
           "largest_object_baseline": referring_accuracy(control, true),
           "train_loss": sum(losses[-20:]) / len(losses[-20:]), "curve": curve,
           "shown": [{"index": i, "text": items[i]["text"], "tokens": tokens[i].tolist()} for i in range(SHOW)],
           "seconds": round(time.perf_counter() - start, 1)}
    print(f"  done seed {seed}: referring accuracy {out['referring_accuracy']:.3f} (ceiling {out['ceiling']:.3f}, "
          f"control {out['largest_object_baseline']:.3f}) in {out['seconds']} s", flush=True)
    return out


def main() -> None:
    import numpy as np

    ap = seed_parser(__doc__)
    args = ap.parse_args()
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        full = [pool.submit(run, (s, STEPS)) for s in args.seeds]
        check = pool.submit(run, (0, CHECK["steps"]), test=CHECK["test"])
        runs = [f.result() for f in full]
        check = check.result()
    write_seed_runs(OUT, "bench_kosmos.py", args.seeds, args.jobs, start, runs, bins=BINS, steps=STEPS, batch=BATCH,
                    lr=LR, optimizer="AdamW, no weight decay, one-cycle, tower trained", test=TEST,
                    check={k: v for k, v in check.items() if k != "seconds"}, check_size=CHECK)
    acc = np.array([r["referring_accuracy"] for r in runs])
    print(f"referring accuracy {acc.round(3)} (mean {acc.mean():.3f}); ceiling {runs[0]['ceiling']:.3f}; control "
          f"{runs[0]['largest_object_baseline']:.3f}")


if __name__ == "__main__":
    main()
