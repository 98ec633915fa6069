"""Chapter 03's mask-ratio sweep across seeds: the runs too long for the chapter, whose numbers it quotes.

    python benchmarks/bench_masking.py --seeds 0 1 2 --jobs 1    # about 35 minutes on 1 core

A quality benchmark, not a speed one; one thread per run. For each mask ratio in 25 / 50 / 75 / 90 % and each
seed, a fresh tiny MAE (the zoo's `mae-tiny` recipe, `vlm_primer.zoo.masking_recipes.train_mae`, at 2,000 steps
instead of 3,000) is trained on Shapes World and measured: held-out reconstruction loss against the
predict-the-mean baseline (at the ratio it was trained with), and linear probes of colour and shape on the frozen
encoder (the zoo card's probe). Also the same for a randomly initialised encoder (the probe's control, ratio 0).
Writes `benchmarks/results/masking.json`, read by notebook 03 (which plots it and prints this command).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import write_seed_runs

OUT = Path(__file__).resolve().parent / "results" / "masking.json"
RATIOS, STEPS = (0.25, 0.5, 0.75, 0.9), 2000


def run(ratio: float, seed: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from vlm_primer.masking import MAE
    from vlm_primer.utils import seed_everything
    from vlm_primer.zoo import masking_recipes as m

    start = time.perf_counter()
    if ratio == 0:  # the control: the same encoder, never trained
        seed_everything(seed)
        model = MAE(m.mae_config()).eval()
        recon = {}
    else:
        model, _ = m.train_mae(STEPS, mask_ratio=ratio, seed=seed)
        recon = m.reconstruction(model)
    out = {"mask_ratio": ratio, "seed": seed, **recon, **m.probe_accuracy(model.features),
           "minutes": round((time.perf_counter() - start) / 60, 2)}
    print(out, flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=1)
    a = p.parse_args()
    start = time.perf_counter()
    jobs = [(r, s) for s in a.seeds for r in (0.0, *RATIOS)]
    with ProcessPoolExecutor(a.jobs) as pool:
        runs = list(pool.map(run, *zip(*jobs)))
    write_seed_runs(OUT, "bench_masking.py", a.seeds, a.jobs, start, runs, steps=STEPS, ratios=list(RATIOS))


if __name__ == "__main__":
    main()
