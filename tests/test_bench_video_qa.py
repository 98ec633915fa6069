"""benchmarks/bench_video_qa.py: its results file covers every arm at three seeds or more with the budget the script
states, each arm sees what it says (and no more), and its stored reduced run is what the script computes now."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

import bench_video_qa as bench  # noqa: E402
from vlm_primer.video.data import frame_indices  # noqa: E402
from bench_check import rerun_check  # noqa: E402

RESULTS = json.loads(bench.OUT.read_text())


def test_results_file_covers_every_arm_at_three_seeds():
    budget = (RESULTS["train"], RESULTS["eval"], RESULTS["steps"], RESULTS["batch"], RESULTS["lr"])
    assert budget == (bench.TRAIN, bench.EVAL, bench.STEPS, bench.BATCH, bench.LR)
    assert RESULTS["command"].startswith("python benchmarks/bench_video_qa.py --seeds")
    for arm in bench.ARMS:
        runs = [r for r in RESULTS["runs"] if r["arm"] == arm]
        assert len({r["seed"] for r in runs}) >= 3, arm
        assert all(set(r["temporal_by_type"]) == {"direction", "first_event"} for r in runs)
        curves = [list(r.get(f"{s}_by_frames", [])) for r in runs for s in bench.SUITES]
        assert all(c == ([str(k) for k in bench.FRAME_COUNTS] if arm == "sampled" else []) for c in curves), arm
    assert 0.25 < RESULTS["chance"] < 0.5


def test_each_arm_sees_what_it_says():
    d = bench.data("test", bench.CHECK["eval"])["temporal"]
    frames, ids = bench.view(d, "frames")
    single, sid = bench.view(d, "single")
    blind, bid = bench.view(d, "blind")
    assert frames.shape[1] == 9 and ids == list(range(9))
    torch.testing.assert_close(single[:, 0], frames[:, bench.MIDDLE])
    assert sid == bid == [bench.MIDDLE] and blind.shape == single.shape
    assert (frames[:, 0] - frames[:, 8]).abs().amax((1, 2)).min() > 1e-3  # every clip's frames differ over time
    for k in bench.FRAME_COUNTS:
        tokens, kid = bench.view(d, "sampled", k=k)
        assert kid == frame_indices(9, k) and torch.equal(tokens, frames[:, kid])
    assert bench.view(d, "sampled", k=1)[1] == sid and bench.view(d, "sampled", k=9)[1] == ids
    # merged: each frame's tokens four at a time, concatenated; a merged token is real when any of its four is
    n = int(d["mask"].sum(1).max())
    merged, mid, mmask = bench.inputs(d, "merged", n=n)
    m, width = bench.MERGE, -(-n // bench.MERGE) * bench.MERGE
    assert mid == ids and merged.shape == (len(d["mask"]), 9, width // m, 64 * m)
    torch.testing.assert_close(merged[:, :, 1, :64], frames[:, :, m])
    torch.testing.assert_close(merged[:, :, 0, 64:128], frames[:, :, 1])
    assert torch.equal(mmask, d["mask"][:, :width].unflatten(1, (-1, m)).any(-1))
    plain, _, pmask = bench.inputs(d, "frames", n=n)
    assert plain.shape[2] == n and torch.equal(pmask, d["mask"][:, :n])
    assert (blind - single).abs().max() > 1e-3  # the blank frame is not the middle one


@pytest.mark.parametrize("arm", bench.ARMS)
def test_the_stored_reduced_run_is_reproduced(arm):
    size = RESULTS["check_size"]
    got, stored = rerun_check(bench, RESULTS, (arm, 0), train=size["train"], eval_size=size["eval"],
                              steps=size["steps"])
    # a 3-step model's answers may move with float round-off on another CPU, by a few items at most
    for suite in bench.SUITES:
        assert got[suite] == pytest.approx(stored[suite], abs=0.09)
