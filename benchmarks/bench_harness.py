"""Throughput of the evaluation harness (chapter 07): items per second of each suite for the book's models, on ONE
thread, at each suite's default size.

    python benchmarks/bench_harness.py [--n N]

For every suite it evaluates the zoo models that have the capability it needs and prints the items/s of the model's
pass over the items (building the items and the blind baseline are not counted) with the score beside it. Runs in
a few minutes; speed is printed, never asserted.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from vlm_primer.evaluation.harness import evaluate, wrap  # noqa: E402
from vlm_primer.evaluation.suites import SUITES  # noqa: E402

MODELS = {"match": ["clip-tiny", "siglip-tiny", ("blip-tiny", "itm"), "lm-tiny"],
          "caption": ["blip-tiny", "coca-tiny", "llava-tiny"],
          "answer": ["llava-tiny", "instructblip-tiny", "flamingo-tiny"],
          "generate": ["ar-t2i-tiny", "dit-tiny"]}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=None, help="items per suite (each suite's default if omitted)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    print(f"{'suite':<12} {'model':<20} {'items':>6} {'items/s':>9} {'score':>7} {'blind':>7} {'wall s':>7}")
    for suite in SUITES.values():
        for spec in MODELS[suite.needs]:
            name, head = spec if isinstance(spec, tuple) else (spec, "itc")
            t = time.perf_counter()
            r = evaluate(wrap(name, head=head), suite.name, n=args.n, keep_items=False)
            label = name + (f" ({head})" if head != "itc" else "")
            rows.append({"suite": suite.name, "model": label, "n": r["n"], "items_per_second": r["items_per_second"],
                         "score": r["score"], "blind": r["blind"]["score"], "wall": time.perf_counter() - t})
            row = rows[-1]
            print(f"{row['suite']:<12} {label:<20} {row['n']:>6} {row['items_per_second']:>9.1f} {row['score']:>7.3f} "
                  f"{row['blind']:>7.3f} {row['wall']:>7.1f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
