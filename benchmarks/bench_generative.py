"""Chapter 04's findings across seeds: the runs too long for the chapter, whose numbers it quotes.

    python benchmarks/bench_generative.py --seeds 0 1 2 --jobs 2    # about 50 minutes on 2 cores

A quality benchmark, not a speed one; one thread per run. It writes `benchmarks/results/generative.json` (read by
notebook 04, which plots it and prints this command):

* `models`: `blip-tiny` and `coca-tiny` per seed (seed 0 is the zoo file, the others retrained with the zoo's
  recipe, `vlm_primer.zoo.generative_recipes`): zero-shot top-1, CIDEr-D, objects named, and the binding probe
  through ITC and (BLIP) ITM;
* `capfilt`: BLIP's CapFilt replicated. A pool of 12,000 training scenes whose captions are 30 % wrong (a wrong
  attribute, a wrong object, an unrelated caption, in turn); BLIP trained on it for 2,000 steps ("noisy"); a copy
  fine-tuned for 300 steps on 1,000 clean pairs (BLIP fine-tunes its captioner and filter on COCO) captions every
  pool image once (nucleus, p = 0.9) and filters originals and synthetic captions with ITM (threshold 0.5); a
  fresh BLIP trained for 2,000 steps on the kept pairs ("bootstrapped"). Reported: the filter's precision and
  recall against the planted errors, and both models' figures.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import write_seed_runs

OUT = Path(__file__).resolve().parent / "results" / "generative.json"
POOL, NOISE, STEPS, CLEAN, FINETUNE = 12_000, 0.3, 2000, 1000, 300


def model_run(kind: str, seed: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from vlm_primer import zoo
    from vlm_primer.zoo import generative_recipes as g

    model = zoo.load(f"{kind}-tiny") if seed == 0 else g.train(kind, seed=seed)
    return {"part": "models", "model": kind, "seed": seed, **g.measure(f"{kind}-tiny", model)}


class Pairs(list):
    """A list of ``{"image", "caption"}`` items: a map-style dataset."""


def capfilt_run(seed: int) -> dict:
    import copy

    import torch

    torch.set_num_threads(1)
    from vlm_primer.generative import Blip
    from vlm_primer.generative.capfilt import capfilt, corrupt_captions, filter_report
    from vlm_primer.text import Tokenizer
    from vlm_primer.utils import seed_everything
    from vlm_primer.zoo import generative_recipes as g

    start = time.perf_counter()
    ds = g.caption_dataset("train", POOL, seed=100 + seed, num_paraphrases=1)
    items = [ds[i] for i in range(POOL)]
    noisy = corrupt_captions(items, NOISE, seed=seed)
    images = torch.stack([it["image"] for it in items])
    seed_everything(seed)
    model = Blip(g.tiny_config("blip"))
    g.train_captioner(model, STEPS, seed=seed, data=Pairs({"image": it["image"], "caption": it["caption"]}
                                                          for it in noisy))
    clean = g.caption_dataset("val", CLEAN, seed=200 + seed, num_paraphrases=1)
    tuned = copy.deepcopy(model)
    g.train_captioner(tuned, FINETUNE, seed=seed, data=clean)
    tok, out = Tokenizer.load(), {"part": "capfilt", "seed": seed}
    for name, filt in (("noisy_filter", model), ("tuned_filter", tuned)):
        result = capfilt(tuned, filt.eval(), images, [it["caption"] for it in noisy], tok, num_samples=1,
                         generator=torch.Generator().manual_seed(seed))
        report = filter_report(result, [it["corruption"] for it in noisy])
        out[name] = {k: round(v, 4) for k, v in report.items()}
        out[name]["synthetic_kept"] = round(float(result.keep_synthetic.float().mean()), 4)
        out[name]["synthetic_correct"] = round(sum(g.names_objects(c[0], it["scene"])
                                                   for c, it in zip(result.synthetic, items)) / POOL, 4)
        if name == "tuned_filter":
            kept = result.pairs()
    out["kept_pairs"] = len(kept)
    out["noisy"] = g.measure("blip-tiny", model)
    seed_everything(seed)
    boot = Blip(g.tiny_config("blip"))
    g.train_captioner(boot, STEPS, seed=seed, data=Pairs({"image": images[i], "caption": c} for i, c in kept))
    out["bootstrapped"] = g.measure("blip-tiny", boot)
    out["minutes"] = round((time.perf_counter() - start) / 60, 1)
    print(f"capfilt seed {seed}: {out['tuned_filter']} noisy {out['noisy']} boot {out['bootstrapped']}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2)
    ns = p.parse_args()
    start = time.perf_counter()
    with ProcessPoolExecutor(ns.jobs) as pool:
        futures = [pool.submit(capfilt_run, s) for s in ns.seeds]
        futures += [pool.submit(model_run, kind, s) for kind in ("blip", "coca") for s in ns.seeds]
        runs = [f.result() for f in futures]
    for r in runs:
        if r["part"] == "models":
            print(r)
    write_seed_runs(OUT, "bench_generative.py", ns.seeds, ns.jobs, start, runs, pool=POOL, noise=NOISE,
                    steps=STEPS, clean=CLEAN, finetune=FINETUNE)


if __name__ == "__main__":
    main()
