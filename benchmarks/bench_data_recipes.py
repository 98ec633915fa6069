"""Chapter 06's data experiments across seeds: the training runs too long for the chapter, whose numbers it quotes.

    python benchmarks/bench_data_recipes.py --seeds 0 1 2 --jobs 2    # about 40 minutes on 2 cores

A quality benchmark, not a speed one. Every run trains a fresh CLIP with chapter 02's tiny towers
(`vlm_primer.zoo.recipes.contrastive_config`, 48 px one-object scenes, AdamW at 2e-3) for the same budget,
`STEPS` random batches of 32 pairs, on other data, and reports its zero-shot top-1 over the 48 colour-shape
names on 480 test scenes. It writes `benchmarks/results/data_recipes.json` (read by notebook 06) with:

* `balance`: shapes drawn uniformly or by a Zipf law (exponent 2, ranks shuffled by the seed): per-shape
  training count and zero-shot accuracy (survey §3.1.1, §4.2.4);
* `hparams`: the uniform data at 36 and 72 px (the patch stays 6 px) and with a 32- and 128-wide image tower,
  beside the 48 px, 64-wide `uniform` run (notebook 06 prices each with `vlm_primer.recipes.compute`; §3.2.4);
* `dedup`: a pool of 4,000 unique pairs, the same size with half of it 20 copies each of 100 pairs, and that pool
  after exact deduplication (§3.1.2);
* `pruning`: a pool of 4,000 pairs, 40 % with web-like noise, trained on whole, after CLIPScore filtering
  (`clip-tiny` as the filter, keeping 40/60/80 %), after random pruning to 60 % (the control) and on its
  clean 60 % (the oracle); the filter's precision and recall against the planted noise;
* `synthetic`: the same noisy pool with every caption replaced by `blip-tiny`'s greedy caption, and with
  only the captions CLIPScore ranks in the bottom 40 % replaced (§3.1.3); how many training captions are true.

A reduced run of every arm (`CHECK`) is stored too; `tests/test_bench_data_recipes.py` reruns it and compares.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fit_contrastive, seed_parser, write_seed_runs  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "data_recipes.json"
STEPS, BATCH, POOL = 1000, 32, 4000
ZIPF = 2.0
NOISE = 0.4
HPARAMS = {"res36": dict(image_size=36), "res72": dict(image_size=72), "width32": dict(dim=32),
           "width128": dict(dim=128)}
ARMS = {"balance": ("uniform", "zipf"), "hparams": tuple(HPARAMS),
        "dedup": ("unique", "duplicated", "deduplicated"),
        "pruning": ("all", "top0.4", "top0.6", "top0.8", "random0.6", "oracle"),
        "synthetic": ("recaption", "recaption_bottom0.4")}
CHECK = dict(steps=3, pool=128)   # the reduced run the test repeats


def _zero_shot(model, image_size: int = 48):
    """Per test scene: right or wrong (48-way, chapter 02's prompt ensemble), and its shape."""
    import torch

    from vlm_primer.evaluation import build_classifier, zero_shot_classify
    from vlm_primer.text import Tokenizer
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig
    from vlm_primer.zoo.recipes import CONTEXT, ZERO_SHOT_TEMPLATES, normalizer, pixel_stats

    ds = ShapesCaptionDataset("test", 480, WorldConfig(image_size=image_size, sizes=("large",)), num_objects=1,
                              statements=False, transform=normalizer(*pixel_stats()))
    items = [ds[i] for i in range(len(ds))]
    model = model.float().eval()
    clf = build_classifier(model, Tokenizer.load(), ds.classnames, list(ZERO_SHOT_TEMPLATES), max_length=CONTEXT)
    with torch.no_grad():
        pred = zero_shot_classify(model, torch.stack([it["image"] for it in items]), clf).argmax(1).tolist()
    return [p == it["label_id"] for p, it in zip(pred, items)], [it["scene"].objects[0].shape for it in items]


def _fit(data, steps: int, seed: int, **vision):
    """A fresh tiny CLIP (``vision`` changes its image tower) trained on ``data`` for ``steps`` random batches."""
    from vlm_primer.contrastive import CLIP
    from vlm_primer.contrastive.recipes import pair_collate
    from vlm_primer.text import Tokenizer
    from vlm_primer.utils import seed_everything
    from vlm_primer.zoo.recipes import CONTEXT, contrastive_config

    seed_everything(seed)
    tok = Tokenizer.load()
    cfg = contrastive_config("clip", tok)
    model = CLIP(cfg.replace(vision=cfg.vision.replace(**vision)) if vision else cfg)
    fit_contrastive(model, data, pair_collate(tok, CONTEXT, model.cfg.vision.image_size), steps, seed, batch=BATCH)
    return model


class _Items:
    """A list of ``{"image", "caption"}`` items as a dataset, images normalised once."""

    def __init__(self, items, transform) -> None:
        self.items = [{"image": transform(it["image"]), "caption": it["caption"]} for it in items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def _pool(seed: int, n: int):
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig
    from vlm_primer.zoo.recipes import WORLD

    ds = ShapesCaptionDataset("train", n, WorldConfig(**WORLD), seed=1000 + seed, num_objects=1, statements=False)
    return [ds[i] for i in range(n)]


def _noisy_pool(seed: int, n: int):
    """The pruning and synthetic pool: ``n`` pairs, ``NOISE`` of them corrupted, and CLIPScore by ``clip-tiny``."""
    import torch

    from vlm_primer.evaluation.clipscore import clip_score
    from vlm_primer.recipes.data import inject_noise
    from vlm_primer.text import Tokenizer
    from vlm_primer.zoo import load
    from vlm_primer.zoo.recipes import CONTEXT, normalizer, pixel_stats

    items = inject_noise(_pool(seed, n), NOISE, seed=seed)
    pre = normalizer(*pixel_stats())
    scores = clip_score(load("clip-tiny"), Tokenizer.load(), torch.stack([pre(it["image"]) for it in items]),
                        [it["caption"] for it in items], max_length=CONTEXT)
    return items, scores


def _data(part: str, arm: str, seed: int, steps: int, pool: int) -> tuple[object, dict, dict]:
    """The training set of one arm, what the results file records of it, and the image tower's changes."""
    import numpy as np

    from vlm_primer.recipes import data as D
    from vlm_primer.world import WorldConfig
    from vlm_primer.zoo.recipes import WORLD, normalizer, pixel_stats

    pre = normalizer(*pixel_stats())
    if part in ("balance", "hparams"):
        vision = HPARAMS.get(arm, {})
        world = WorldConfig(**dict(WORLD, image_size=vision.get("image_size", 48)))
        ds = D.ConceptFrequencyDataset(steps * BATCH, world, concept="shape", exponent=ZIPF if arm == "zipf" else 0.0,
                                       rank_seed=seed, seed=seed, num_paraphrases=1, statements=False, transform=pre)
        return ds, {"train_counts": D.frequency_table(ds)} if part == "balance" else {}, vision
    if part == "dedup":
        items = _pool(seed, pool)
        if arm != "unique":
            half, k = pool // 2, max(1, pool // 40)
            items = items[:half] + [items[i] for i in range(k) for _ in range(half // k)]
        info = {"pairs": len(items)}
        if arm == "deduplicated":
            drop = D.exact_duplicates([it["image"] for it in items], [it["caption"] for it in items])
            items = [it for it, d in zip(items, drop) if not d]
            info |= {"removed": int(sum(drop)), "pairs": len(items)}
        return _Items(items, pre), info, {}
    items, scores = _noisy_pool(seed, pool)
    labels = [it["corruption"] for it in items]
    if part == "pruning":
        if arm == "all":
            keep = [True] * len(items)
        elif arm == "oracle":
            keep = [not c for c in labels]
        elif arm.startswith("top"):
            keep = D.keep_top(scores, float(arm[3:]))
        else:
            keep = D.keep_random(len(items), float(arm[6:]), seed)
        kept = [it for it, k in zip(items, keep) if k]
        info = {"pairs": len(kept), **{k: round(v, 4) for k, v in
                                       D.removal_report([not k for k in keep], labels).items()}}
    else:
        from vlm_primer.text import Tokenizer
        from vlm_primer.zoo import load

        import torch

        blip = load("blip-tiny")
        synthetic = D.recaption(blip, torch.stack([pre(it["image"]) for it in items]), Tokenizer.load())
        replace = ([True] * len(items) if arm == "recaption"
                   else [not k for k in D.keep_top(scores, 1 - float(arm.split("bottom")[1]))])
        kept = [dict(it, caption=s) if r else it for it, s, r in zip(items, synthetic, replace)]
        info = {"pairs": len(kept), "replaced": int(sum(replace))}
    truth = D.caption_truth([it["caption"] for it in kept], [it["scene"] for it in kept])
    info["true_captions"] = round(float(np.mean(truth)), 4)
    return _Items(kept, pre), info, {}


def run(job: tuple) -> dict:
    """One arm at one seed: ``(part, arm, seed, steps, pool)``."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    part, arm, seed, steps, pool = job
    start = time.perf_counter()
    data, info, vision = _data(part, arm, seed, steps, pool)
    model = _fit(data, steps, seed, **vision)
    right, shapes = _zero_shot(model, vision.get("image_size", 48))
    out = {"part": part, "arm": arm, "seed": seed, "zero_shot_top1": round(float(np.mean(right)), 4), **info}
    if part == "balance":
        out["shape_accuracy"] = {s: round(float(np.mean([r for r, t in zip(right, shapes) if t == s])), 4)
                                 for s in sorted(set(shapes))}
    if part == "hparams":
        out["vision"] = vision
    out["seconds"] = round(time.perf_counter() - start, 1)
    print(f"  done {part} {arm} seed {seed}: {out['zero_shot_top1']} in {out['seconds']} s", flush=True)
    return out


def jobs_for(seeds, parts, steps: int = STEPS, pool: int = POOL) -> list[tuple]:
    return [(p, a, s, steps, pool) for s in seeds for p in parts for a in ARMS[p]]


def main() -> None:
    ap = seed_parser(__doc__)
    ap.add_argument("--only", nargs="+", choices=tuple(ARMS), default=list(ARMS))
    args = ap.parse_args()
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, jobs_for(args.seeds, args.only)))
        check = list(pool.map(run, jobs_for([0], list(ARMS), CHECK["steps"], CHECK["pool"])))
    check = [{k: v for k, v in r.items() if k != "seconds"} for r in check]
    runs = write_seed_runs(OUT, "bench_data_recipes.py", args.seeds, args.jobs, start, results,
                           replaces=lambda r: r["part"] in args.only, only=args.only, parts=ARMS, steps=STEPS,
                           batch=BATCH, pool=POOL, zipf=ZIPF, noise=NOISE, check=check, check_size=CHECK)
    for part in args.only:
        for arm in ARMS[part]:
            vals = [r["zero_shot_top1"] for r in runs if r["part"] == part and r["arm"] == arm]
            print(f"{part:9s} {arm:20s} zero-shot mean {np.mean(vals):.3f} (min {min(vals):.3f}, max {max(vals):.3f})")


if __name__ == "__main__":
    import numpy as np

    main()
