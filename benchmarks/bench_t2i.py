"""Text-to-image speed (chapter 04b): sampling images/s and the generative classifiers' cost per image.

    python benchmarks/bench_t2i.py [--threads 2] [--batch 16] [--repeats 3]

Uses the zoo's ``dit-tiny`` (latent diffusion on ``vqvae-tiny``'s 8 x 8 latents), ``ar-t2i-tiny`` and ``clip-tiny``.
Prints:

* DiT images/s with DDIM and DDPM at 10, 25, 50 and 100 steps, guidance 3 (two denoiser passes per step), and our
  DDIM loop against the same denoiser driven by ``diffusers``' ``DDIMScheduler`` at 25 steps (ratio ours / theirs,
  goal <= 1.0: the sampler's bookkeeping should cost nothing next to the network);
* the early-fusion model's images/s with and without guidance (KV-cached, 64 codes per image);
* milliseconds per image to classify among 48 classes: CLIP, the autoregressive classifier, and the diffusion
  classifier with 1, 4 and 16 Monte Carlo draws.
"""

from __future__ import annotations

import argparse

import torch
from common import median_rate


def rate(fn, units: int, repeats: int) -> float:
    """``units`` per second of ``fn()`` (:func:`common.median_rate`)."""
    return median_rate({"": fn}, units, repeats)[""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from diffusers import DDIMScheduler

    from vlm_primer import zoo
    from vlm_primer.evaluation import build_classifier
    from vlm_primer.generative.classifiers import autoregressive_scores, diffusion_scores
    from vlm_primer.text import Tokenizer
    from vlm_primer.world.vocab import COLORS, SHAPES
    from vlm_primer.zoo import recipes as R
    from vlm_primer.zoo import t2i_recipes as T

    vq, ar, dit, clip = (zoo.load(n) for n in ("vqvae-tiny", "ar-t2i-tiny", "dit-tiny", "clip-tiny"))
    codec = T.latent_codec(vq)
    texts = T.prompts(1)[0][: args.batch]
    ids, mask = T.encode(texts)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, median of {args.repeats}")
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with torch.no_grad():
        print("\nDiT (latent diffusion) images/s, guidance 3:")
        for steps in (10, 25, 50, 100):
            row = {s: rate(lambda: dit.sample(ids, mask, steps=steps, sampler=s, guidance_scale=3.0, generator=g(),
                                              clip_sample=False), args.batch, args.repeats) for s in ("ddim", "ddpm")}
            print(f"  {steps:4d} steps: DDIM {row['ddim']:7.1f}, DDPM {row['ddpm']:7.1f}")

        sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
        ctx, cmask = dit.encode_text(ids, mask)

        def theirs():
            sched.set_timesteps(25)
            x = torch.randn(args.batch, *codec.shape, generator=g())
            for t in sched.timesteps:
                x = sched.step(dit.guided_eps(x, int(t), ctx, cmask, 3.0), t, x).prev_sample
            return x

        ours = rate(lambda: dit.sample(ids, mask, steps=25, guidance_scale=3.0, generator=g(), clip_sample=False),
                    args.batch, args.repeats)
        ref = rate(theirs, args.batch, args.repeats)
        print(f"  DDIM 25 steps: ours {ours:.1f} images/s, diffusers' DDIMScheduler loop {ref:.1f}; "
              f"time ratio ours / theirs {ref / ours:.2f}")

        print("\nearly fusion (64 codes per image, KV cache) images/s:")
        for s in (1.0, 3.0):
            print(f"  guidance {s:g}: {rate(lambda: ar.generate_image(ids, mask, guidance_scale=s, generator=g()), args.batch, args.repeats):.1f}")

        classes = [(c, s) for c in COLORS for s in SHAPES]
        cids, cmask2 = T.encode([f"a large {c} {s}" for c, s in classes])
        x32, _ = T.test_scenes(args.batch)
        x48, _ = R._zero_shot_set(args.batch)[:2]
        head = build_classifier(clip, Tokenizer.load(), [f"{c} {s}" for c, s in classes],
                                list(R.ZERO_SHOT_TEMPLATES))
        rows = {"CLIP (class embeddings precomputed)": lambda: clip.encode_image(x48) @ head.T,
                "autoregressive": lambda: autoregressive_scores(ar, vq.tokenize(x32), cids, cmask2)}
        for draws in (1, 4, 16):
            rows[f"diffusion, {draws} draw(s)"] = (lambda d: lambda: diffusion_scores(
                dit, codec.encode(x32), cids, cmask2, samples=d))(draws)
        print("\nms per image, 48 classes:")
        for name, fn in rows.items():
            print(f"  {name:36s} {1000 / rate(fn, args.batch, args.repeats):9.2f}")


if __name__ == "__main__":
    main()
