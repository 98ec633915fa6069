"""Chapter 05's AnyRes experiment across seeds: does one model answer better from tiles than from a squeezed image?

    python benchmarks/bench_anyres.py --seeds 0 1 2 --jobs 2    # about 24 minutes on 2 cores

A quality benchmark, not a speed one. Each seed runs the zoo recipe of ``llava-next-tiny``
(:func:`vlm_primer.zoo.llava_next_recipes.train_llava_next`: ``llava-tiny`` as a LLaVA-NeXT, fine-tuned on
questions about 96 px mosaics, half of them as 2 x 2 tiles, half squeezed to 48 px) and measures it like the
zoo card: 600 held-out questions of every type and 300 shape questions, once from the tiles of the full image
and once from the image squeezed to the tower's 48 px first. Seed 0 is the zoo model's recipe.

It writes ``benchmarks/results/anyres.json`` (read by notebook 05, which prints this command); ``--steps N``
makes a smoke run that is printed, not saved.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import seed_parser, write_seed_runs

OUT = Path(__file__).resolve().parent / "results" / "anyres.json"


def run(job: tuple[int, int | None]) -> dict:
    import torch

    torch.set_num_threads(1)
    from vlm_primer.zoo.llava_next_recipes import STEPS, measure, train_llava_next

    seed, steps = job
    start = time.perf_counter()
    model = train_llava_next(steps or STEPS, seed=seed)
    out = {"seed": seed, "accuracy": measure("llava-next-tiny", model),
           "seconds": round(time.perf_counter() - start, 1)}
    acc = out["accuracy"]
    print(f"  seed {seed}: tiles {acc['tiles_all']:.3f} / squeezed {acc['squeezed_all']:.3f} (all), "
          f"{acc['tiles_shapeset_all']:.3f} / {acc['squeezed_shapeset_all']:.3f} (shape) in {out['seconds']} s",
          flush=True)
    return out


def main() -> None:
    from vlm_primer.zoo.llava_next_recipes import SQUEEZE, STEPS

    ap = seed_parser(__doc__)
    ap.add_argument("--steps", type=int, default=None, help="a smoke run of this many steps (printed, not saved)")
    args = ap.parse_args()
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(run, [(s, args.steps) for s in args.seeds]))
    if args.steps is not None:
        return
    write_seed_runs(OUT, "bench_anyres.py", args.seeds, args.jobs, start, runs, steps=STEPS, batch=32,
                    squeezed_fraction=SQUEEZE)


if __name__ == "__main__":
    main()
