"""Training-step time and memory of our MAE vs ``transformers``' ViTMAEForPreTraining.

    python benchmarks/bench_mae.py [--threads 1] [--batch 64] [--repeats 10]

Same config and weights on both sides (ours is converted from the ``transformers`` model with
``vlm_primer.interop.mae``): a ViT encoder of 6 x 192 (3 heads) on 64 px images with 8 px patches (64 patches, 75 %
hidden: the encoder sees 16 + [CLS]) and a decoder of 2 x 128 (4 heads) over all 65 positions, per-patch normalised
targets. One training step = the loss on the same noise (so the same mask) + backward + ``AdamW.step()`` +
``zero_grad``; timed alternately, 3 warm-up steps, the median of ``--repeats``. Memory: peak RSS increase of a fresh
process that builds one model and runs 3 steps. Prints ratios ours / theirs (goal <= 1.0).
"""

from __future__ import annotations

import argparse

import torch
from common import median_alternating, print_peak_mb, print_step_and_memory


def build(side: str):
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    from vlm_primer.interop.mae import mae_from_hf

    torch.manual_seed(0)
    cfg = ViTMAEConfig(hidden_size=192, num_hidden_layers=6, num_attention_heads=3, intermediate_size=768,
                       image_size=64, patch_size=8, decoder_hidden_size=128, decoder_num_hidden_layers=2,
                       decoder_num_attention_heads=4, decoder_intermediate_size=512, mask_ratio=0.75,
                       norm_pix_loss=True)
    hf = ViTMAEForPreTraining(cfg)
    hf.vit.embeddings.patch_embeddings.projection._is_hf_initialized = False  # write MAE's sin-cos tables
    hf.vit.embeddings.initialize_weights()
    hf.decoder.initialize_weights(64)
    attn = getattr(hf.config, "_attn_implementation", "?")
    model = hf if side == "theirs" else mae_from_hf(hf)
    return model.train(), attn


def batch(b: int):
    gen = torch.Generator().manual_seed(0)
    return torch.rand(b, 3, 64, 64, generator=gen), torch.rand(b, 64, generator=gen)


def stepper(side: str):
    model, _ = build(side)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(pixels, noise) -> float:
        loss = model(pixels, noise=noise).loss if side == "ours" else model(pixel_values=pixels, noise=noise).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def memory_child(side: str, b: int) -> None:
    import transformers  # noqa: F401  (imported first, so the baseline includes it on both sides)

    import vlm_primer.interop.mae  # noqa: F401

    print_peak_mb(lambda: stepper(side), batch(b))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--child", metavar="SIDE", help=argparse.SUPPRESS)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.child:
        memory_child(a.child, a.batch)
        return
    import transformers

    attn = build("theirs")[1]
    print(f"MAE, CPU, {a.threads} thread(s), batch {a.batch}, 64 px / 8 px patches, 75 % masked; torch "
          f"{torch.__version__}, transformers {transformers.__version__} (attention: {attn})")
    t = median_alternating({side: stepper(side) for side in ("ours", "theirs")}, batch(a.batch), a.repeats)
    print_step_and_memory(t, __file__, ["--batch", str(a.batch), "--threads", str(a.threads)])


if __name__ == "__main__":
    main()
