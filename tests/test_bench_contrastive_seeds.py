"""benchmarks/bench_contrastive_seeds.py (read by notebooks 02 and 06): its results file covers every part at
three seeds or more, and a partial rerun (--only) replaces its part alone and lists itself."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_contrastive_seeds as bench  # noqa: E402


def test_contrastive_seeds_results_cover_every_part_at_three_seeds():
    """Every part of chapter 02's benchmark at three seeds or more, with the budget the script states."""
    got = json.loads(bench.OUT.read_text())
    assert got["command"].startswith("python benchmarks/bench_contrastive_seeds.py --seeds")
    assert got["sweep_pairs"] == bench.SWEEP_PAIRS
    for kind in ("zeroshot", "siglip", "binding", "llip"):
        assert len({r["seed"] for r in got["runs"] if r["kind"] == kind}) >= 3, kind
    for name in bench.SWEEP_LOSSES:
        for batch in bench.SWEEP_BATCHES:
            seeds = {r["seed"] for r in got["runs"] if r["kind"] == "sweep" and r["loss_name"] == name
                     and r["batch"] == batch}
            assert len(seeds) >= 3, (name, batch)


def test_contrastive_seeds_partial_rerun_replaces_its_part_only(tmp_path, monkeypatch):
    """`--only zeroshot` replaces the zeroshot runs, keeps every other part's, and lists itself as a rerun."""
    class InProcess:   # the script's pool, run in this process so that the fake run below is used
        def __init__(self, jobs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def map(self, fn, jobs):
            return [fn(job) for job in jobs]

    out = tmp_path / "contrastive_seeds.json"
    shutil.copy(bench.OUT, out)
    before = json.loads(out.read_text())
    monkeypatch.setattr(bench, "OUT", out)
    monkeypatch.setattr(bench, "ProcessPoolExecutor", InProcess)
    monkeypatch.setattr(bench, "run", lambda job: {"kind": job[0], "seed": job[1], "zero_shot_top1": 0.5})
    monkeypatch.setattr(sys, "argv", ["bench_contrastive_seeds.py", "--only", "zeroshot", "--seeds", "0", "1", "2"])
    bench.main()
    after = json.loads(out.read_text())
    assert after["command"] == before["command"] and after["sweep_pairs"] == before["sweep_pairs"]
    assert after["reruns"][-1]["command"] == \
        "python benchmarks/bench_contrastive_seeds.py --seeds 0 1 2 --only zeroshot"
    assert [r for r in after["runs"] if r["kind"] != "zeroshot"] == \
        [r for r in before["runs"] if r["kind"] != "zeroshot"]
    assert [r["zero_shot_top1"] for r in after["runs"] if r["kind"] == "zeroshot"] == [0.5] * 3
