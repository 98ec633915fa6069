"""benchmarks/bench_text_reading.py: its results file covers every arm at three seeds or more with the budget the
script states, and its stored reduced run is what the script computes now."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

import bench_text_reading as bench  # noqa: E402
from bench_check import rerun_check  # noqa: E402

RESULTS = json.loads(bench.OUT.read_text())


def test_results_file_covers_every_arm_at_three_seeds():
    budget = (RESULTS["steps"], RESULTS["batch"], RESULTS["lr"], RESULTS["text_size"], RESULTS["test"],
              RESULTS["rec_scenes"], RESULTS["rec_steps"])
    assert budget == (bench.STEPS, bench.BATCH, bench.LR, bench.TEXT_SIZE, bench.TEST, bench.REC_SCENES,
                      bench.REC_STEPS)
    assert RESULTS["world"] == json.loads(json.dumps(bench.WORLD))
    assert RESULTS["command"].startswith("python benchmarks/bench_text_reading.py --seeds")
    for arm in bench.ARMS:
        runs = [r for r in RESULTS["runs"] if r["arm"] == arm]
        assert len({r["seed"] for r in runs}) >= 3, arm
        assert all(r["steps"] == (0 if arm == "base" else bench.STEPS) for r in runs), arm
        assert all((r["recognizer_accuracy"] is None) == (arm != "recognizer") for r in runs), arm
    tokens = {r["arm"]: r["visual_tokens"] for r in RESULTS["runs"]}
    assert tokens["tiles"] > tokens["squeezed"] == tokens["recognizer"] == tokens["base"]


@pytest.mark.parametrize("arm", bench.ARMS)
def test_the_stored_reduced_run_is_reproduced(arm):
    size = RESULTS["check_size"]
    got, stored = rerun_check(bench, RESULTS, (arm, 0, size["steps"]), test=size["test"],
                              rec_scenes=size["rec_scenes"], rec_steps=size["rec_steps"])
    assert (got["visual_tokens"], got["text_tokens"]) == (stored["visual_tokens"], stored["text_tokens"])
    for key in ("accuracy", "anls"):  # a 2-step model's answers may move with float round-off, by a few items
        assert got[key] == pytest.approx(stored[key], abs=0.05), key
    if arm == "recognizer":
        assert got["recognizer_accuracy"] == pytest.approx(stored["recognizer_accuracy"], abs=0.05)
