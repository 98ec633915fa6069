"""Chapter 06b's parameter-efficient fine-tuning table: few-shot adaptation of `clip-tiny` to striped objects.

    python benchmarks/bench_peft.py --seeds 0 1 2 --jobs 2    # 3 minutes on 2 idle cores
    python benchmarks/bench_peft.py --select --jobs 2          # picks LRS, once: 16 minutes on shared cores

A quality benchmark, not a speed one. The zoo's `clip-tiny` names solid single objects almost perfectly (zero-shot
top-1 0.98 over the 48 colour-shape names) but only 0.32 when the same objects are *striped*
(`WorldConfig(textures=("striped",))`): the new domain. Each method adapts it from `SHOTS` striped images per class
(single-object scenes of the train split; the 6 compositions the splits hold out never occur there, so 42 of the 48
classes are present: 168 images) and is scored on `TEST` striped test-split images (the gain) and on `TEST` solid
test-split images (what the adaptation costs on the old domain), always over all 48 names.

One budget for every method: `STEPS` AdamW steps (torch's defaults: weight decay 0.01, constant lr, no warm-up) of
`BATCH` images from the few-shot set (the same batches for every method at a seed), cross-entropy on the class logits
``exp(logit_scale) · cos(image, class)``, class texts "a photo of a {name}" (`TEMPLATE`; the zoo's 7-template ensemble
is no better zero-shot: 0.31 striped). Each method has its own learning rate (`LRS`), chosen by ``--select``: every
value of `GRID` (1e-4 .. 3e-2 in half decades, and 1e-1 where 3e-2 wins) trained on seed 0's few-shot set and scored on
a validation set of `VAL_SHOTS` more striped train-split scenes per class (disjoint from the few-shot set); the best
validation top-1 wins, ties to the lower validation loss. The test sets choose nothing; the validation curves are in
the results file (`lr_selection`). The seed changes the few-shot and validation sample, the batch order and the
initialisation (LoRA's ``A``, VeRA's projections, prompts, adapters).

The rows (`METHODS`): ``zero_shot`` (no training); ``linear_probe`` (``exp(logit_scale) · (W f + b)`` on the frozen,
normalised image embedding ``f``, ``W`` initialised to the zero-shot class embeddings, so it starts at zero-shot);
``full`` (every CLIP weight, the temperature too); ``lora`` (r = 4, alpha = 2 r, on the 36 attention and MLP linears
of both towers, `TARGETS`, not the projections), ``dora`` (the same, ``use_dora=True``), ``vera`` (r = 32, the same
layers), ``qlora`` (the LoRA of ``lora`` on those layers stored in NF4); ``coop`` (4 unified context vectors
initialised at "a photo of a"), ``coop_cs`` (class-specific); ``vpt_shallow`` / ``vpt_deep`` (4 prompt tokens);
``clip_adapter`` (image adapter, alpha = 0.2, reduction 4). The blind control answers every test image with the most
frequent class of the `POOL` train-split scenes the few-shot set was drawn from (the best a model that never looks at
the image can learn; the few-shot set itself is balanced).

Columns: trainable parameters; memory, a formula and not a measurement: the bytes of every frozen tensor the adapted
model holds at its storage precision (fp32 4 B, NF4 weights ``NF4Linear.quantized().nbytes``; a tensor shared by
several layers, VeRA's projections, counted once) plus 16 B per trainable parameter (fp32 weight, gradient and
AdamW's two moments; activations not counted); the median training step (ms on one thread, the steps after the first
3, with another run on the second core and whatever else the machine runs: compare rows of one file, not machines);
striped and solid test top-1. Also a LoRA rank sweep (`RANKS`, alpha = 2 r, each rank its own lr, `RANK_LRS`, chosen
the same way; r = 4 is the ``lora`` row).

Writes `benchmarks/results/peft.json` (command, settings, every run, the rank sweep, the lr selection it keeps from
``--select``, and a reduced run `CHECK` at seed 0 that `tests/test_bench_peft.py` repeats).
"""

from __future__ import annotations

import functools
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import seed_parser, write_seed_runs  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "peft.json"
METHODS = ("zero_shot", "linear_probe", "full", "lora", "dora", "vera", "qlora", "coop", "coop_cs", "vpt_shallow",
           "vpt_deep", "clip_adapter")
