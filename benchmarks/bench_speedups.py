"""Survey §3.2.3 "Speeding up training" measured on this machine's CPU: each row a speed-up ratio (> 1 is faster).

    python benchmarks/bench_speedups.py [--threads 2] [--repeats 5] [--batch 32] [--presets tiny small]
                                        [--rows compile autocast checkpoint workers store] [--quick] [--out PATH]

Chapter 06 quotes the results file, ``benchmarks/results/speedups.json``. The first three rows time one training
step of the book's tiny and small CLIP (``CLIPConfig.from_preset``, text tower with the project tokenizer's vocabulary
and a 16-token context, as ``vlm_primer.zoo.recipes.contrastive_config`` sets it): forward with the CLIP loss
(``model(...).loss``), backward, ``AdamW.step()``, ``zero_grad``, on one fixed batch of one-object Shapes World
captions. Every side has its own model (same seed, same weights) and optimizer; the sides step alternately
(``common.median_alternating``: warm-up rounds, then the median of ``--repeats`` steps), so background load hits
them alike. The value checks that read tensors are off (``vlm_primer.validate.validation(False)``) on every side,
as in the Trainer after its first step. Ratios are baseline seconds / variant seconds, or variant rate / baseline
rate: > 1 means the variant is faster.

Rows:

- ``compile``: ``torch.compile(model)`` (default mode, inductor) vs eager; steady-state steps after warm-up, plus
  the compile time: the first compiled step (forward and backward graphs) with a fresh, empty inductor cache.
- ``autocast``: the forward and loss under ``torch.autocast("cpu", dtype=torch.bfloat16)`` vs fp32 (backward
  outside the autocast region). Without native bf16 matrix units a CPU is often slower in bf16; reported as is.
- ``checkpoint``: activation checkpointing (every transformer block of both towers under
  ``torch.utils.checkpoint.checkpoint(use_reentrant=False)``, :func:`checkpointed`) vs none. The time ratio is
  expected below 1 (each block's forward runs twice); the memory ratio is checkpointed / plain peak RSS rise of a
  fresh process that builds the model and its optimizer and runs 3 steps (``common.print_peak_mb``: weights,
  gradients, AdamW state, activations and the allocator's caching, so it understates the activation saving).
- ``workers``: ``ResumableLoader`` over chapter 02's training data (``ShapesCaptionDataset``, one object, 48 px,
  ``WORLD``; ``pair_collate``) with ``num_workers=0`` vs ``--workers`` (2): batches/s over ``--loader-batches``
  batches after the first (the first pays for starting the workers).
- ``store``: where the images come from, read as float batches of 32 in one process: (a) on the fly
  (``ShapesCaptionDataset`` samples, captions and renders each item when indexed), (b) pre-rendered once into a
  uint8 ``(N, 3, H, W)`` ``.npy`` plus a JSON list of captions, memory-mapped (``np.load(mmap_mode="r")``) and
  converted to float per item, (c) WebDataset PNG shards (``vlm_primer.training.shards``, 4 shards), decoded per
  item. Items/s of each; ratios (b)/(a) (the FFCV point: store decode-cheap data once) and (b)/(c) (the price of
  decoding a compressed format), and bytes on disk per item of (b) and (c).

These are CPU ratios at tiny widths: they do not transfer to GPUs, where compile fuses memory-bound kernels,
bf16 runs on tensor cores and memory, not time, is what checkpointing buys; the GPU rows come from
``benchmarks/bench_gpu.py`` when a machine is lent. The default run is sized for about 5 minutes on 2 idle cores
(the two cold compiles take a good part of it); ``--quick`` (tiny preset only, small batches and counts) is the smoke
test, ``--rows`` and ``--presets`` pick a part.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the collate tokenizes in forked loader workers

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import ROOT, child_peak_mb, median_alternating, print_peak_mb  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

OUT = Path(ROOT) / "benchmarks" / "results" / "speedups.json"
ROWS = ("compile", "autocast", "checkpoint", "workers", "store")
PRESETS = ("tiny", "small")


# --------------------------------------------------------------------------- models and one training step


def tokenizer():
    from vlm_primer.text import Tokenizer

    return Tokenizer.load()


def build(preset: str, vocab_size: int, seed: int = 0):
    """The book's ``preset`` CLIP with the project tokenizer's vocabulary and chapter 02's 16-token context."""
    from vlm_primer.contrastive import CLIP, CLIPConfig
    from vlm_primer.zoo.recipes import CONTEXT

    cfg = CLIPConfig.from_preset(preset)
    cfg = cfg.replace(text=cfg.text.replace(vocab_size=vocab_size, context_length=CONTEXT))
    torch.manual_seed(seed)
    return CLIP(cfg).train()


