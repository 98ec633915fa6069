"""Chapter 05b's in-context test: does Flamingo learn from the examples in its prompt once trained on interleaved data?

    python benchmarks/bench_fewshot.py --seeds 0 1 2 --jobs 2

A quality benchmark. Two arms, each a Flamingo on the zoo's frozen ``clip-tiny-pairs`` tower and frozen ``lm-tiny``
(the tiny preset's perceiver and gated layers), trained for the zoo recipe's 1,500 steps of 32 sequences:

* ``single image``: ``flamingo-tiny``'s recipe (one image and one question per sequence; seed 0 is the zoo model);
* ``interleaved``: the same questions, each after 0-4 solved examples with their own pictures
  (:class:`~vlm_primer.backbones.fewshot.InterleavedVQADataset`), the layout of a few-shot prompt, as Flamingo's
  interleaved web pages (M3W) teach it to read one.

Each model then answers 300 held-out questions after 0, 1, 2 and 4 examples drawn from the training split
(:func:`~vlm_primer.backbones.fewshot.few_shot_vqa`, one draw). Writes ``benchmarks/results/fewshot.json`` (read by
notebook 05b); ``--steps N`` makes a smoke run, printed, not saved.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import seed_parser, write_seed_runs

OUT = Path(__file__).resolve().parent / "results" / "fewshot.json"
ARMS = ("single image", "interleaved")
SHOTS = (0, 1, 2, 4)
QUESTIONS = 300


def run(job: tuple[str, int, int | None]) -> dict:
    import torch

    torch.set_num_threads(1)
    from vlm_primer import zoo
    from vlm_primer.backbones import Flamingo, FlamingoConfig
    from vlm_primer.backbones.fewshot import InterleavedVQADataset, few_shot_vqa
    from vlm_primer.backbones.stages import TINY_OBJECTS, TINY_WORLD, train_stage, vqa_set
    from vlm_primer.utils import seed_everything
    from vlm_primer.world import ShapesVQADataset, WorldConfig
    from vlm_primer.zoo import bottleneck_recipes as R

    arm, seed, steps = job
    steps = steps or R.STAGE2_STEPS
    transform = zoo.preprocess("clip-tiny-pairs")
    start = time.perf_counter()
    if arm == "single image":
        model = R.train_flamingo(steps, seed=seed)
    else:  # built as R.train_flamingo builds it; only the data differ
        seed_everything(seed)
        new_layers = {k: v for k, v in FlamingoConfig.PRESETS["tiny"].items() if k not in ("vision", "text")}
        model = Flamingo.from_parts(zoo.load("clip-tiny-pairs").vision, zoo.load("lm-tiny"), context_length=256,
                                    **new_layers)
        questions = ShapesVQADataset("train", R.TRAIN_SIZE, config=WorldConfig(**TINY_WORLD), num_objects=TINY_OBJECTS,
                                     seed=seed + 1)
        train_stage(model, 2, InterleavedVQADataset(questions, transform, seed=seed), steps, lr=R.LR,
                    train_language=False, seed=seed)
    seconds = time.perf_counter() - start
    test, support = vqa_set(QUESTIONS, seed=5), vqa_set(2000, split="train")
    accuracy = {str(k): round(few_shot_vqa(model.eval(), transform, test, support, k)["accuracy"]["all"], 4)
                for k in SHOTS}
    print(f"  {arm:>12} seed {seed}: {accuracy} in {seconds:.0f} s", flush=True)
    return {"arm": arm, "seed": seed, "accuracy": accuracy, "seconds": round(seconds, 1)}


def main() -> None:
    ap = seed_parser(__doc__)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--steps", type=int, default=None, help="a smoke run of this many steps (printed, not saved)")
    args = ap.parse_args()
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:  # the long interleaved runs first
        runs = list(pool.map(run, [(a, s, args.steps) for a in reversed(args.arms) for s in args.seeds]))
    if args.steps is not None:
        return
    from vlm_primer.zoo import bottleneck_recipes as R

    write_seed_runs(OUT, "bench_fewshot.py", args.seeds, args.jobs, start, runs, steps=R.STAGE2_STEPS, batch=32,
                    questions=QUESTIONS, shots=list(SHOTS))


if __name__ == "__main__":
    main()
