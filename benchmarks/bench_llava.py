"""Training-step time, memory and generation speed of our LLaVA vs ``transformers``' LlavaForConditionalGeneration.

    python benchmarks/bench_llava.py [--threads 1] [--batch 16] [--repeats 10] [--new-tokens 32]

Same config and weights on both sides (the ``transformers`` model is made from ours with
``vlm_primer.interop.llava``; both use SDPA attention). A 48 px CLIP tower (64 image tokens, 4 x 128)
and a Llama-style LM (4 x 256, GQA 8/4 heads); 40 text tokens after the image. One training step =
forward with the loss + backward + ``AdamW.step()`` + ``zero_grad`` (the stage-2 layout: tower frozen,
connector and LM trained); timed alternately, 3 warm-up steps, the median of ``--repeats``. Memory:
peak RSS increase of a fresh process that builds one model and runs 3 steps. Generation: greedy
decoding of ``--new-tokens`` tokens with the KV cache for one prompt, tokens per second (median of 5).
Prints ratios ours / theirs (time and memory: goal <= 1.0; tokens/s: goal >= 1.0).
"""

from __future__ import annotations

import argparse

import torch
from common import child_peak_mb, median_alternating, median_rate, print_peak_mb


def build(side: str):
    from vlm_primer.backbones import Llava, LlavaConfig
    from vlm_primer.interop.llava import llava_to_hf

    torch.manual_seed(0)
    cfg = LlavaConfig.from_preset("tiny")
    cfg = cfg.replace(vision=cfg.vision.replace(dim=128, depth=4), text=cfg.text.replace(dim=256, heads=8, kv_heads=4,
                                                                                        mlp_dim=688))
    ours = Llava(cfg)
    ours.set_stage(2)
    model = ours if side == "ours" else llava_to_hf(ours)
    if side == "theirs":
        model.model.vision_tower.requires_grad_(False)
    return model.train()


def batch(b: int, image_tokens: int = 64):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 800, (b, image_tokens + 42), generator=gen)
    ids[:, 0], ids[:, 1:1 + image_tokens] = 2, 5
    labels = ids.clone()
    labels[:, :1 + image_tokens + 20] = -100  # the answer is the last 21 tokens
    return ids, torch.rand(b, 3, 48, 48, generator=gen), labels


def stepper(side: str):
    model = build(side)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(ids, pixels, labels) -> float:
        out = model(ids, pixels, labels=labels) if side == "ours" else model(input_ids=ids, pixel_values=pixels,
                                                                              labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.item()

    return step


def time_steps(b: int, repeats: int) -> tuple[float, float]:
    t = median_alternating({side: stepper(side) for side in ("ours", "theirs")}, batch(b), repeats)
    return t["ours"], t["theirs"]


@torch.no_grad()
def tokens_per_second(new_tokens: int) -> tuple[float, float]:
    ids, pixels, _ = batch(1)
    prompt = ids[:, :1 + 64 + 10]
    models = {side: build(side).eval() for side in ("ours", "theirs")}
    gen = {"ours": lambda: models["ours"].generate(prompt, pixels, new_tokens, eos_token_id=-1),
           "theirs": lambda: models["theirs"].generate(input_ids=prompt, pixel_values=pixels, max_new_tokens=new_tokens,
                                                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)}
    out = median_rate(gen, new_tokens)
    return out["ours"], out["theirs"]


def memory_child(side: str, b: int) -> None:
    import transformers  # noqa: F401  (imported first, so the baseline includes it on both sides)

    import vlm_primer.interop.llava  # noqa: F401

    print_peak_mb(lambda: stepper(side), batch(b))


def peak_memory_mb(side: str, b: int, threads: int) -> float:
    return child_peak_mb(__file__, ["--child", side, "--batch", str(b), "--threads", str(threads)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--child", metavar="SIDE", help=argparse.SUPPRESS)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.child:
        memory_child(a.child, a.batch)
        return
    import transformers

    print(f"LLaVA, CPU, {a.threads} thread(s), batch {a.batch}, 64 image + 42 text tokens; "
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    ours_t, theirs_t = time_steps(a.batch, a.repeats)
    ours_m, theirs_m = peak_memory_mb("ours", a.batch, a.threads), peak_memory_mb("theirs", a.batch, a.threads)
    ours_g, theirs_g = tokens_per_second(a.new_tokens)
    print(f"training step   ours {1e3 * ours_t:8.1f} ms  theirs {1e3 * theirs_t:8.1f} ms  ratio {ours_t / theirs_t:5.2f}")
    print(f"peak memory     ours {ours_m:8.1f} MiB theirs {theirs_m:8.1f} MiB ratio {ours_m / max(theirs_m, 1e-9):5.2f}")
    print(f"generation      ours {ours_g:8.1f} tok/s theirs {theirs_g:6.1f} tok/s ratio {ours_g / theirs_g:5.2f} "
          f"(greedy, {a.new_tokens} new tokens, KV cache, batch 1)")


if __name__ == "__main__":
    main()
