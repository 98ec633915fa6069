"""Training-step time and memory of our CLIP / SigLIP vs ``transformers``' CLIPModel / SiglipModel.

    python benchmarks/bench_contrastive.py [--threads 1] [--batch 32] [--repeats 10] [--compile] [--profile]

Same config and the same weights on both sides (the ``transformers`` model is made from ours with
``vlm_primer.interop``; it runs with its default attention implementation, SDPA, like ours). One
training step = forward with the loss + backward + ``AdamW.step()`` + ``zero_grad``. Timing:
both models step alternately in one process (so background load hits both alike), 3 warm-up
steps, then the median of ``--repeats`` steps; printed as the ratio ours/theirs (goal <= 1.0).
Memory: peak resident set size (``resource.getrusage().ru_maxrss``, Linux) of a fresh subprocess
that imports everything, builds one model and runs 3 steps, minus its RSS just before building the
model; it counts weights, optimizer state, activations and the allocator's caching. Runs in well under 2 minutes.
Ours runs without the input value checks, as the Trainer runs every step after its first.

``--compile`` adds the same comparison with both models ``torch.compile``d (a few minutes of compiling on a
CPU). ``--profile`` prints where each side's step time goes (``torch.profiler``, self CPU time by kind of
operation), the measurement behind the README's statement that both spend it in the same kernels.
"""

from __future__ import annotations

import argparse

import torch
from common import child_peak_mb, median_alternating, print_peak_mb

from vlm_primer.validate import validation

#: How the profile groups ATen operations (first match wins; the rest is "other").
KINDS = {"matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear"),
         "attention": ("scaled_dot_product",), "GELU": ("gelu",), "LayerNorm": ("layer_norm",),
         "softmax / loss": ("softmax", "nll_loss", "cross_entropy", "logsigmoid", "log_sigmoid"),
         "convolution": ("convolution",), "AdamW": ("_foreach", "lerp", "addcdiv", "addcmul", "sqrt")}


