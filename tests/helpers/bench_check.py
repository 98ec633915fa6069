"""Re-running a quality benchmark's stored reduced run (its results file's ``check``), for the benchmark tests."""

from __future__ import annotations

from typing import Any

import torch


def rerun_check(bench: Any, results: dict, job: tuple, *, key: str = "arm", drop: tuple[str, ...] = ("seconds",),
                **kwargs: Any) -> tuple[dict, dict]:
    """``bench.run(job, **kwargs)`` now and the stored check run of the same ``key`` (``job[0]``), timings
    (``drop``) removed; they must report the same fields. The caller's torch thread count is restored (runs set
    their own)."""
    stored = next(r for r in results["check"] if r[key] == job[0])
    threads = torch.get_num_threads()
    try:
        got = bench.run(job, **kwargs)
    finally:
        torch.set_num_threads(threads)
    for field in drop:
        got.pop(field)
    assert set(got) == set(stored)
    return got, stored