def image_size(preset: str) -> int:
    from vlm_primer.contrastive import CLIPConfig

    return CLIPConfig.from_preset(preset).vision.image_size


def checkpointed(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every transformer block (of every ``vlm_primer.nn.Transformer`` in it: both CLIP towers)
    run under ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``: the block keeps only its inputs for
    backward and recomputes its activations there. Changes ``model`` in place (each block's ``forward``) and
    returns it; a block already wrapped is left alone."""
    from vlm_primer.nn.transformer import Transformer

    for stack in (m for m in model.modules() if isinstance(m, Transformer)):
        for block in stack.blocks:
            if getattr(block, "_checkpointed", False):
                continue
            plain = block.forward

            def forward(*args: Any, _plain: Callable = plain, **kwargs: Any) -> torch.Tensor:
                return checkpoint(_plain, *args, use_reentrant=False, **kwargs)

            block.forward = forward
            block._checkpointed = True
    return model


def fixed_batch(tok, image_size: int, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``batch`` one-object Shapes World pairs at ``image_size`` px, collated as in chapter 02 (``pair_collate``)."""
    from vlm_primer.contrastive.recipes import pair_collate
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig
    from vlm_primer.zoo.recipes import CONTEXT, WORLD

    ds = ShapesCaptionDataset("train", batch, WorldConfig(**{**WORLD, "image_size": image_size}), num_objects=1,
                              num_paraphrases=1, statements=False)
    b = pair_collate(tok, CONTEXT, image_size)([ds[i] for i in range(batch)])
    return b["pixel_values"], b["input_ids"], b["attention_mask"]


def make_step(model: torch.nn.Module, *, compiled: bool = False, autocast: bool = False) -> Callable[..., float]:
    """One training step of ``model`` (its own AdamW): forward + CLIP loss [under bf16 autocast] + backward + step."""
    from vlm_primer.validate import validation

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    fn = torch.compile(model) if compiled else model

    def step(pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> float:
        with validation(False), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = fn(pixels, ids, mask).loss
        loss.float().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def step_row(name: str, preset: str, sides: dict[str, Callable], data: tuple, repeats: int, warmup: int,
             **extra: Any) -> dict[str, Any]:
    (base, bstep), (var, vstep) = sides.items()
    t = median_alternating({base: bstep, var: vstep}, data, repeats, warmup)
    return dict(name=name, preset=preset, unit="s/step", baseline=base, variant=var, baseline_value=t[base],
                variant_value=t[var], ratio=t[base] / t[var], **extra)


def compile_row(preset: str, tok, data: tuple, repeats: int, warmup: int) -> dict[str, Any]:
    import torch._dynamo
    from torch._dynamo.utils import counters
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    eager = make_step(build(preset, tok.vocab_size))
    eager(*data)  # einops registers its torch backend on the first call: a guard of the compiled graph reads it
    torch._dynamo.reset()
    counters.clear()
    compiled = make_step(build(preset, tok.vocab_size), compiled=True)
    with tempfile.TemporaryDirectory() as cache, temporary_cache_dir(cache):
        t = time.perf_counter()
        compiled(*data)
        compile_s = time.perf_counter() - t
        row = step_row("torch.compile", preset, {"eager": eager, "compiled": compiled}, data, repeats, warmup,
                       compile_s=compile_s, graph_breaks=sum(counters["graph_break"].values()))
    torch._dynamo.reset()
    return row


def autocast_row(preset: str, tok, data: tuple, repeats: int, warmup: int) -> dict[str, Any]:
    sides = {"fp32": make_step(build(preset, tok.vocab_size)),
             "bf16 autocast": make_step(build(preset, tok.vocab_size), autocast=True)}
    return step_row("bf16 autocast", preset, sides, data, repeats, warmup)


def checkpoint_row(preset: str, tok, data: tuple, repeats: int, warmup: int, threads: int, batch: int,
                   memory: bool = True) -> dict[str, Any]:
    sides = {"none": make_step(build(preset, tok.vocab_size)),
             "checkpointed": make_step(checkpointed(build(preset, tok.vocab_size)))}
    extra: dict[str, Any] = {}
    if memory:
        mem = {side: child_peak_mb(__file__, ["--child", preset, side, "--batch", str(batch), "--threads",
                                               str(threads)]) for side in ("none", "checkpointed")}
        extra = dict(peak_mib_baseline=mem["none"], peak_mib_variant=mem["checkpointed"],
                     memory_ratio=mem["checkpointed"] / max(mem["none"], 1e-9))
    return step_row("activation checkpointing", preset, sides, data, repeats, warmup, **extra)


def memory_child(preset: str, side: str, batch: int) -> None:
    """``--child PRESET SIDE``: print the peak RSS rise (MiB) of building one model and running 3 steps."""
    tok = tokenizer()
    data = fixed_batch(tok, image_size(preset), batch)

    def make() -> Callable[..., float]:
        model = build(preset, tok.vocab_size)
        return make_step(checkpointed(model) if side == "checkpointed" else model)

    print_peak_mb(make, data)


# --------------------------------------------------------------------------- data


def median_inner(fns: dict[str, Callable[[], float]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Like ``common.median_alternating``, but each ``fns[side]()`` returns the seconds it timed itself (the part
    of the call that counts); the sides take turns, order flipped every round."""
    sides = list(fns)
    times: dict[str, list[float]] = {side: [] for side in sides}
    for i in range(warmup + repeats):
        for side in sides if i % 2 == 0 else sides[::-1]:
            t = fns[side]()
            if i >= warmup:
                times[side].append(t)
    return {side: statistics.median(v) for side, v in times.items()}


def chapter02_data(tok, n: int):
    """Chapter 02's training pairs (one object, 48 px, ``WORLD``) and their collate: ``(dataset, collate)``."""
    from vlm_primer.contrastive.recipes import pair_collate
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig
    from vlm_primer.zoo.recipes import CONTEXT, WORLD

    ds = ShapesCaptionDataset("train", n, WorldConfig(**WORLD), num_objects=1, num_paraphrases=1, statements=False)
    return ds, pair_collate(tok, CONTEXT, WORLD["image_size"])


def workers_row(tok, batches: int, batch: int, workers: int, repeats: int) -> dict[str, Any]:
    from vlm_primer.training import ResumableLoader

    ds, collate = chapter02_data(tok, (batches + 1) * batch)

    def epoch(num_workers: int) -> float:
        it = iter(ResumableLoader(ds, batch, collate_fn=collate, shuffle=False, num_workers=num_workers))
        next(it)  # the first batch pays for starting the workers
        t = time.perf_counter()
        n = sum(1 for _ in it)
        assert n == batches, (n, batches)
        return time.perf_counter() - t

    base, var = "num_workers=0", f"num_workers={workers}"
    t = median_inner({base: lambda: epoch(0), var: lambda: epoch(workers)}, repeats)
    return dict(name="data-loader workers", preset=None, unit="batches/s", baseline=base, variant=var,
                baseline_value=batches / t[base], variant_value=batches / t[var], ratio=t[base] / t[var],
                batch=batch, batches=batches)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """A float image in [0, 1] as stored: rounded to uint8 (as ``vlm_primer.training.shards`` writes its PNGs)."""
    return (image * 255).round().to(torch.uint8)


class PreRendered(torch.utils.data.Dataset):
    """Items ``{image: float (3, H, W) in [0, 1], caption}`` read back from :func:`prerender`'s directory: the
    uint8 images memory-mapped, converted to float per item."""

    def __init__(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        self.images = np.load(directory / "images.npy", mmap_mode="r")
        self.captions = json.loads((directory / "captions.json").read_text())

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": torch.from_numpy(np.array(self.images[i])).float().div_(255), "caption": self.captions[i]}


def prerender(items: list[dict[str, Any]], directory: str | os.PathLike) -> PreRendered:
    """Store rendered ``items`` (``image``, ``caption``) once: ``images.npy`` (uint8 ``(N, 3, H, W)``) and
    ``captions.json``; return the store read back."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "images.npy", torch.stack([to_uint8(it["image"]) for it in items]).numpy())
    (directory / "captions.json").write_text(json.dumps([it["caption"] for it in items]))
    return PreRendered(directory)


def read_all(dataset, n: int, batch: int) -> int:
    """Read items ``0..n-1`` of a map-style dataset as float image batches (stacked) and caption lists."""
    count = 0
    for start in range(0, n, batch):
        items = [dataset[i] for i in range(start, min(start + batch, n))]
        images = torch.stack([it["image"] for it in items])
        captions = [it["caption"] for it in items]
        count += min(len(images), len(captions))
    return count


def shard_reader(paths: list[str], batch: int) -> Callable[[], int]:
    from vlm_primer.training.shards import shard_loader

    loader = shard_loader(paths, batch, shuffle_buffer=0, shuffle_shards=False, partial=True)
    return lambda: sum(len(b["image"]) for b in loader)


def dir_bytes(directory: str | os.PathLike) -> int:
    return sum(p.stat().st_size for p in Path(directory).iterdir() if p.is_file())


def store_rows(tok, n: int, batch: int, repeats: int) -> list[dict[str, Any]]:
    import tarfile

    from vlm_primer.training.shards import write_shards

    ds, _ = chapter02_data(tok, n)
    items = [ds[i] for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        store = prerender(items, Path(tmp) / "npy")
        paths = write_shards(({"image": it["image"], "caption": it["caption"]} for it in items), Path(tmp) / "wds",
                             maxcount=max(1, n // 4))
        read_shards = shard_reader(paths, batch)
        fns = {"on-the-fly": lambda: read_all(ds, n, batch), "pre-rendered uint8": lambda: read_all(store, n, batch),
               "PNG shards": read_shards}
        for side, fn in fns.items():  # the warm-up round, which also checks that every side reads all n items
            got = fn()
            assert got == n, (side, got, n)
        t = median_alternating(fns, (), repeats, warmup=0)
        npy_bytes, tar_bytes = dir_bytes(Path(tmp) / "npy") / n, dir_bytes(Path(tmp) / "wds") / n
        png_bytes = 0
        for path in paths:
            with tarfile.open(path) as tar:
                png_bytes += sum(m.size for m in tar.getmembers() if m.name.endswith(".png"))
    rate = {side: n / s for side, s in t.items()}
    details = dict(items=n, batch=batch, items_per_s=rate,
                   bytes_per_item={"pre-rendered uint8 (npy + captions)": npy_bytes, "PNG shards (tar)": tar_bytes,
                                   "PNG shards (PNG payload only)": png_bytes / n})
    return [dict(name=name, preset=None, unit="items/s", baseline=base, variant="pre-rendered uint8",
                 baseline_value=rate[base], variant_value=rate["pre-rendered uint8"],
                 ratio=rate["pre-rendered uint8"] / rate[base], **details)
            for name, base in (("pre-rendered store vs on-the-fly render", "on-the-fly"),
                               ("pre-rendered store vs PNG shards", "PNG shards"))]


# --------------------------------------------------------------------------- report


def fmt(value: float, unit: str) -> str:
    return f"{1e3 * value:9.1f} ms" if unit == "s/step" else f"{value:9.1f} /s"


def note(row: dict[str, Any]) -> str:
    if "compile_s" in row:
        return f"compile {row['compile_s']:.1f} s, {row['graph_breaks']} graph break(s)"
    if "memory_ratio" in row:
        return (f"peak RSS {row['peak_mib_baseline']:.0f} -> {row['peak_mib_variant']:.0f} MiB "
                f"(x{row['memory_ratio']:.2f})")
    if row["name"].endswith("on-the-fly render"):
        b = row["bytes_per_item"]
        return (f"disk/item: npy {b['pre-rendered uint8 (npy + captions)']:.0f} B, tar "
                f"{b['PNG shards (tar)']:.0f} B (PNG {b['PNG shards (PNG payload only)']:.0f} B)")
    return ""


def print_row(row: dict[str, Any]) -> None:
    unit = row["unit"]
    print(f"{row['name']:40s} {row['preset'] or '-':6s} {row['baseline']:>18s} {fmt(row['baseline_value'], unit)} "
          f"{row['variant']:>18s} {fmt(row['variant_value'], unit)} {row['ratio']:6.2f}  {note(row)}", flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per row (default 5; --quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds per step row (default 2; --quick 1)")
    p.add_argument("--batch", type=int, default=None, help="training-step batch (default 32; --quick 8)")
    p.add_argument("--presets", nargs="+", choices=PRESETS, default=None, help="default tiny small; --quick tiny")
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    p.add_argument("--workers", type=int, default=2, help="num_workers of the workers row's variant")
    p.add_argument("--loader-batches", type=int, default=None, help="timed batches (default 30 of 32; --quick 4 of 8)")
    p.add_argument("--store-items", type=int, default=None, help="items per store (default 1000; --quick 64)")
    p.add_argument("--no-memory", action="store_true", help="skip the checkpoint row's peak-memory children")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny preset, small batches and counts")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--child", nargs=2, metavar=("PRESET", "SIDE"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    quick = a.quick
    for name, full, small in (("repeats", 5, 2), ("warmup", 2, 1), ("batch", 32, 8), ("loader_batches", 30, 4),
                              ("store_items", 1000, 64)):
        if getattr(a, name) is None:
            setattr(a, name, small if quick else full)
    if a.presets is None:
        a.presets = ["tiny"] if quick else list(PRESETS)
    a.loader_batch = 8 if quick else 32
    return a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    a = parse(argv)
    torch.set_num_threads(a.threads)
    if a.child:
        memory_child(*a.child, a.batch)
        return {}
    start = time.perf_counter()
    tok = tokenizer()
    print(f"speeding up training (survey §3.2.3), CPU, {a.threads} thread(s), torch {torch.__version__}; "
          f"training step: batch {a.batch}, median of {a.repeats} after {a.warmup} warm-up; ratio > 1 = variant faster")
    print(f"{'row':40s} {'preset':6s} {'baseline':>18s} {'':12s} {'variant':>18s} {'':12s} {'ratio':>6s}")
    rows: list[dict[str, Any]] = []

    def add(new: dict[str, Any] | list[dict[str, Any]]) -> None:
        for row in new if isinstance(new, list) else [new]:
            rows.append(row)
            print_row(row)

    for preset in a.presets:
        if not {"compile", "autocast", "checkpoint"} & set(a.rows):
            break
        data = fixed_batch(tok, image_size(preset), a.batch)
        if "compile" in a.rows:
            add(compile_row(preset, tok, data, a.repeats, a.warmup))
        if "autocast" in a.rows:
            add(autocast_row(preset, tok, data, a.repeats, a.warmup))
        if "checkpoint" in a.rows:
            add(checkpoint_row(preset, tok, data, a.repeats, a.warmup, a.threads, a.batch, memory=not a.no_memory))
    if "workers" in a.rows:
        add(workers_row(tok, a.loader_batches, a.loader_batch, a.workers, a.repeats))
    if "store" in a.rows:
        add(store_rows(tok, a.store_items, 32, a.repeats))
    minutes = (time.perf_counter() - start) / 60
    print(f"{minutes:.1f} min. CPU ratios: they do not transfer to GPUs (benchmarks/bench_gpu.py has the GPU rows).")
    result = {
        "command": "python benchmarks/bench_speedups.py" + "".join(f" {x}" for x in argv),
        "machine": f"{platform.platform()} ({platform.machine()}, {os.cpu_count()} CPUs), "
                   f"torch.get_num_threads() = {torch.get_num_threads()}",
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "minutes": round(minutes, 1),
        "settings": {"batch": a.batch, "repeats": a.repeats, "warmup": a.warmup, "presets": a.presets,
                     "loader_batches": a.loader_batches, "loader_batch": a.loader_batch, "workers": a.workers,
                     "store_items": a.store_items, "quick": a.quick},
        "ratio": "baseline s / variant s (= variant rate / baseline rate): > 1 means the variant is faster",
        "rows": rows,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
