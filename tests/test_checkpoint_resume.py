"""Exact resumption: N steps in one go == k steps, save, resume in a NEW process, to N (bit-identical).

The toy model has dropout 0.3 and the trainer accumulates 2 micro-batches per step over a dataset of
5 batches per epoch, so a wrong RNG state, data position or schedule would show up in the weights.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "helpers" / "resume_run.py"


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "helpers"), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _run(*args):
    p = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], env=_env(), cwd=ROOT,
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, f"{p.args}\n{p.stdout}\n{p.stderr}"


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.xdist_group("dist")
def test_resume_in_new_process_is_bit_identical(tmp_path):
    n, k = 7, 3
    _run("first", tmp_path, "--max-steps", n, "--stop-at", k)  # N in one go; then K steps + checkpoint
    _run("resume", tmp_path, "--max-steps", n)  # a new process resumes to N

    a, b = load_file(tmp_path / "full.st"), load_file(tmp_path / "resumed.st")
    assert _same(a, b)
    assert not _same(a, load_file(tmp_path / "part.st"))  # training went on after step k
    assert not _same(a, load_file(tmp_path / "scrambled.st"))  # dropout RNG matters: the test can fail
    ha = json.loads((tmp_path / "full.json").read_text())
    hb = json.loads((tmp_path / "resumed.json").read_text())
    assert ha == hb and ha["step"] == n  # history, step and epoch match too
