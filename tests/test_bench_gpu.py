"""benchmarks/bench_gpu.py: says so and exits cleanly without a GPU, and its code path runs on a CPU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_gpu  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="this checks the no-GPU message")
def test_without_a_gpu_it_says_so(capsys):
    assert bench_gpu.main([]) == 0
    assert "no CUDA GPU is visible" in capsys.readouterr().out


def test_code_path_on_cpu(capsys):
    argv = ["--device", "cpu", "--preset", "tiny", "--batch", "4", "--repeats", "1", "--no-compile",
            "--small-preset", "tiny", "--small-batch", "4", "--profile"]
    assert bench_gpu.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert "-- profile: clip, ours, eager (2 steps) --" in out and "-- profile: siglip, theirs, eager (2 steps) --" in out
    small = [line.split() for line in out if line.startswith("small ")]
    assert [r[1] for r in small] == ["fp32", "bf16"] and all(float(r[2]) > 0 for r in small)
    rows = [line.split() for line in out if line.startswith(("clip ", "siglip "))]
    assert [r[:2] for r in rows] == [["clip", "eager"], ["siglip", "eager"]]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 and float(r[4]) > 0 for r in rows)


def test_the_device_session_script_runs_its_stages_here(tmp_path):
    """benchmarks/gpu/session.sh (what a session lent a GPU runs): a stage runs under its budget and reports its
    status, an unknown stage is named, and the summary says where it ran."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OUT=str(tmp_path), WHEELS="0", PYTHON=sys.executable, BENCH_PRESET="tiny",
               BENCH_ARGS="--batch 4 --repeats 1 --no-compile --small-preset tiny --small-batch 4")
    p = subprocess.run(["bash", str(root / "benchmarks" / "gpu" / "session.sh"), "bench", "nope"], env=env,
                       capture_output=True, text=True, timeout=300, cwd=root)
    summary = (tmp_path / "summary.txt").read_text()
    assert p.returncode == 0 and "stage bench: rc=0" in summary and "unknown stage nope" in summary, summary
    assert "torch" in summary and "small    fp32" in (tmp_path / "bench.log").read_text()
