"""benchmarks/bench_llava_ablations.py: one run of an arm trains both stages and scores VQA; its results
file (read by notebook 05) has every arm at three seeds or more."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_llava_ablations as bench  # noqa: E402


def test_one_run_trains_and_scores(capsys):
    threads = torch.get_num_threads()
    try:
        out = bench.run(("no stage 1", 0, (1, 2)))
    finally:
        torch.set_num_threads(threads)
    assert out["arm"] == "no stage 1" and 0.0 <= out["accuracy"]["all"] <= 1.0
    assert "size" not in out["accuracy"], "size questions are trivial in the tiny world and left out"


def test_results_file_covers_every_arm_at_three_seeds():
    results = json.loads(bench.OUT.read_text())
    assert results["steps"] == {"stage1": bench.STEPS[0], "stage2": bench.STEPS[1], "batch": 32}
    for arm in bench.ARMS:
        seeds = {r["seed"] for r in results["runs"] if r["arm"] == arm}
        assert len(seeds) >= 3, f"{arm}: {sorted(seeds)}"
