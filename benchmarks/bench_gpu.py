"""Our CLIP and SigLIP against ``transformers`` at the paper preset on one GPU: step time, peak memory, MFU.

    python benchmarks/bench_gpu.py [--batch 256] [--repeats 20] [--peak-tflops 989] [--no-compile] [--small-batch 128]
    python benchmarks/bench_gpu.py --device cpu --preset tiny --batch 8 --repeats 2 --no-compile  # the code path

Same config and weights on both sides (``transformers``' ``CLIPModel`` / ``SiglipModel`` are made from
ours with ``vlm_primer.interop``). One step = forward with the loss under bf16 autocast + backward +
AdamW (fused on CUDA) + ``zero_grad``, eager and ``torch.compile``d; the median of ``--repeats`` steps
after 3 warm-up steps, synchronised. Peak memory is ``torch.cuda.max_memory_allocated``. MFU = the
step's FLOPs (counted once with ``FlopCounterMode``) / step time / the peak (``--peak-tflops``, dense
bf16: 989 for an H100 SXM). Prints the ratio ours / theirs (goal <= 0.95). Issue 12 quotes the numbers.
Ours runs without the input value checks, as the Trainer runs every step after its first.

First the small model (issue 12, item 4): our ``small`` CLIP (chapter 02's GPU scale) on one fixed batch of
``--small-batch`` 64 px images, fp32 and bf16 eager and, compiled, ``mode="reduce-overhead"`` (CUDA graphs):
the median step in ms (goal <= 6 ms on an H100-class GPU). ``--profile`` prints the top operations of each eager
step. Without CUDA (and without ``--device cpu``) it says so and exits.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def build(kind: str, side: str, preset: str, device: torch.device):
    from vlm_primer.contrastive import CLIP, CLIPConfig, SigLIP, SigLIPConfig
    from vlm_primer.interop.clip import clip_to_hf
    from vlm_primer.interop.siglip import siglip_to_hf

    torch.manual_seed(0)
    ours = CLIP(CLIPConfig.from_preset(preset)) if kind == "clip" else SigLIP(SigLIPConfig.from_preset(preset))
    model = ours if side == "ours" else (clip_to_hf(ours) if kind == "clip" else siglip_to_hf(ours))
    return model.to(device).train(), ours.cfg


def batch(cfg, b: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    size, length = cfg.vision.image_size, min(cfg.text.context_length, 64)
    ids = torch.randint(5, cfg.text.vocab_size, (b, length), generator=g)
    return torch.randn(b, 3, size, size, generator=g).to(device), ids.to(device)


def make_step(model, side: str, compiled: bool | str, device: torch.device, dtype=torch.bfloat16):
    """One training step; ``compiled`` True or a ``torch.compile`` mode; ``dtype`` None = fp32."""
    from vlm_primer.validate import validation

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    fn = torch.compile(model, mode=compiled if isinstance(compiled, str) else None) if compiled else model

    def step(pixels, ids) -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None), validation(False):
            out = fn(pixels, ids) if side == "ours" else fn(input_ids=ids, pixel_values=pixels, return_loss=True)
        out.loss.float().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, data, repeats: int, device: torch.device) -> tuple[float, float]:
    """(median step seconds, peak memory MiB)."""
    for _ in range(3):
        step(*data)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step(*data)
        _sync(device)
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return statistics.median(times), peak


def step_flops(step, data) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(*data)
    return float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="base")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100 SXM: 989)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--no-compile", action="store_true", help="eager only (torch.compile takes minutes)")
    p.add_argument("--small-preset", default="small", help="the small model's preset (item 4)")
    p.add_argument("--small-batch", type=int, default=128)
    p.add_argument("--profile", action="store_true", help="print where each eager step's time goes")
    a = p.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_gpu.py: no CUDA GPU is visible here, so there is nothing to measure; run it on a GPU machine "
              "(or pass --device cpu to exercise the code path)")
        return 0
    import transformers

    device = torch.device(a.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}; preset {a.preset}, batch {a.batch}, bf16 autocast; torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    small_step(a, device)  # first: the cheapest figure (item 4), in case a time limit stops the rest
    print(f"\n{'model':8s} {'mode':9s} {'ours ms':>9s} {'theirs ms':>10s} {'ratio':>6s} {'ours MiB':>9s} "
          f"{'theirs MiB':>10s} {'MFU ours':>9s}")
    for compiled in (False,) if a.no_compile else (False, True):  # eager rows first: compiling takes minutes
        for kind in ("clip", "siglip"):
            res = {}
            for side in ("ours", "theirs"):
                model, cfg = build(kind, side, a.preset, device)
                data = batch(cfg, a.batch, device)
                step = make_step(model, side, compiled, device)
                res[side] = timed(step, data, a.repeats, device)
                if side == "ours":
                    flops = step_flops(make_step(model, side, False, device), data)
                if a.profile and not compiled:
                    profile(step, data, device, f"{kind}, {side}, eager")
                del model, step
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            (t_o, m_o), (t_t, m_t) = res["ours"], res["theirs"]
            mfu = flops / t_o / (a.peak_tflops * 1e12)
            print(f"{kind:8s} {'compiled' if compiled else 'eager':9s} {1e3 * t_o:9.1f} {1e3 * t_t:10.1f} "
                  f"{t_o / t_t:6.2f} {m_o:9.0f} {m_t:10.0f} {mfu:9.1%}")
    return 0


def profile(step, data, device: torch.device, title: str, rows: int = 15) -> None:
    """The operations that take a step's time (``torch.profiler``, by device time on a GPU), for item 6's question:
    where does the time go, and which of it is ours."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(2):
            step(*data)
        _sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\n-- profile: {title} (2 steps) --")
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60))


def small_step(a: argparse.Namespace, device: torch.device) -> None:
    """Our small CLIP on a fixed batch: fp32 and bf16 eager, bf16 with CUDA graphs (reduce-overhead)."""
    modes = [("fp32", False, None), ("bf16", False, torch.bfloat16)]
    if not a.no_compile:
        modes.append(("bf16+graphs", "reduce-overhead", torch.bfloat16))
    print(f"\nour CLIP at preset {a.small_preset}, batch {a.small_batch}, one fixed batch (goal: <= 6 ms with graphs)")
    for label, compiled, dtype in modes:
        model, cfg = build("clip", "ours", a.small_preset, device)
        seconds, _ = timed(make_step(model, "ours", compiled, device, dtype), batch(cfg, a.small_batch, device),
                           a.repeats, device)
        print(f"small    {label:12s} {1e3 * seconds:9.2f} ms")


if __name__ == "__main__":
    sys.exit(main())
