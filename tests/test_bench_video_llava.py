"""benchmarks/bench_video_llava.py times the same model on both sides: the first step's loss is the same, the
frozen parts are the same on both sides, and a quick run prints its ratio (no timing is checked)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_video_llava as bench  # noqa: E402


def test_both_sides_take_the_same_first_step():
    data = bench.batch(2, 2)
    losses = {side: bench.stepper(side, 2)(*data) for side in ("ours", "theirs")}
    assert losses["ours"] == pytest.approx(losses["theirs"], abs=1e-4)
    trainable = {side: sum(p.numel() for p in bench.build(side, 2).parameters() if p.requires_grad)
                 for side in ("ours", "theirs")}
    assert trainable["ours"] == trainable["theirs"] > 0


def test_quick_run_prints_the_ratio(capsys):
    t = bench.main(["--batch", "1", "--frames", "1", "--repeats", "1"])
    assert set(t) == {"ours", "theirs"} and "ratio" in capsys.readouterr().out