SHOTS, VAL_SHOTS, POOL = 4, 4, 2000   # per class; POOL train-split scenes are searched for them
TEST = 480                            # striped and solid test images
STEPS, BATCH = 150, 32
GRID, SELECT_SEED = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2), 0  # the learning rates tried by --select, on this seed
LRS = {"linear_probe": 3e-3, "full": 1e-4, "lora": 3e-3, "dora": 1e-3, "vera": 3e-2, "qlora": 3e-3, "coop": 3e-2,
       "coop_cs": 1e-2, "vpt_shallow": 1e-2, "vpt_deep": 3e-2, "clip_adapter": 3e-2}  # chosen by --select
EXTEND = (1e-1,)  # tried too where GRID's largest lr is the best
TEMPLATE = "a photo of a {}"
TARGETS = ("q", "k", "v", "out", "fc1", "fc2")  # attention and MLP linears of both towers (not the projections)
LORA_R, VERA_R, N_CTX, N_PROMPTS, ADAPTER_ALPHA = 4, 32, 4, 4, 0.2
RANKS = (1, 2, 4, 8, 16)
RANK_LRS = {1: 1e-2, 2: 1e-2, 4: LRS["lora"], 8: 3e-3, 16: 1e-3}  # chosen by --select (4: the lora row's)
SLOW_FIRST = ("dora", "qlora", "vera", "lora", "full", "vpt_deep", "coop", "coop_cs", "vpt_shallow", "clip_adapter",
              "linear_probe", "zero_shot")  # the order the runs start in
CHECK = dict(steps=3, test=96, lrs=(1e-3, 1e-2))


def world(texture: str):
    from vlm_primer.world import WorldConfig
    from vlm_primer.zoo import recipes

    return WorldConfig(**(recipes.WORLD | dict(textures=(texture,))))


def _dataset(split: str, n: int, texture: str, seed: int):
    from vlm_primer.world import ShapesCaptionDataset
    from vlm_primer.zoo import recipes

    return ShapesCaptionDataset(split, n, world(texture), seed=seed, num_objects=1, statements=False,
                                transform=recipes.normalizer(*recipes.pixel_stats()))


@functools.lru_cache(maxsize=None)
def eval_set(texture: str, n: int = TEST):
    """``n`` single-object test-split scenes with ``texture`` (seed 0, the same for every run): images, labels."""
    import torch

    ds = _dataset("test", n, texture, 0)
    items = [ds[i] for i in range(n)]
    return torch.stack([it["image"] for it in items]), torch.tensor([it["label_id"] for it in items])


@functools.lru_cache(maxsize=None)
def few_shot_sets(seed: int, shots: int = SHOTS, val_shots: int = VAL_SHOTS):
    """The few-shot training set and the validation set of ``seed``: the first ``shots`` striped train-split scenes
    of each class present, then the next ``val_shots`` of each. Returns ``(x, y), (x_val, y_val), classnames,
    majority``, the last the most frequent class of all ``POOL`` scenes searched (what a blind model would answer)."""
    import torch

    ds = _dataset("train", POOL, "striped", seed)
    train, val, seen = [], [], {}
    for i in range(POOL):
        obj = ds.scene(i)[0].objects[0]
        label = ds.classnames.index(f"{obj.color} {obj.shape}")
        k = seen.get(label, 0)
        seen[label] = k + 1
        if k < shots:
            train.append(i)
        elif k < shots + val_shots:
            val.append(i)
    short = {ds.classnames[c]: k for c, k in seen.items() if k < shots + val_shots}
    if short:
        raise ValueError(f"POOL={POOL} scenes hold fewer than {shots + val_shots} of {short}")

    def load(index):
        items = [ds[i] for i in index]
        return torch.stack([it["image"] for it in items]), torch.tensor([it["label_id"] for it in items])

    return load(train), load(val), ds.classnames, max(seen, key=lambda c: (seen[c], -c))


