"""benchmarks/bench_bottlenecks.py: its arms build, train a step and report accuracy, parameters, tokens and time
(the full run, three seeds, is written to benchmarks/results/bottlenecks.json for notebook 05b)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_bottlenecks as bench  # noqa: E402


@pytest.mark.parametrize("arm", ["Qwen resampler", "InstructBLIP", "Flamingo"])
def test_an_arm_trains_and_reports(arm):
    threads = torch.get_num_threads()
    try:
        out = bench.run((arm, 1, 1))
    finally:
        torch.set_num_threads(threads)
    assert out["arm"] == arm and 0.0 <= out["accuracy"]["vqa_all"] <= 1.0 and out["trainable_params"] > 0
    assert out["visual_tokens_per_image"] == {"Qwen resampler": bench.QUERIES, "InstructBLIP": 8, "Flamingo": 8}[arm]
    assert out["input_positions_per_image"] == (1 if arm == "Flamingo" else out["visual_tokens_per_image"])


def test_results_file_has_three_seeds_of_every_arm_at_the_recipes_budget():
    import json

    from vlm_primer.zoo import bottleneck_recipes

    results = json.loads(bench.OUT.read_text())
    assert results["steps"] == {"stage1": bottleneck_recipes.STAGE1_STEPS, "stage2": bottleneck_recipes.STAGE2_STEPS,
                                "batch": 32} and results["queries"] == bench.QUERIES
    for arm in bench.ARMS:
        assert len({r["seed"] for r in results["runs"] if r["arm"] == arm}) >= 3, arm
