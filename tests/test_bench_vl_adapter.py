"""benchmarks/bench_vl_adapter.py: its results file covers every arm at three seeds or more with the budget the
script states, the parameter counts follow from the model, and its stored reduced run is what the script computes
now."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

import bench_vl_adapter as bench  # noqa: E402
from bench_check import rerun_check  # noqa: E402

RESULTS = json.loads(bench.OUT.read_text())


def test_results_file_covers_every_arm_at_three_seeds():
    budget = (RESULTS["stage1"], RESULTS["steps"], RESULTS["batch"], RESULTS["reduction"], RESULTS["lr_full"],
              RESULTS["lr_adapter"], RESULTS["eval_vqa"], RESULTS["eval_instruct"])
    assert budget == (bench.STAGE1, bench.STEPS, bench.BATCH, bench.REDUCTION, bench.LR_FULL, bench.LR_ADAPTER,
                      bench.EVAL_VQA, bench.EVAL_INSTRUCT)
    assert RESULTS["command"].startswith("python benchmarks/bench_vl_adapter.py --seeds")
    for arm in bench.ARMS:
        runs = [r for r in RESULTS["runs"] if r["arm"] == arm]
        assert len({r["seed"] for r in runs}) >= 3, arm
    trainable = {r["arm"]: r["trainable"] for r in RESULTS["runs"]}
    # per-task arms keep two of what the shared arms keep once
    assert trainable["full_per_task"] == 2 * trainable["full_shared"]
    assert trainable["adapter_per_task"] == 2 * trainable["adapter_shared"]
    assert trainable["stage1"] == 0 and 0 < 7 * trainable["adapter_shared"] < trainable["full_shared"]


@pytest.mark.parametrize("arm", bench.ARMS)
def test_the_stored_reduced_run_is_reproduced(arm):
    size = RESULTS["check_size"]
    got, stored = rerun_check(bench, RESULTS, (arm, 0, size["steps"]), stage1=size["stage1"],
                              eval_vqa=size["eval_vqa"], eval_instruct=size["eval_instruct"])
    assert got["trainable"] == stored["trainable"]
    # a 3-step model's answers may move with float round-off on another CPU, by a few items at most
    assert got["vqa"] == pytest.approx(stored["vqa"], abs=0.06)
    assert got["instruct_loss"] == pytest.approx(stored["instruct_loss"], abs=0.01)
