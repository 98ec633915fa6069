"""benchmarks/bench_anyres.py: one seed trains ``llava-next-tiny``'s recipe and scores both views; its results
file (read by notebook 05) comes from the current recipe at three seeds or more."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_anyres as bench  # noqa: E402

from vlm_primer.zoo import llava_next_recipes  # noqa: E402


def test_one_seed_trains_and_scores_both_views():
    threads = torch.get_num_threads()
    try:
        out = bench.run((1, 1))
    finally:
        torch.set_num_threads(threads)
    acc = out["accuracy"]
    assert out["seed"] == 1
    assert {"tiles_all", "squeezed_all", "tiles_shapeset_all", "squeezed_shapeset_all"} <= acc.keys()
    assert all(0.0 <= v <= 1.0 for v in acc.values())


def test_results_file_has_three_seeds_of_the_current_recipe():
    results = json.loads(bench.OUT.read_text())
    assert results["steps"] == llava_next_recipes.STEPS and results["squeezed_fraction"] == llava_next_recipes.SQUEEZE
    assert len({r["seed"] for r in results["runs"]}) >= 3
