"""What the benchmarks share: alternating step timing and the peak memory of a fresh process (speed); the record a
quality benchmark writes of its seeds (quality)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median_alternating(steps: dict[str, Callable[..., Any]], data: tuple, repeats: int,
                       warmup: int = 3) -> dict[str, float]:
    """Median seconds of each ``steps[side](*data)``; the sides take turns (order flipped every round),
    so background load hits them alike; the first ``warmup`` rounds are not timed."""
    sides = list(steps)
    times: dict[str, list[float]] = {side: [] for side in sides}
    for i in range(warmup + repeats):
        for side in sides if i % 2 == 0 else sides[::-1]:
            t = time.perf_counter()
            steps[side](*data)
            if i >= warmup:
                times[side].append(time.perf_counter() - t)
    return {side: statistics.median(v) for side, v in times.items()}


def median_rate(fns: dict[str, Callable[[], Any]], units: int, repeats: int = 5) -> dict[str, float]:
    """``units`` per second of each ``fns[side]()``: one warm-up call, then the median of ``repeats`` timed calls
    (generation speed: tokens per call)."""
    out = {}
    for side, fn in fns.items():
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[side] = units / statistics.median(times)
    return out


def rss_kb() -> int:
    """This process's resident set size now, KiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def print_peak_mb(make_step: Callable[[], Callable[..., Any]], data: tuple, steps: int = 3) -> None:
    """What a benchmark's ``--child`` mode prints: how far the peak RSS (MiB) rises while ``make_step()`` builds a
    model and its optimizer and runs ``steps`` steps on ``data`` (read back by :func:`child_peak_mb`)."""
    import resource

    before = rss_kb()
    step = make_step()
    for _ in range(steps):
        step(*data)
    print(f"{(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024:.1f}")


def child_peak_mb(script: str, args: list[str]) -> float:
    """Run ``script args`` in a fresh interpreter and return the number on the last line it prints
    (a ``--child`` mode that measures its own peak memory)."""
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")})
    return float(out.stdout.strip().splitlines()[-1])


def print_step_and_memory(seconds: dict[str, float], script: str, child_args: list[str]) -> None:
    """The two lines every speed benchmark prints: the median training step (``seconds`` from
    :func:`median_alternating`) and the peak memory of a fresh process per side (``script --child SIDE
    *child_args``), each with the ratio ours / theirs."""
    mem = {side: child_peak_mb(script, ["--child", side, *child_args]) for side in ("ours", "theirs")}
    print(f"training step   ours {1e3 * seconds['ours']:8.1f} ms  theirs {1e3 * seconds['theirs']:8.1f} ms  ratio "
          f"{seconds['ours'] / seconds['theirs']:5.2f}")
    print(f"peak memory     ours {mem['ours']:8.1f} MiB theirs {mem['theirs']:8.1f} MiB ratio "
          f"{mem['ours'] / max(mem['theirs'], 1e-9):5.2f}")


def environment() -> dict[str, str]:
    """What a quality run's last digits depend on besides the code: the CPU (its model and the vector extensions
    torch dispatches to) and the versions of torch and numpy. Another CPU's kernels round differently, and
    training turns a last-digit difference into a different model (``benchmarks/verify.py``)."""
    import platform

    import numpy
    import torch

    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = info.get("model name") or platform.processor() or platform.machine()
    if "model" in info:
        cpu += f" (family {info.get('cpu family', '?')}, model {info['model']})"
    return {"cpu": cpu, "torch": f"{torch.__version__}, {torch.backends.cpu.get_cpu_capability()} kernels",
            "numpy": numpy.__version__}


def seed_run_record(script: str, seeds: list[int], jobs: int, start: float) -> dict[str, Any]:
    """What a quality benchmark's results file says of its run: the command (``script --seeds ...``), the seeds,
    the machine and its :func:`environment`, the date and the minutes since ``start`` (``time.perf_counter()``)."""
    import platform

    return {"command": f"python benchmarks/{script} --seeds " + " ".join(map(str, seeds)), "seeds": seeds,
            "machine": f"{platform.machine()}, {jobs} run{'s' * (jobs != 1)} in parallel on one thread each",
            "environment": environment(), "date": time.strftime("%Y-%m-%d"),
            "minutes": round((time.perf_counter() - start) / 60, 1)}


def seed_parser(doc: str | None) -> argparse.ArgumentParser:
    """A quality benchmark's command line: ``--seeds`` (default 0 1 2) and ``--jobs`` (runs in parallel, one core
    each), described by the first paragraph of ``doc`` (the script's docstring); add the script's own flags."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel, one core each")
    return ap


def write_seed_runs(out: Path, script: str, seeds: list[int], jobs: int, start: float, results: list[dict],
                    replaces: Callable[[dict], bool] = lambda run: True, only: Sequence[str] = (),
                    parts: Sequence[str] = (), **fields: Any) -> list[dict]:
    """Write a quality benchmark's results file ``out``: :func:`seed_run_record`, the benchmark's own ``fields``
    (its budget) and its runs; return the runs.

    The runs are this run's ``results`` after those of the file already there that it does not ``replaces``
    (a predicate on an old run; by default it replaces them all). ``only``: the ``parts`` this run was asked
    for (``--only``); fewer than all are named in its command. A run that repeated fewer than all parts or
    kept old runs (a ``--seeds 3`` that adds a seed) is a rerun: the file keeps its full run's command, date
    and minutes, and lists this run's under ``reruns``."""
    old = json.loads(out.read_text()) if out.exists() else {}
    kept = [r for r in old.get("runs", []) if not replaces(r)]
    runs, record, reruns = kept + results, seed_run_record(script, seeds, jobs, start), []
    some = bool(set(parts) - set(only))
    if some:
        record["command"] += " --only " + " ".join(only)
    if (some or kept) and "command" in old:
        record, reruns = {k: old[k] for k in record if k in old}, old.get("reruns", []) + [record]
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({**record, **({"reruns": reruns} if reruns else {}), **fields, "runs": runs}, indent=1)
                   + "\n")
    print(f"wrote {out}")
    return runs


def fit_contrastive(model, data, collate, steps: int, seed: int, lr: float = 2e-3, batch: int = 32):
    """Chapter 02's tiny contrastive schedule on any data: ``steps`` shuffled batches of ``batch``, AdamW at ``lr``
    (weight decay 0.2, eps 1e-6, a short warm-up), on the CPU without progress bars; the quality benchmarks' one
    training loop. Returns the Trainer's history."""
    from vlm_primer.training import ResumableLoader, Trainer, TrainConfig

    config = TrainConfig(max_steps=steps, batch_size=batch, lr=lr, warmup_steps=min(20, steps // 5), weight_decay=0.2,
                         eps=1e-6, log_every=max(1, steps // 10), seed=seed, device="cpu", progress=False,
                         live_plot=False)
    return Trainer(model, ResumableLoader(data, batch, collate_fn=collate, shuffle=True, seed=seed), config).fit()