def build(kind: str, side: str, compiled: bool = False):
    """(model, step_fn) for kind in {clip, siglip} and side in {ours, theirs} at a small fixed config."""
    from vlm_primer.contrastive import CLIP, CLIPConfig, SigLIP, SigLIPConfig
    from vlm_primer.interop.clip import clip_to_hf
    from vlm_primer.interop.siglip import siglip_to_hf

    torch.manual_seed(0)
    if kind == "clip":
        cfg = CLIPConfig.from_preset("tiny", embed_dim=128)
        cfg = cfg.replace(vision=cfg.vision.replace(dim=128, depth=4, heads=4),
                          text=cfg.text.replace(dim=128, depth=4, heads=4))
        ours = CLIP(cfg)
        model = ours if side == "ours" else clip_to_hf(ours)
    else:
        cfg = SigLIPConfig.from_preset("tiny")
        cfg = cfg.replace(vision=cfg.vision.replace(dim=128, depth=4, heads=4),
                          text=cfg.text.replace(dim=128, depth=4, heads=4))
        ours = SigLIP(cfg)
        model = ours if side == "ours" else siglip_to_hf(ours)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    fn = torch.compile(model) if compiled else model

    def step(pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None) -> float:
        if side == "ours":
            with validation(False):
                loss = fn(pixels, ids, mask).loss
        else:
            loss = fn(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return model, step


def batch(kind: str, b: int):
    gen = torch.Generator().manual_seed(0)
    pixels = torch.rand(b, 3, 64, 64, generator=gen)
    ids = torch.randint(5, 800, (b, 24), generator=gen)
    ids[:, -1] = 3  # <eos>
    # CLIP: a padding mask; SigLIP: full-length captions without a mask, as SigLIP is trained.
    mask = torch.ones_like(ids) if kind == "clip" else None
    return pixels, ids, mask


def time_pair(kind: str, b: int, repeats: int, compiled: bool = False) -> tuple[float, float]:
    t = median_alternating({side: build(kind, side, compiled)[1] for side in ("ours", "theirs")}, batch(kind, b),
                           repeats)
    return t["ours"], t["theirs"]


def profile(kind: str, b: int, steps: int = 3) -> dict[str, dict[str, float]]:
    """Per side: the share of self CPU time of each kind of operation over ``steps`` steps (after 3 warm-up),
    plus ``"ms"``, the profiled step time, and ``"calls"``, the ATen calls per step."""
    data, out = batch(kind, b), {}
    for side in ("ours", "theirs"):
        step = build(kind, side)[1]
        for _ in range(3):
            step(*data)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step(*data)
        events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
        total = sum(e.self_cpu_time_total for e in events)
        shares = dict.fromkeys([*KINDS, "other"], 0.0)
        for e in events:
            group = next((k for k, keys in KINDS.items() if any(key in e.key for key in keys)), "other")
            shares[group] += e.self_cpu_time_total / total
        shares["ms"] = total / 1e3 / steps
        shares["calls"] = sum(e.count for e in events) / steps
        out[side] = shares
    return out


def memory_child(kind: str, side: str, b: int) -> None:
    import transformers  # noqa: F401  (imports first, so the baseline includes them on both sides)

    import vlm_primer.contrastive  # noqa: F401
    import vlm_primer.interop.clip  # noqa: F401
    import vlm_primer.interop.siglip  # noqa: F401

    print_peak_mb(lambda: build(kind, side)[1], batch(kind, b))  # the peak is reached once AdamW has its state


def peak_memory_mb(kind: str, side: str, b: int, threads: int) -> float:
    return child_peak_mb(__file__, ["--child", kind, side, "--batch", str(b), "--threads", str(threads)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--compile", action="store_true", help="also compare both sides torch.compiled")
    p.add_argument("--profile", action="store_true", help="print where each side's step time goes")
    p.add_argument("--child", nargs=2, metavar=("KIND", "SIDE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.child:
        memory_child(*a.child, a.batch)
        return
    import transformers

    print(f"contrastive training step, CPU, {a.threads} thread(s), batch {a.batch}, 64 px images (8 px patches), "
          f"24 tokens, towers 4 x 128 wide; torch {torch.__version__}, transformers {transformers.__version__}")
    header = ("model", "ours ms", "theirs ms", "ratio", "ours MB", "theirs MB", "ratio")
    print(f"{header[0]:8s} " + " ".join(f"{h:>{w}s}" for h, w in zip(header[1:], (9, 10, 7, 9, 10, 7))))
    for kind in ("clip", "siglip"):
        ours_t, theirs_t = time_pair(kind, a.batch, a.repeats)
        ours_m = peak_memory_mb(kind, "ours", a.batch, a.threads)
        theirs_m = peak_memory_mb(kind, "theirs", a.batch, a.threads)
        print(f"{kind:8s} {1e3 * ours_t:9.1f} {1e3 * theirs_t:10.1f} {ours_t / theirs_t:7.2f} "
              f"{ours_m:9.1f} {theirs_m:10.1f} {ours_m / max(theirs_m, 1e-9):7.2f}")
    print("time: median step (forward+backward+AdamW); memory: peak RSS increase of a fresh process (MiB)")
    if a.compile:
        for kind in ("clip", "siglip"):
            ours_t, theirs_t = time_pair(kind, a.batch, a.repeats, compiled=True)
            print(f"{kind:8s} compiled: {1e3 * ours_t:.1f} ms vs {1e3 * theirs_t:.1f} ms, ratio {ours_t / theirs_t:.2f}")
    if a.profile:
        for kind in ("clip", "siglip"):
            shares = profile(kind, a.batch)
            print(f"\n{kind}: share of the step's ATen self time   ours   theirs   "
                  f"(a profiled step: {shares['ours']['ms']:.0f} ms vs {shares['theirs']['ms']:.0f} ms)")
            for group in [*KINDS, "other"]:
                print(f"  {group:38s} {shares['ours'][group]:6.1%} {shares['theirs'][group]:7.1%}")
            print(f"  {'ATen calls per step':38s} {shares['ours']['calls']:6.0f} {shares['theirs']['calls']:7.0f}")


if __name__ == "__main__":
    main()
