"""benchmarks/bench_kosmos.py: its results file covers three seeds or more with the budget the script states, and
its stored reduced run is what the script computes now."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_kosmos as bench  # noqa: E402

RESULTS = json.loads(bench.OUT.read_text())
SCORES = ("referring_accuracy", "referring_accuracy_attribute", "referring_accuracy_relation")


def test_results_file_covers_three_seeds_at_the_stated_budget():
    assert (RESULTS["bins"], RESULTS["steps"], RESULTS["batch"], RESULTS["lr"], RESULTS["test"]) == (
        bench.BINS, bench.STEPS, bench.BATCH, bench.LR, bench.TEST)
    assert RESULTS["command"].startswith("python benchmarks/bench_kosmos.py --seeds")
    assert len({r["seed"] for r in RESULTS["runs"]}) >= 3
    for r in RESULTS["runs"]:
        assert r["steps"] == bench.STEPS and r["curve"][-1] == [bench.STEPS, round(r["referring_accuracy"], 4)]
        assert len(r["shown"]) == bench.SHOW and all(len(s["tokens"]) == 2 for s in r["shown"])


def test_the_stored_reduced_run_is_reproduced():
    stored = RESULTS["check"]
    threads = torch.get_num_threads()
    try:
        got = bench.run((0, RESULTS["check_size"]["steps"]), test=RESULTS["check_size"]["test"])
    finally:
        torch.set_num_threads(threads)
    got.pop("seconds")
    assert set(got) == set(stored)
    for key in SCORES:  # a 3-step model may move with float round-off on another CPU, by a few items at most
        assert got[key] == pytest.approx(stored[key], abs=0.05), key
    assert (got["ceiling"], got["largest_object_baseline"]) == (stored["ceiling"], stored["largest_object_baseline"])