def build(method: str, clip, tok, classnames: list[str], seed: int, r: int = LORA_R):
    """``method`` on ``clip`` (modified in place): ``(module, logits)``, ``logits(images) -> (B, 48)``; ``module``
    holds every tensor the adapted model keeps (what the memory formula counts) and ``module.parameters()`` with
    ``requires_grad`` are what trains."""
    import torch
    from torch import nn

    from vlm_primer.recipes.peft import apply_lora, apply_qlora, apply_vera
    from vlm_primer.recipes.prompts import VPT, CLIPAdapter, CoOp, class_text_embeddings

    with torch.no_grad():
        fixed = class_text_embeddings(clip, tok, classnames, TEMPLATE)  # the frozen text side
    batch = tok([TEMPLATE.format(c) for c in classnames], max_length=clip.cfg.text.context_length)
    ids, mask = torch.as_tensor(batch["input_ids"]), torch.as_tensor(batch["attention_mask"])

    def clip_logits(x):  # both towers may change: the class embeddings are recomputed
        return clip.logit_scale.exp() * clip.encode_image(x) @ clip.encode_text(ids, mask).t()

    for p in clip.parameters():
        p.requires_grad_(method == "full")
    if method in ("zero_shot", "full"):
        return clip, clip_logits if method == "full" else (lambda x: clip.logit_scale.exp() * clip.encode_image(x)
                                                           @ fixed.t())
    if method == "linear_probe":
        head = nn.Linear(fixed.shape[1], fixed.shape[0])
        with torch.no_grad():
            head.weight.copy_(fixed)
            head.bias.zero_()

        def probe_logits(x):
            with torch.no_grad():
                f = clip.encode_image(x)
            return clip.logit_scale.exp().detach() * head(f)

        return nn.ModuleDict(dict(clip=clip, head=head)), probe_logits
    if method in ("lora", "dora"):
        return apply_lora(clip, TARGETS, r=r, alpha=2 * r, use_dora=method == "dora"), clip_logits
    if method == "qlora":
        return apply_qlora(clip, TARGETS, r=r, alpha=2 * r), clip_logits
    if method == "vera":
        return apply_vera(clip, TARGETS, r=VERA_R, seed=seed), clip_logits
    if method in ("coop", "coop_cs"):
        coop = CoOp(clip, classnames, tok, n_ctx=N_CTX, class_specific=method == "coop_cs",
                    init=TEMPLATE.replace(" {}", ""))
        return coop, coop
    if method in ("vpt_shallow", "vpt_deep"):
        vpt = VPT(clip, n_prompts=N_PROMPTS, deep=method == "vpt_deep")
        return vpt, lambda x: vpt(x, fixed)
    if method == "clip_adapter":
        adapter = CLIPAdapter(clip, alpha=ADAPTER_ALPHA)
        return adapter, lambda x: adapter(x, fixed)
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def memory_bytes(module) -> tuple[int, int, int]:
    """``(frozen bytes, trainable parameters, frozen bytes + 16 B per trainable parameter)``: every parameter and
    buffer of ``module`` once (shared tensors once), frozen ones at their own element size."""
    frozen, trainable, seen = 0, 0, set()
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) in seen:
            continue
        seen.add(id(t))
        if t.requires_grad:
            trainable += t.numel()
        else:
            frozen += t.numel() * t.element_size()
    return frozen, trainable, frozen + 16 * trainable


