"""benchmarks/bench_dpo.py: its results file covers every arm at three seeds or more with the budget the script
states, and its stored reduced run is what the script computes now."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

import bench_dpo as bench  # noqa: E402
from bench_check import rerun_check  # noqa: E402

RESULTS = json.loads(bench.OUT.read_text())
SCORES = ("pope", "chair_s", "chair_i", "chair_s_color", "chair_i_color", "coverage", "vqa", "pref_acc", "logp_acc")


def test_results_file_covers_every_arm_at_three_seeds():
    budget = (RESULTS["steps"], RESULTS["batch"], RESULTS["lr"], RESULTS["beta"])
    assert budget == (bench.STEPS, bench.BATCH, bench.LR, bench.BETA)
    assert (RESULTS["eval_sizes"], RESULTS["heldout_pairs"], RESULTS["tail"]) == (bench.EVAL, bench.HELDOUT,
                                                                                   bench.TAIL)
    assert RESULTS["command"].startswith("python benchmarks/bench_dpo.py --seeds")
    for arm in bench.ARMS:
        runs = [r for r in RESULTS["runs"] if r["arm"] == arm]
        assert len({r["seed"] for r in runs}) >= 3, arm
        assert all(r["steps"] == (0 if arm == "base" else bench.STEPS) for r in runs), arm
    for r in RESULTS["runs"]:
        if r["arm"] == "base":  # the base model is its own reference: every margin 0, the DPO loss log 2
            assert r["pref_acc"] == 0.5 and r["train_dpo_loss"] == pytest.approx(math.log(2), abs=1e-6)


@pytest.mark.parametrize("arm", bench.ARMS)
def test_the_stored_reduced_run_is_reproduced(arm):
    size = RESULTS["check_size"]
    got, stored = rerun_check(bench, RESULTS, (arm, 0, size["steps"]), eval_sizes=size["eval_sizes"],
                              heldout=size["heldout"])
    # a 3-step model's scores may move with float round-off on another CPU, by a few items at most
    for key in SCORES:
        assert got[key] == pytest.approx(stored[key], abs=0.03), key
    for key in ("heldout_margin", "heldout_dpo_loss", "train_dpo_loss"):
        assert got[key] == pytest.approx(stored[key], abs=0.01), key
    if arm != "base":
        assert got["train_loss"] == pytest.approx(stored["train_loss"], abs=0.01)
        assert got["curve"] == pytest.approx(stored["curve"], abs=0.01)
    for key in ("pope_blind", "chair_s_blind", "vqa_blind"):
        assert got[key] == stored[key], key  # the blind baselines never see the model
