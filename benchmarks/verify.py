"""Is each quality benchmark's results file still what the code computes? Redo one stored run per file and see.

    python benchmarks/verify.py                     # every file (about 40 minutes on 2 cores)
    python benchmarks/verify.py masking fewshot     # some files
    python benchmarks/verify.py --quick             # only the quick runs (seconds each; the tests run them too)

A chapter quotes a results file written days ago; the code has changed since. For each file, :data:`SPOTS` names
the stored runs to redo: a cheap one that trains, and (marked quick) one that takes seconds where the file has
one (a run that only evaluates, or trains a few steps). Each is run again with today's code, one thread, in a
worker process like the benchmark's own, and every number is compared with the stored one (timings aside):

* **reproduced**: the stored numbers to the last digit (an unrounded float to float32 round-off);
* otherwise the same run is redone with the code of the commit that wrote those numbers (from ``git archive``,
  on this machine). Equal to today's run: **current**; the code has not changed the result, this machine
  computes it differently (another CPU's kernels round differently, and training turns a last-digit difference
  into a different model, like another seed would). Different: **stale**; rerun the file's command (printed).

One run stands for its file: a change that only touches other arms goes unseen; code edited between a run and
its commit too. The outcome of each file is written to `benchmarks/results/verified.json` (with the commit and
this machine's environment); the exit status is 1 if any file is stale.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
OUT = RESULTS / "verified.json"
TIMING = ("seconds", "minutes", "step_ms")  # how long a run took: not a result
ROUNDOFF = 1e-6  # float32 round-off, relative: a stored unrounded float32 measured by reordered arithmetic


def _bench(name: str) -> Any:
    return importlib.import_module(f"bench_{name}")


# file -> (rerun(bench, results, stored run) -> fresh run, [stored runs to redo: fields that pick one, "quick"?])
SPOTS: dict[str, tuple[Callable[[Any, dict, dict], dict], list[tuple[dict, bool]]]] = {
    "anyres": (lambda b, res, r: b.run((r["seed"], None)), [({"seed": 1}, False)]),
    "bottlenecks": (lambda b, res, r: b.run((r["arm"], r["seed"], None)),
                    [({"arm": "Flamingo, no dense layers", "seed": 0}, False)]),
    "contrastive_seeds": (lambda b, res, r: b.run((r["kind"], r["seed"], None)
                                                 + ((r["loss_name"], r["batch"]) if r["kind"] == "sweep" else ())),
                          [({"kind": "binding", "seed": 1}, False),
                           ({"kind": "sweep", "seed": 0, "loss_name": "CLIP", "batch": 128}, False)]),
    "fewshot": (lambda b, res, r: b.run((r["arm"], r["seed"], None)), [({"arm": "single image", "seed": 2}, False)]),
    "generative": (lambda b, res, r: b.model_run(r["model"], r["seed"]) if r["part"] == "models"
                   else b.capfilt_run(r["seed"]),
                   [({"part": "models", "model": "coca", "seed": 0}, True),
                    ({"part": "models", "model": "coca", "seed": 1}, False)]),
    "llava_ablations": (lambda b, res, r: b.run((r["arm"], r["seed"], b.STEPS)),
                        [({"arm": "no stage 1", "seed": 2}, False)]),
    "masking": (lambda b, res, r: b.run(r["mask_ratio"], r["seed"]),
                [({"mask_ratio": 0.0, "seed": 0}, True), ({"mask_ratio": 0.9, "seed": 2}, False)]),
    "data_recipes": (lambda b, res, r: b.run((r["part"], r["arm"], r["seed"], res["steps"], res["pool"])),
                     [({"part": "hparams", "arm": "res36", "seed": 2}, False)]),
    "dpo": (lambda b, res, r: b.run((r["arm"], r["seed"], res["steps"])),
            [({"arm": "base", "seed": 0}, True), ({"arm": "sft_chosen", "seed": 0}, False)]),
    "kosmos": (lambda b, res, r: b.run((r["seed"], res["steps"])), [({"seed": 2}, False)]),
    "negatives": (lambda b, res, r: b.run((r["arm"], r["seed"], res["steps"])),
                  [({"arm": "clip_ft", "seed": 0}, False)]),
    "peft": (lambda b, res, r: b.run((r["method"], r["seed"], res["steps"], res["test"], (r["lr"],),
                                      r["r"] or b.LORA_R)),
             [({"method": "zero_shot", "seed": 0}, True), ({"method": "linear_probe", "seed": 1}, True),
              ({"method": "lora", "seed": 0}, True)]),
    "text_reading": (lambda b, res, r: b.run((r["arm"], r["seed"], res["steps"])),
                     [({"arm": "base", "seed": 0}, True), ({"arm": "squeezed", "seed": 1}, False)]),
    "video_qa": (lambda b, res, r: b.run((r["arm"], r["seed"])), [({"arm": "single", "seed": 2}, False)]),
    "vl_adapter": (lambda b, res, r: b.run((r["arm"], r["seed"], res["steps"])),
                   [({"arm": "stage1", "seed": 0}, False)]),
}


def stored_run(results: dict, pick: dict) -> dict:
    """The one run of ``results`` whose fields include ``pick``."""
    found = [r for r in results["runs"] if all(r.get(k) == v for k, v in pick.items())]
    if len(found) != 1:
        raise LookupError(f"{len(found)} stored runs match {pick}; a spot must pick exactly one")
    return found[0]


def differences(stored: Any, fresh: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Every place where ``fresh`` differs from ``stored`` (nested dicts and lists; timings skipped), as
    ``(path, stored value, fresh value)``; JSON round-trips ``fresh`` first, so tuples compare as the stored lists.
    Floats within :data:`ROUNDOFF` of each other (relative) are equal: code that only reorders the arithmetic of a
    measurement has not changed its result (in training it has, and the trained model's numbers show it)."""
    fresh = json.loads(json.dumps(fresh)) if path == "" else fresh
    if isinstance(stored, dict) and isinstance(fresh, dict):
        out = [(f"{path}.{k}".lstrip("."), stored.get(k), fresh.get(k)) for k in sorted(set(stored) ^ set(fresh))
               if k not in TIMING]
        for k in sorted(set(stored) & set(fresh)):
            if k not in TIMING:
                out += differences(stored[k], fresh[k], f"{path}.{k}".lstrip("."))
        return out
    if isinstance(stored, list) and isinstance(fresh, list) and len(stored) == len(fresh):
        return [d for i, (a, b) in enumerate(zip(stored, fresh)) for d in differences(a, b, f"{path}[{i}]")]
    if isinstance(stored, float) and isinstance(fresh, float):
        return [] if abs(stored - fresh) <= ROUNDOFF * max(abs(stored), abs(fresh)) else [(path, stored, fresh)]
    return [] if type(stored) is type(fresh) and stored == fresh else [(path, stored, fresh)]


