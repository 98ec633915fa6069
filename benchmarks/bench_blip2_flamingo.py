"""Training-step time and memory of our BLIP-2 and Flamingo vs ``transformers``' Blip2ForConditionalGeneration and
IdeficsForVisionText2Text.

    python benchmarks/bench_blip2_flamingo.py [--threads 1] [--batch 16] [--repeats 10]

Same config and weights on both sides (the ``transformers`` models are made from ours with
``vlm_primer.interop.blip2`` and ``vlm_primer.interop.idefics``; SDPA attention). A 48 px tower (4 x 128)
and a Llama-style LM (4 x 256, 8 heads); 42 text tokens.

* BLIP-2, stage 2: a 2-layer Q-Former (32 queries, 256 wide) reads the tower; tower and LM frozen, the
  Q-Former and the projection trained (32 image tokens + 42 text tokens in the LM).
* Flamingo: a 2-block perceiver (16 latents) and a gated cross-attention layer before every second LM block;
  tower and LM frozen, perceiver and gated layers trained; two images per sequence.

One step = forward with the loss + backward + ``AdamW.step()`` + ``zero_grad``; timed alternately, 3 warm-up
steps, the median of ``--repeats``. Memory: peak RSS increase of a fresh process that builds one model and runs
3 steps. Prints ratios ours / theirs (goal <= 1.0).
"""

from __future__ import annotations

import argparse

import torch
from common import child_peak_mb, median_alternating, print_peak_mb

MODELS = ("blip2", "flamingo")


def _text(cfg):
    return cfg.text.replace(dim=256, heads=8, kv_heads=None, mlp_dim=688)


def build(model: str, side: str):
    torch.manual_seed(0)
    if model == "blip2":
        from vlm_primer.backbones.blip2 import Blip2, Blip2Config
        from vlm_primer.interop.blip2 import blip2_to_hf

        cfg = Blip2Config.from_preset("tiny")
        cfg = cfg.replace(vision=cfg.vision.replace(dim=128, depth=4), text=_text(cfg),
                          qformer=cfg.qformer.replace(dim=256, heads=8, mlp_dim=1024, num_queries=32, vision_dim=128))
        ours = Blip2(cfg)
        ours.set_stage(2)
        if side == "ours":
            return ours.train()
        hf = blip2_to_hf(ours)
        hf.vision_model.requires_grad_(False)
        hf.language_model.requires_grad_(False)
        return hf.train()
    from vlm_primer.backbones.flamingo import Flamingo, FlamingoConfig
    from vlm_primer.interop.idefics import flamingo_to_hf

    cfg = FlamingoConfig.from_preset("tiny")
    cfg = cfg.replace(vision=cfg.vision.replace(dim=128, depth=4), text=_text(cfg), num_latents=16,
                      perceiver_heads=4, perceiver_dim_head=32)
    ours = Flamingo(cfg)
    ours.set_stage()
    if side == "ours":
        return ours.train()
    hf = flamingo_to_hf(ours)
    hf.requires_grad_(False)
    hf.model.perceiver_resampler.requires_grad_(True)
    hf.model.gated_cross_attn_layers.requires_grad_(True)
    return hf.train()


def batch(model: str, b: int):
    gen = torch.Generator().manual_seed(0)
    if model == "blip2":
        ids = torch.randint(10, 800, (b, 32 + 42), generator=gen)
        ids[:, :32] = 5
        labels = ids.masked_fill(ids == 5, -100)
        labels[:, :32 + 20] = -100
        return ids, torch.rand(b, 3, 48, 48, generator=gen), labels
    ids = torch.randint(10, 800, (b, 42), generator=gen)
    ids[:, [0, 21]] = 5  # two images, one at the start and one half-way
    labels = ids.clone()
    labels[:, :21] = -100
    return ids, torch.rand(b, 2, 3, 48, 48, generator=gen), labels


def stepper(model_name: str, side: str):
    model = build(model_name, side)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(ids, pixels, labels) -> float:
        if side == "ours":
            out = model(ids, pixels, labels=labels)
        elif model_name == "blip2":
            out = model(input_ids=ids, pixel_values=pixels, labels=labels)
        else:
            from vlm_primer.backbones.flamingo import media_mask

            out = model(input_ids=ids, pixel_values=pixels, labels=labels,
                        image_attention_mask=media_mask(ids, 5, pixels.shape[1]).long())
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.item()

    return step


def memory_child(model: str, side: str, b: int) -> None:
    import transformers  # noqa: F401  (imported first, so the baseline includes it on both sides)

    import vlm_primer.interop.blip2  # noqa: F401
    import vlm_primer.interop.idefics  # noqa: F401

    print_peak_mb(lambda: stepper(model, side), batch(model, b))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--child", nargs=2, metavar=("MODEL", "SIDE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.child:
        memory_child(*a.child, a.batch)
        return
    import transformers

    print(f"BLIP-2 and Flamingo training steps, CPU, {a.threads} thread(s), batch {a.batch}; "
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    for model, ref in zip(MODELS, ("Blip2ForConditionalGeneration", "IdeficsForVisionText2Text")):
        t = median_alternating({side: stepper(model, side) for side in ("ours", "theirs")}, batch(model, a.batch),
                               a.repeats)
        m = {side: child_peak_mb(__file__, ["--child", model, side, "--batch", str(a.batch), "--threads",
                                            str(a.threads)]) for side in ("ours", "theirs")}
        print(f"{model:9s} step   ours {1e3 * t['ours']:8.1f} ms  {ref} {1e3 * t['theirs']:8.1f} ms  "
              f"ratio {t['ours'] / t['theirs']:5.2f}")
        print(f"{model:9s} memory ours {m['ours']:8.1f} MiB {ref} {m['theirs']:8.1f} MiB "
              f"ratio {m['ours'] / max(m['theirs'], 1e-9):5.2f}")


if __name__ == "__main__":
    main()
