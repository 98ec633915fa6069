"""Training-step time, memory and generation speed of our BLIP captioner vs ``transformers``'
BlipForConditionalGeneration.

    python benchmarks/bench_blip.py [--threads 1] [--batch 32] [--repeats 10] [--new-tokens 24]

Same config and weights on both sides (ours is converted from the ``transformers`` model with
``vlm_primer.interop.blip``): a ViT of 4 x 128 on 48 px images (6 px patches: 64 + 1 tokens) and a MED decoder of
4 x 256 (8 heads) over a vocabulary of 816, cross-attending to the image in every layer; 20-token captions. One
training step = the captioning loss (label smoothing 0.1) + backward + ``AdamW.step()`` + ``zero_grad``; timed
alternately, 3 warm-up steps, the median of ``--repeats``. Memory: peak RSS increase of a fresh process that builds
one model and runs 3 steps. Generation: greedy decoding of ``--new-tokens`` tokens for 8 images with the KV cache
(ours also caches the image's cross-attention keys and values), tokens per second (median of 5).
Prints ratios ours / theirs (time and memory: goal <= 1.0; tokens/s: goal >= 1.0).
"""

from __future__ import annotations

import argparse

import torch
from common import median_alternating, median_rate, print_peak_mb, print_step_and_memory


def build(side: str):
    from transformers import BlipConfig, BlipForConditionalGeneration

    from vlm_primer.interop.blip import blip_from_hf

    torch.manual_seed(0)
    cfg = BlipConfig(vision_config=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                                        num_attention_heads=4, image_size=48, patch_size=6),
                     text_config=dict(vocab_size=816, hidden_size=256, encoder_hidden_size=128, intermediate_size=1024,
                                      num_hidden_layers=4, num_attention_heads=8, max_position_embeddings=64,
                                      bos_token_id=815, sep_token_id=3, eos_token_id=3, pad_token_id=0,
                                      label_smoothing=0.1))
    hf = BlipForConditionalGeneration(cfg)
    attn = getattr(hf.config, "_attn_implementation", "?")
    model = hf if side == "theirs" else blip_from_hf(hf)
    return model.train(), attn


def batch(b: int):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(6, 800, (b, 20), generator=gen)
    ids[:, 0] = 815
    return ids, torch.rand(b, 3, 48, 48, generator=gen)


def stepper(side: str):
    from vlm_primer.nn import causal_lm_loss

    model, _ = build(side)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(ids, pixels) -> float:
        if side == "ours":
            hidden = model.text(ids, image=model.image_features(pixels), mode="decoder")
            loss = causal_lm_loss(model.text.logits(hidden), ids, label_smoothing=0.1)
        else:
            loss = model(pixel_values=pixels, input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


@torch.no_grad()
def tokens_per_second(new_tokens: int) -> tuple[float, float]:
    from vlm_primer.nn.decoding import sample_tokens

    _, pixels = batch(8)
    models = {side: build(side)[0].eval() for side in ("ours", "theirs")}
    ours = models["ours"]
    start = torch.full((8, 1), 815)
    gen = {"ours": lambda: sample_tokens(ours.stepper(ours.image_features(pixels)), start, new_tokens,
                                         eos_token_id=None),
           "theirs": lambda: models["theirs"].generate(pixel_values=pixels, max_new_tokens=new_tokens,
                                                       min_new_tokens=new_tokens, do_sample=False)}
    out = median_rate(gen, 8 * new_tokens)
    return out["ours"], out["theirs"]


def memory_child(side: str, b: int) -> None:
    import transformers  # noqa: F401  (imported first, so the baseline includes it on both sides)

    import vlm_primer.interop.blip  # noqa: F401

    print_peak_mb(lambda: stepper(side), batch(b))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--new-tokens", type=int, default=24)
    p.add_argument("--child", metavar="SIDE", help=argparse.SUPPRESS)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.child:
        memory_child(a.child, a.batch)
        return
    import transformers

    attn = build("theirs")[1]
    print(f"BLIP captioner, CPU, {a.threads} thread(s), batch {a.batch}, 65 image + 20 text tokens; torch "
          f"{torch.__version__}, transformers {transformers.__version__} (attention: {attn})")
    t = median_alternating({side: stepper(side) for side in ("ours", "theirs")}, batch(a.batch), a.repeats)
    ours_g, theirs_g = tokens_per_second(a.new_tokens)
    print_step_and_memory(t, __file__, ["--batch", str(a.batch), "--threads", str(a.threads)])
    print(f"generation      ours {ours_g:8.1f} tok/s theirs {theirs_g:6.1f} tok/s ratio {ours_g / theirs_g:5.2f} "
          f"(greedy, {a.new_tokens} new tokens, KV cache, batch 8)")


if __name__ == "__main__":
    main()
