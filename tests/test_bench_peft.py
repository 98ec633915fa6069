"""benchmarks/bench_peft.py: its results file covers every method (and the LoRA rank sweep) at three seeds or more
with the budget the script states, and its stored reduced run is what the script computes now."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

import bench_peft as bench  # noqa: E402
from bench_check import rerun_check  # noqa: E402

RESULTS = json.loads(bench.OUT.read_text())


def test_results_file_covers_every_method_at_three_seeds():
    assert (RESULTS["steps"], RESULTS["batch"], RESULTS["shots"], RESULTS["test"]) == (
        bench.STEPS, bench.BATCH, bench.SHOTS, bench.TEST)
    assert RESULTS["lrs"] == bench.LRS
    assert RESULTS["command"].startswith("python benchmarks/bench_peft.py --seeds")
    assert RESULTS["methods"] == list(bench.METHODS)
    for method in bench.METHODS:
        runs = [r for r in RESULTS["runs"] if r["method"] == method]
        assert len({r["seed"] for r in runs}) >= 3, method
        assert all(r["lr"] == bench.LRS.get(method) for r in runs), method
    for rank in bench.RANKS:
        runs = [r for r in RESULTS["rank_sweep"]["runs"] if r["r"] == rank]
        assert len({r["seed"] for r in runs}) >= 3, rank
        assert all(r["lr"] == bench.RANK_LRS[rank] for r in runs), rank


def test_the_learning_rates_are_the_stored_validation_choice():
    selection = RESULTS["lr_selection"]
    assert (selection["seed"], selection["steps"], selection["grid"]) == (bench.SELECT_SEED, bench.STEPS,
                                                                          list(bench.GRID))
    chosen = {k: v["chosen"] for k, v in selection["runs"].items()}
    assert chosen == {**{m: lr for m, lr in bench.LRS.items()},
                      **{f"lora_r{r}": lr for r, lr in bench.RANK_LRS.items() if r != bench.LORA_R}}
    for key, v in selection["runs"].items():
        assert bench._best(v["grid"])["lr"] == v["chosen"], key
        assert {g["lr"] for g in v["grid"]} >= set(bench.GRID), key
        if v["chosen"] == max(bench.GRID):  # the best at the grid's edge: the grid went on
            assert {g["lr"] for g in v["grid"]} >= set(bench.EXTEND), key


def test_memory_is_the_stated_formula():
    for r in RESULTS["runs"] + RESULTS["rank_sweep"]["runs"]:
        assert r["memory_bytes"] == r["frozen_bytes"] + 16 * r["trainable"], r["method"]


@pytest.mark.parametrize("method", bench.METHODS)
def test_the_stored_reduced_run_is_reproduced(method):
    size = RESULTS["check_size"]
    got, stored = rerun_check(bench, RESULTS, (method, 0, size["steps"], size["test"], tuple(size["lrs"]),
                                               bench.LORA_R), key="method", drop=("seconds", "step_ms"))
    # a 3-step model's scores may move with float round-off on another CPU, by a few items at most
    for key in ("striped_top1", "solid_top1"):
        assert got[key] == pytest.approx(stored[key], abs=0.03), key
    for a, b in zip(got["grid"], stored["grid"], strict=True):
        assert a["lr"] == b["lr"]
        assert a["val_top1"] == pytest.approx(b["val_top1"], abs=0.03)
    for key in ("lr", "r", "trainable", "frozen_bytes", "memory_bytes", "blind_top1"):  # no training in these
        assert got[key] == stored[key], key
