"""benchmarks/bench_data_recipes.py: its results file (read by notebook 06) covers every arm at three seeds or more
with the budget the script states, and its stored reduced run is what the script computes now."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_data_recipes as bench  # noqa: E402

RESULTS = json.loads(bench.OUT.read_text())


def test_results_file_covers_every_arm_at_three_seeds_with_the_stated_budget():
    assert (RESULTS["steps"], RESULTS["batch"], RESULTS["pool"]) == (bench.STEPS, bench.BATCH, bench.POOL)
    assert (RESULTS["zipf"], RESULTS["noise"]) == (bench.ZIPF, bench.NOISE)
    assert RESULTS["command"].startswith("python benchmarks/bench_data_recipes.py --seeds")
    for part, arms in bench.ARMS.items():
        for arm in arms:
            seeds = {r["seed"] for r in RESULTS["runs"] if r["part"] == part and r["arm"] == arm}
            assert len(seeds) >= 3, f"{part}/{arm}: {sorted(seeds)}"


# one arm of each part: the stored reduced run must be what the script computes now
CHECKED = [("balance", "zipf"), ("hparams", "res36"), ("dedup", "deduplicated"), ("pruning", "top0.6"),
           ("synthetic", "recaption_bottom0.4")]


@pytest.mark.parametrize("part, arm", CHECKED)
def test_the_stored_reduced_run_is_reproduced(part, arm):
    stored = next(r for r in RESULTS["check"] if r["part"] == part and r["arm"] == arm)
    threads = torch.get_num_threads()
    try:
        got = bench.run((part, arm, 0, RESULTS["check_size"]["steps"], RESULTS["check_size"]["pool"]))
    finally:
        torch.set_num_threads(threads)
    got.pop("seconds")
    assert set(got) == set(stored)
    # what the 3-step model predicts may move with float round-off on another CPU; the data side may not
    trained = ("zero_shot_top1", "shape_accuracy")
    assert got["zero_shot_top1"] == pytest.approx(stored["zero_shot_top1"], abs=0.03)
    for shape, acc in stored.get("shape_accuracy", {}).items():
        assert got["shape_accuracy"][shape] == pytest.approx(acc, abs=0.1)
    assert {k: v for k, v in got.items() if k not in trained} == {k: v for k, v in stored.items() if k not in trained}


def test_a_partial_rerun_keeps_the_full_runs_record_and_lists_itself(tmp_path):
    import time

    from common import write_seed_runs

    def write(out, seeds, results, **kw):
        return write_seed_runs(out, "bench_x.py", seeds, 2, time.perf_counter(), results, steps=5, **kw)

    out = tmp_path / "r.json"
    write(out, [0, 1, 2], [{"part": "a"}, {"part": "b"}])
    full = json.loads(out.read_text())
    runs = write(out, [0, 1], [{"part": "b", "new": 1}], replaces=lambda r: r["part"] == "b", only=["b"],
                 parts=["a", "b"])
    rerun = json.loads(out.read_text())
    record = ("command", "seeds", "date", "minutes")
    assert {k: rerun[k] for k in record} == {k: full[k] for k in record} and "reruns" not in full
    assert [r["command"] for r in rerun["reruns"]] == ["python benchmarks/bench_x.py --seeds 0 1 --only b"]
    assert runs == rerun["runs"] == [{"part": "a"}, {"part": "b", "new": 1}] and rerun["steps"] == 5
    write(out, [3], [])   # a full run starts afresh
    assert "reruns" not in json.loads(out.read_text()) and json.loads(out.read_text())["runs"] == []
    first = tmp_path / "first.json"   # a partial run with no file before it names its parts in its command
    write(first, [0], [], only=["a"], parts=["a", "b"])
    assert json.loads(first.read_text())["command"] == "python benchmarks/bench_x.py --seeds 0 --only a"


def test_a_run_that_adds_a_seed_to_every_part_is_a_rerun_too(tmp_path):
    """All parts asked for, but the old seeds kept: the file's record stays the full run's, and the seed run
    is listed under reruns (its command names no --only)."""
    import time

    from common import write_seed_runs

    out, parts = tmp_path / "r.json", ["a", "b"]
    write_seed_runs(out, "bench_x.py", [0, 1, 2], 2, time.perf_counter(),
                    [{"arm": p, "seed": s} for s in (0, 1, 2) for p in parts], only=parts, parts=parts)
    new = [{"arm": p, "seed": 3} for p in parts]
    runs = write_seed_runs(out, "bench_x.py", [3], 1, time.perf_counter(), new, only=parts, parts=parts,
                           replaces=lambda r: r["seed"] == 3)
    got = json.loads(out.read_text())
    assert got["command"] == "python benchmarks/bench_x.py --seeds 0 1 2" and got["seeds"] == [0, 1, 2]
    assert [(r["command"], r["machine"].split(", ")[1]) for r in got["reruns"]] == \
        [("python benchmarks/bench_x.py --seeds 3", "1 run in parallel on one thread each")]
    assert len(runs) == 8 and runs[-2:] == new