def batches(n: int, steps: int, batch: int, seed: int):
    """``steps`` index batches of ``batch`` from ``n`` items: consecutive reshuffles, seeded (every method at a seed
    sees the same ones)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    stream = torch.cat([torch.randperm(n, generator=g) for _ in range(-(-steps * batch // n))])
    return stream[: steps * batch].view(steps, batch)


def fit(module, logits, x, y, steps: int, lr: float, seed: int) -> list[float]:
    """``steps`` AdamW steps of cross-entropy on ``logits``; returns each step's seconds."""
    import torch
    import torch.nn.functional as F

    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    clip = getattr(module, "clip", module)
    times = []
    module.train()
    for idx in batches(len(y), steps, BATCH, seed):
        t = time.perf_counter()
        loss = F.cross_entropy(logits(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if clip.logit_scale.requires_grad:
            clip.post_step()  # CLIP's temperature clamp, when it trains
        times.append(time.perf_counter() - t)
    module.eval()
    return times


def evaluate(logits, x, y) -> tuple[float, float]:
    """Top-1 and mean cross-entropy of ``logits`` on ``(x, y)``."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        out = torch.cat([logits(x[i: i + 240]) for i in range(0, len(x), 240)])
    return float((out.argmax(1) == y).float().mean()), float(F.cross_entropy(out, y))


def run(job: tuple) -> dict:
    """One method at one seed: ``(method, seed, steps, test, lrs, r)``; trains at every lr of ``lrs``, keeps the one
    with the best validation top-1 and scores it on the striped and solid test sets."""
    import torch

    torch.set_num_threads(1)
    from vlm_primer import zoo
    from vlm_primer.text import Tokenizer
    from vlm_primer.utils import seed_everything

    method, seed, steps, test, lrs, r = job
    start = time.perf_counter()
    tok = Tokenizer.load()
    (x, y), (xv, yv), classnames, majority = few_shot_sets(seed)
    grid, best = [], None
    for lr in (lrs if method != "zero_shot" else (None,)):
        seed_everything(seed)
        module, logits = build(method, zoo.load("clip-tiny"), tok, classnames, seed, r)
        times = fit(module, logits, x, y, steps, lr, seed) if lr is not None else []
        acc, loss = evaluate(logits, xv, yv)
        grid.append({"lr": lr, "val_top1": round(acc, 4), "val_loss": round(loss, 4)})
        if best is None or (acc, -loss) > (best[0], -best[1]):
            best = (acc, loss, lr, module, logits, times)
    _, _, lr, module, logits, times = best
    frozen, trainable, memory = memory_bytes(module)
    out = {"method": method, "seed": seed, "r": r if method in ("lora", "dora", "qlora") else None, "lr": lr,
           "trainable": trainable, "frozen_bytes": frozen, "memory_bytes": memory,
           "striped_top1": round(evaluate(logits, *eval_set("striped", test))[0], 4),
           "solid_top1": round(evaluate(logits, *eval_set("solid", test))[0], 4),
           "blind_top1": round(float((eval_set("striped", test)[1] == majority).float().mean()), 4),
           "grid": grid, "step_ms": round(1e3 * statistics.median(times[3:] or times), 2) if times else None,
           "seconds": round(time.perf_counter() - start, 1)}
    print(f"  done {method:12s} r={out['r']} seed {seed}: lr {lr}, striped {out['striped_top1']:.3f}, solid "
          f"{out['solid_top1']:.3f}, {trainable} trainable, {out['step_ms']} ms/step in {out['seconds']} s", flush=True)
    return out


def jobs(seeds, steps: int, test: int) -> list[tuple]:
    """The table's runs and the rank sweep's (r = 4 is the table's ``lora``), the slowest first."""
    return ([("lora", s, steps, test, (RANK_LRS[r],), r) for r in RANKS if r != LORA_R for s in seeds]
            + [(m, s, steps, test, (LRS.get(m),), LORA_R) for m in SLOW_FIRST for s in seeds])


def _best(grid: list[dict]) -> dict:
    """The row of ``grid`` with the best validation top-1, ties to the lower validation loss."""
    return max(grid, key=lambda g: (g["val_top1"], -g["val_loss"]))


def select(jobs_: int) -> None:
    """``--select``: train every method (and LoRA rank) at every lr of ``GRID`` on ``SELECT_SEED``'s few-shot set, and
    at ``EXTEND`` too where the best validation top-1 (ties to the lower loss) is ``GRID``'s largest lr; store each
    lr's validation top-1 and loss and the choice in the results file's ``lr_selection`` (copy the choices into
    ``LRS`` / ``RANK_LRS``). Grid points already stored there (same seed and steps) are reused, not retrained."""
    import json

    start = time.perf_counter()
    old = json.loads(OUT.read_text()) if OUT.exists() else {}
    stored = old.get("lr_selection") or {}
    grids = {k: v["grid"] for k, v in stored.get("runs", {}).items()} if (
        stored.get("seed"), stored.get("steps")) == (SELECT_SEED, STEPS) else {}
    keys = {m: (m, LORA_R) for m in SLOW_FIRST if m != "zero_shot"}
    keys |= {f"lora_r{r}": ("lora", r) for r in RANKS if r != LORA_R}

    def train(wanted: dict[str, tuple]) -> None:
        todo = {k: tuple(lr for lr in lrs if lr not in {g["lr"] for g in grids.get(k, [])})
                for k, lrs in wanted.items()}
        todo = {k: lrs for k, lrs in todo.items() if lrs}
        with ProcessPoolExecutor(jobs_) as pool:
            runs = pool.map(run, [(keys[k][0], SELECT_SEED, STEPS, TEST, lrs, keys[k][1]) for k, lrs in todo.items()])
            for k, r in zip(todo, runs):
                grids[k] = sorted(grids.get(k, []) + r["grid"], key=lambda g: g["lr"])

    train({k: GRID for k in keys})
    train({k: EXTEND for k in keys if _best(grids[k])["lr"] == max(GRID)})
    picked = {k: {"chosen": _best(grids[k])["lr"], "grid": grids[k]} for k in keys}
    for k, v in picked.items():
        print(f"{k:13s} chosen {v['chosen']:g}  "
              + "  ".join(f"{g['lr']:g}: {g['val_top1']:.3f}/{g['val_loss']:.2f}" for g in v["grid"]))
    old["lr_selection"] = {"command": f"python benchmarks/bench_peft.py --select --jobs {jobs_}", "seed": SELECT_SEED,
                           "grid": list(GRID), "extend": list(EXTEND), "steps": STEPS,
                           "date": time.strftime("%Y-%m-%d"),
                           "minutes": round((time.perf_counter() - start) / 60 + stored.get("minutes", 0), 1),
                           "runs": picked}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(old, indent=1) + "\n")
    print(f"wrote lr_selection to {OUT}")


def main() -> None:
    import json

    import numpy as np

    ap = seed_parser(__doc__)
    ap.add_argument("--select", action="store_true", help="choose the learning rates on validation (see select)")
    args = ap.parse_args()
    if args.select:
        return select(args.jobs)
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(run, jobs(args.seeds, STEPS, TEST)))
        check = list(pool.map(run, [(m, 0, CHECK["steps"], CHECK["test"], CHECK["lrs"], LORA_R) for m in METHODS]))
    table = [r for r in runs if r["method"] != "lora" or r["r"] == LORA_R]
    sweep = [r for r in runs if r["method"] == "lora"]
    selection = json.loads(OUT.read_text()).get("lr_selection") if OUT.exists() else None
    write_seed_runs(OUT, "bench_peft.py", args.seeds, args.jobs, start, table, methods=list(METHODS), shots=SHOTS,
                    val_shots=VAL_SHOTS, test=TEST, steps=STEPS, batch=BATCH, lrs=LRS, template=TEMPLATE,
                    targets=list(TARGETS), lora_r=LORA_R, lora_alpha="2 r", vera_r=VERA_R, n_ctx=N_CTX,
                    n_prompts=N_PROMPTS, adapter_alpha=ADAPTER_ALPHA,
                    memory="frozen bytes at storage precision + 16 B per trainable parameter",
                    rank_sweep=dict(ranks=list(RANKS), lrs={str(r): lr for r, lr in RANK_LRS.items()},
                                    runs=sorted(sweep, key=lambda r: (r["r"], r["seed"]))),
                    check=[{k: v for k, v in r.items() if k not in ("seconds", "step_ms")} for r in check],
                    check_size=dict(CHECK, lrs=list(CHECK["lrs"])), lr_selection=selection)

    def spread(vals):
        return f"{np.mean(vals):.3f} ± {(max(vals) - min(vals)) / 2:.3f}"

    print(f"{'method':13s} {'trainable':>9s} {'memory':>9s} {'ms/step':>7s}  {'striped':>13s}  {'solid':>13s}  lr")
    for m in METHODS:
        rs = [r for r in table if r["method"] == m]
        ms = statistics.median(r["step_ms"] for r in rs) if rs[0]["step_ms"] else 0.0
        print(f"{m:13s} {rs[0]['trainable']:9d} {rs[0]['memory_bytes'] / 2**20:6.2f}MiB {ms:7.1f}  "
              f"{spread([r['striped_top1'] for r in rs])}  {spread([r['solid_top1'] for r in rs])}  {LRS.get(m)}")
    print(f"blind (the train pool's majority class): {spread([r['blind_top1'] for r in table])}")
    for rank in RANKS:
        rs = [r for r in sweep if r["r"] == rank]
        print(f"lora r={rank:2d} {rs[0]['trainable']:7d}  striped {spread([r['striped_top1'] for r in rs])}  "
              f"solid {spread([r['solid_top1'] for r in rs])}  {RANK_LRS[rank]}")


if __name__ == "__main__":
    main()