def _file(name: str, commit: str | None = None) -> dict:
    """``name``'s results file as it is now, or as ``commit`` has it."""
    if commit is None:
        return json.loads((RESULTS / f"{name}.json").read_text())
    return json.loads(_git("show", f"{commit}:benchmarks/results/{name}.json"))


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def fresh_run(name: str, pick: dict) -> dict:
    """The stored run ``pick`` of ``name``'s file run again, by the code this module finds on ``sys.path`` (compare
    it with :func:`differences`, which reads tuples as the lists JSON stores)."""
    results = _file(name)
    rerun, _ = SPOTS[name]
    return rerun(_bench(name), results, stored_run(results, pick))


def has_history() -> bool:
    """Whether the project's whole git history is here (not a shallow clone, whose first commit seems to write
    every file)."""
    try:
        return _git("rev-parse", "--is-shallow-repository").strip() == "false"
    except (OSError, subprocess.CalledProcessError):
        return False


def writing_commit(name: str, pick: dict) -> str | None:
    """The commit that wrote the stored run ``pick`` as it stands now: the oldest of the file's latest commits that
    all hold it unchanged (timings aside). None without the whole git history (:func:`has_history`), or when the
    run is not committed as it stands."""
    if not has_history():
        return None
    log = _git("log", "--format=%H", "--", f"benchmarks/results/{name}.json").split()
    now, found = stored_run(_file(name), pick), None
    for commit in log:
        try:
            if differences(stored_run(_file(name, commit), pick), now):
                break
        except LookupError:
            break
        found = commit
    return found


_AT = """import importlib.util, json, sys
root, verify, name, pick = sys.argv[1:]
sys.path[:0] = [root + "/benchmarks", root]
spec = importlib.util.spec_from_file_location("verify_today", verify)
v = importlib.util.module_from_spec(spec)
spec.loader.exec_module(v)
import vlm_primer
assert vlm_primer.__file__.startswith(root), vlm_primer.__file__
print("RUN " + json.dumps(v.fresh_run(name, json.loads(pick))))
"""


