"""benchmarks/verify.py: every quality results file has stored runs to redo; a difference anywhere in a run is
found; the code that wrote a run is found and run again; a run the code has changed is called stale; the quick
runs (seconds each) are current."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import verify  # noqa: E402

QUALITY = sorted(p.stem for p in verify.RESULTS.glob("*.json")
                 if p.stem != "verified" and "seeds" in json.loads(p.read_text()))


def test_every_quality_results_file_has_runs_to_redo():
    assert sorted(verify.SPOTS) == QUALITY
    for name, (_, spots) in verify.SPOTS.items():
        assert spots, name
        for pick, _ in spots:
            verify.stored_run(verify._file(name), pick)  # exactly one


def test_the_last_full_check_found_every_file_current():
    record = json.loads(verify.OUT.read_text())
    assert sorted(record) == QUALITY
    for name, r in record.items():
        assert r["current"], f"{name}.json was found stale on {r['date']}: rerun {verify._file(name)['command']}"
        redone = sorted(json.dumps(run["run"], sort_keys=True) for run in r["runs"])
        assert redone == sorted(json.dumps(pick, sort_keys=True) for pick, _ in verify.SPOTS[name][1]), name


def test_a_pick_that_is_not_exactly_one_run_is_refused():
    results = {"runs": [{"arm": "a", "seed": 0}, {"arm": "a", "seed": 1}]}
    with pytest.raises(LookupError, match="2 stored runs match"):
        verify.stored_run(results, {"arm": "a"})
    with pytest.raises(LookupError, match="0 stored runs match"):
        verify.stored_run(results, {"arm": "b"})


def test_differences_finds_every_change_and_skips_timings():
    stored = {"seed": 0, "seconds": 12.0, "accuracy": {"all": 0.75, "by": [0.5, 1.0]}, "curve": [[1, 2.5]]}
    fresh = {"seed": 0, "seconds": 99.0, "accuracy": {"all": 0.75, "by": (0.5, 1.0)}, "curve": [(1, 2.5)]}
    assert verify.differences(stored, fresh) == []  # tuples are what JSON stores as lists; timings are not results
    changed = {**fresh, "accuracy": {"all": 0.75, "by": [0.5, 0.9]}}
    assert verify.differences(stored, changed) == [("accuracy.by[1]", 1.0, 0.9)]
    assert verify.differences(stored, {**fresh, "extra": 1}) == [("extra", None, 1)]
    assert verify.differences(stored, {**fresh, "curve": [[1, 2.5], [2, 2.0]]}) == [
        ("curve", [[1, 2.5]], [[1, 2.5], [2, 2.0]])]
    assert verify.differences(stored, {**fresh, "seed": 1e-12}) == [("seed", 0, 1e-12)]
    assert verify.differences({"gap": 0.015519141}, {"gap": 0.015519133}) == []  # float32 round-off
    assert verify.differences({"gap": 0.0155191}, {"gap": 0.0155192}) == [("gap", 0.0155191, 0.0155192)]
    assert verify.differences({"ok": True}, {"ok": 1}) == [("ok", True, 1)]


def test_an_unknown_file_is_named(capsys):
    with pytest.raises(SystemExit):
        verify.main(["maskign"])
    assert "no results file named maskign; choose from" in capsys.readouterr().err


GIT = verify.has_history()
needs_git = pytest.mark.skipif(not GIT, reason="needs the project's whole git history")
CONTROL = ("masking", {"mask_ratio": 0.0, "seed": 0})  # 3 seconds: an untrained encoder's linear probe


def _keep_threads(fn, *args):
    threads = torch.get_num_threads()  # runs set one thread
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)


@needs_git
def test_the_writing_commit_holds_the_run_and_its_code_gives_todays_numbers():
    commit = verify.writing_commit(*CONTROL)
    assert commit is not None
    stored = verify.stored_run(verify._file(CONTROL[0]), CONTROL[1])
    assert verify.differences(verify.stored_run(verify._file(CONTROL[0], commit), CONTROL[1]), stored) == []
    parents = verify._git("log", "--format=%P", "-1", commit).split()
    if parents:  # the commit before it did not hold this run as it stands (no file, no such run, or other numbers)
        try:
            assert verify.differences(verify.stored_run(verify._file(CONTROL[0], parents[0]), CONTROL[1]), stored)
        except (subprocess.CalledProcessError, LookupError):
            pass
    assert verify.differences(verify.run_at(commit, *CONTROL), _keep_threads(verify.fresh_run, *CONTROL)) == []


@needs_git
def test_a_run_the_code_has_changed_is_stale(monkeypatch):
    """The control: today's code made to give a different number (as a code change would) is caught, because
    the writing commit's code, run the same way here, still gives the stored one."""
    rerun, spots = verify.SPOTS[CONTROL[0]]

    def changed(b, res, r):
        out = rerun(b, res, r)
        return {**out, "probe_shape": out["probe_shape"] + 0.01}

    monkeypatch.setitem(verify.SPOTS, CONTROL[0], (changed, spots))
    got = _keep_threads(verify.check, CONTROL)
    assert not got["reproduced"] and not got["current"]
    assert [d[0] for d in got["changed_by_code"]] == ["probe_shape"]
    assert "STALE; the code changed it since" in verify.verdict(got)


@pytest.mark.parametrize("job", verify.jobs(list(verify.SPOTS), quick=True), ids=lambda j: f"{j[0]}-{j[1]}")
def test_the_quick_runs_are_current(job):
    if not GIT:  # without the history only the stored numbers are there to compare
        got = _keep_threads(verify.fresh_run, *job)
        if verify.differences(verify.stored_run(verify._file(job[0]), job[1]), got):
            pytest.skip("not reproduced here, and no git history to run the code that wrote it")
        return
    got = _keep_threads(verify.check, job)
    assert got["current"], verify.verdict(got)
