"""Shapes World rendering throughput on ONE core (target: >= 2,000 scenes/s at 64x64).

    python benchmarks/bench_render.py

Prints scenes/s for rendering pre-sampled scenes at 64x64 and 128x128, for sampling + rendering,
and for full dataset items (sampling, captions, paraphrases, rendering, boxes); and for chapter 08's clips,
frames/s for rendering simulated 9-frame clips and for simulating + rendering them. Runs in seconds.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vlm_primer.world import ShapesCaptionDataset, WorldConfig, render, sample_scene  # noqa: E402

TARGET = 2000.0


def rate(fn, n: int) -> float:
    fn(min(n, 50))  # warm-up
    t = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t)


def main() -> None:
    torch.set_num_threads(1)
    cfg = WorldConfig.from_preset("tiny")
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng, cfg) for _ in range(3000)]
    print(f"Shapes World renderer, 1 thread, {cfg.min_objects}-{cfg.max_objects} objects per scene")
    results = {}
    for size in (64, 128):
        results[size] = rate(lambda n, s=size: [render(sc, s) for sc in scenes[:n]], 3000)
        print(f"  render only      {size:>3}x{size:<3}: {results[size]:9.0f} scenes/s")
    both = rate(lambda n: [render(sample_scene(rng, cfg), 64) for _ in range(n)], 2000)
    print(f"  sample + render   64x64  : {both:9.0f} scenes/s")
    ds = ShapesCaptionDataset("train", 10_000, config=cfg)
    items = rate(lambda n: [ds[i] for i in range(n)], 1000)
    print(f"  dataset items     64x64  : {items:9.0f} items/s (scene, captions, paraphrases, image, boxes)")
    from vlm_primer.world.video import render_clip, sample_clip

    clips = [sample_clip(i) for i in range(300)]
    frames = rate(lambda n: [render_clip(c) for c in clips[:n]], 300) * len(clips[0])
    print(f"  video clips       64x64  : {frames:9.0f} frames/s rendered (9-frame clips, 2-3 moving objects)")
    sim = rate(lambda n: [render_clip(sample_clip(i)) for i in range(n)], 300) * len(clips[0])
    print(f"  simulate + render 64x64  : {sim:9.0f} frames/s")
    ok = results[64] >= TARGET
    print(f"target {TARGET:.0f} scenes/s at 64x64 on one core: {'MET' if ok else 'NOT MET'} "
          f"({results[64] / TARGET:.1f}x the target)")


if __name__ == "__main__":
    main()