def run_at(commit: str, name: str, pick: dict) -> dict:
    """:func:`fresh_run` with the code of ``commit`` (its files from ``git archive``, in a fresh interpreter; the
    run and the budget it reads are today's)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        out = subprocess.run([sys.executable, "-c", _AT, tmp, __file__, name, json.dumps(pick)], cwd=tmp,
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": tmp})
    found = [line for line in out.stdout.splitlines() if line.startswith("RUN ")]
    if out.returncode or not found:
        raise RuntimeError(f"{name} {pick} with the code of {commit[:7]} failed:\n{out.stderr[-3000:]}")
    return json.loads(found[-1][4:])


def check(job: tuple[str, dict]) -> dict:
    """Redo the stored run ``job = (file, pick)`` in this (worker) process and, if it does not reproduce the
    stored numbers, with the code that wrote them (module docstring); what was found."""
    name, pick = job
    start = time.perf_counter()
    today = fresh_run(name, pick)
    diffs = differences(stored_run(_file(name), pick), today)
    out: dict[str, Any] = {"file": name, "run": pick, "reproduced": not diffs}
    if diffs:
        commit = writing_commit(name, pick)
        out |= {"differences": [list(d) for d in diffs[:5]], "n_differences": len(diffs),
                "written_at": commit and commit[:7]}
        if commit is not None:
            changed = differences(run_at(commit, name, pick), today)
            out["changed_by_code"] = [list(d) for d in changed[:5]]
    out["current"] = not diffs or out.get("changed_by_code") == []
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def verdict(r: dict) -> str:
    """One line of what :func:`check` found."""
    if r["reproduced"]:
        return f"{r['run']}: reproduced"
    shown = ", ".join(f"{p} {a} -> {b}" for p, a, b in r["differences"][:2])
    if r["current"]:
        return (f"{r['run']}: current; the code that wrote it ({r['written_at']}) gives today's numbers here, "
                f"{r['n_differences']} differ from the stored run (made where the arithmetic rounds differently), "
                f"e.g. {shown}")
    if r["written_at"] is None:
        return (f"{r['run']}: STALE; {r['n_differences']} numbers differ, e.g. {shown}, and there is no commit to "
                "compare with (the run is not committed as it stands, or the git history is not here)")
    changed = ", ".join(f"{p} {a} -> {b}" for p, a, b in r["changed_by_code"][:2])
    return f"{r['run']}: STALE; the code changed it since {r['written_at']}: {changed}"


def jobs(names: list[str], quick: bool) -> list[tuple[str, dict]]:
    return [(n, pick) for n in names for pick, is_quick in SPOTS[n][1] if is_quick or not quick]


def main(argv: list[str] | None = None) -> int:
    from common import environment

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", metavar="FILE",
                    help=f"results files to check (default all): {', '.join(SPOTS)}")
    ap.add_argument("--quick", action="store_true", help="only the quick runs (seconds each)")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel, one core each")
    args = ap.parse_args(argv)
    unknown = [n for n in args.files if n not in SPOTS]
    if unknown:
        ap.error(f"no results file named {', '.join(unknown)}; choose from {', '.join(SPOTS)}")
    names = args.files or list(SPOTS)
    try:
        head = _git("rev-parse", "--short", "HEAD").strip()
    except (OSError, subprocess.CalledProcessError):
        head = "unknown (not a git checkout)"
    env = environment()
    with ProcessPoolExecutor(args.jobs) as pool:  # the longest first, so the workers finish together
        done = list(pool.map(check, sorted(jobs(names, args.quick), key=lambda j: -_cost(*j))))
    record = json.loads(OUT.read_text()) if OUT.exists() else {}
    stale = []
    for name in names:
        runs = [d for d in done if d["file"] == name]
        if not runs:
            continue
        ok = all(d["current"] for d in runs)
        record[name] = {"date": time.strftime("%Y-%m-%d"), "commit": head, "environment": env, "current": ok,
                        "runs": runs}
        print(f"{name:18s} {'current' if ok else 'STALE'}\n" + "\n".join(f"    {verdict(d)}" for d in runs))
        if not ok:
            stale.append(f"  {_file(name)['command']}")
    if not args.quick:  # the record keeps whole checks only
        OUT.write_text(json.dumps(dict(sorted(record.items())), indent=1) + "\n")
        print(f"wrote {OUT}")
    if stale:
        print("stale; rerun:\n" + "\n".join(stale))
    return 1 if stale else 0


def _cost(name: str, pick: dict) -> float:
    """How long the stored run took (seconds), to schedule the longest first."""
    r = stored_run(_file(name), pick)
    return r.get("seconds") or 60 * r.get("minutes", 0)


if __name__ == "__main__":
    sys.exit(main())
