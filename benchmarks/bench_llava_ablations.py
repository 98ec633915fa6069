"""Chapter 05's ablations across seeds: the design choices LLaVA's papers report, each at an equal budget.

    python benchmarks/bench_llava_ablations.py --seeds 0 1 2 --jobs 2    # about 20 minutes on 2 cores

A quality benchmark, not a speed one. Every run builds a tiny LLaVA from zoo parts
(:func:`vlm_primer.backbones.stages.tiny_llava`), trains stage 1 on captions for ``S1`` steps and stage 2
on short VQA answers for ``S2`` steps (batch 32, tower frozen), then answers 1,200 held-out test questions
(:func:`~vlm_primer.backbones.stages.vqa_eval`). One setting changes per arm:

* ``LLaVA-1.5``: the ``clip-tiny-pairs`` tower, penultimate layer, 2-layer MLP connector, both stages,
  connector + LM trained in stage 2 (the reference arm);
* ``last layer``: features from the tower's last block instead of the penultimate (LLaVA §5.1);
* ``linear connector``: LLaVA-1.0's linear projection instead of the MLP (LLaVA-1.5 §3.1);
* ``no stage 1``: stage 2 straight from a random connector (LLaVA §5.1, "without pre-training");
* ``frozen LM``: stage 2 trains the connector only;
* ``CLIP tower`` / ``SigLIP tower``: ``clip-tiny`` against ``siglip-tiny``, the two towers the zoo
  trained with the same single-object recipe (the reference arm's tower saw one or two objects).

It writes ``benchmarks/results/llava_ablations.json`` (read by notebook 05, which plots it and prints this
command); ``--steps S1 S2`` makes a smoke run that is printed, not saved.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import seed_parser, write_seed_runs

OUT = Path(__file__).resolve().parent / "results" / "llava_ablations.json"
STEPS = (150, 400)
ARMS: dict[str, dict] = {
    "LLaVA-1.5": {},
    "last layer": {"select_layer": -1},
    "linear connector": {"connector": "linear"},
    "no stage 1": {"stage1": False},
    "frozen LM": {"train_language": False},
    "CLIP tower": {"tower": "clip-tiny"},
    "SigLIP tower": {"tower": "siglip-tiny"},
}


def run(job: tuple) -> dict:
    import torch

    torch.set_num_threads(1)
    from vlm_primer.backbones.stages import stage_data, tiny_llava, train_stage, vqa_eval, vqa_set

    arm, seed, (s1, s2) = job
    change = ARMS[arm]
    start = time.perf_counter()
    model, transform = tiny_llava(change.get("tower", "clip-tiny-pairs"), connector=change.get("connector", "mlp"),
                                  select_layer=change.get("select_layer", -2), seed=seed)
    if change.get("stage1", True):
        train_stage(model, 1, stage_data("caption", model, transform, seed=seed), s1, seed=seed)
    history = train_stage(model, 2, stage_data("vqa", model, transform, seed=seed), s2, seed=seed,
                          train_language=change.get("train_language", True))
    acc = vqa_eval(model, transform, vqa_set(1200))["accuracy"]
    out = {"arm": arm, "seed": seed, "accuracy": {k: round(v, 4) for k, v in acc.items()},
           "final_loss": round(history[-1]["loss"], 4), "seconds": round(time.perf_counter() - start, 1)}
    print(f"  done {arm!r} seed {seed}: {out['accuracy']['all']:.3f} in {out['seconds']} s", flush=True)
    return out


def summarize(runs: list[dict]) -> None:
    print(f"{'arm':>17}  {'mean':>6}  {'min':>6}  {'max':>6}  seeds")
    for arm in ARMS:
        accs = [r["accuracy"]["all"] for r in runs if r["arm"] == arm]
        if accs:
            print(f"{arm:>17}  {statistics.mean(accs):6.3f}  {min(accs):6.3f}  {max(accs):6.3f}  {len(accs)}")


def main() -> None:
    ap = seed_parser(__doc__)
    ap.add_argument("--only", nargs="+", choices=tuple(ARMS), default=list(ARMS), metavar="ARM")
    ap.add_argument("--steps", type=int, nargs=2, default=None, metavar=("S1", "S2"),
                    help="a smoke run: stage 1 and stage 2 steps (printed, not saved)")
    args = ap.parse_args()
    steps = tuple(args.steps) if args.steps else STEPS
    jobs = [(arm, s, steps) for s in args.seeds for arm in args.only]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, jobs))
    summarize(results)
    if args.steps is not None:
        return
    write_seed_runs(OUT, "bench_llava_ablations.py", args.seeds, args.jobs, start, results,
                    replaces=lambda r: r["arm"] in args.only and r["seed"] in args.seeds, only=args.only, parts=ARMS,
                    steps={"stage1": steps[0], "stage2": steps[1], "batch": 32})


if __name__ == "__main__":
    main()
