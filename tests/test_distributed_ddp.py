"""DDP through torchrun (2 CPU processes, Gloo): the CLI run equals one process on the global batch.

With the suite on a GPU (``VLM_PRIMER_DEVICE=auto``) and two GPUs the ranks use them (NCCL); with one GPU
they stay on the CPU with Gloo, as two processes cannot share one device's NCCL rank.

Two ranks x micro-batch 2 x 2 accumulation steps see the same 8 samples per step as one process
with batch 8; after the optimizer steps the weights must agree to 1e-6. The DDP run is done in two
torchrun launches (2 steps, then ``--resume`` to 4) so per-rank resumption is covered too.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlm_primer.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))  # for --recipe-module toy_training in this process


def _run(args, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "helpers"), str(ROOT), env.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{args}\n{p.stdout}\n{p.stderr[-4000:]}"
    return p.stdout


def _device() -> str:
    from vlm_primer.utils import default_device

    return "cuda" if default_device("auto").type == "cuda" and torch.cuda.device_count() >= 2 else "cpu"


TRAIN = ["-m", "vlm_primer.train", "toy_mlp", "--recipe-module", "toy_training", "--set", "dropout=0",
         "--lr", "1e-2", "--warmup-steps", "1", "--no-progress", "--device", _device()]
# --standalone: torchrun picks a free port for its rendezvous
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


@pytest.mark.xdist_group("dist")
def test_ddp_two_processes_match_one_process_on_the_global_batch(tmp_path):
    ddp = tmp_path / "ddp"
    out = _run(TORCHRUN + TRAIN + ["--steps", "4", "--batch-size", "2", "--grad-accum", "2", "--ckpt-dir", str(ddp),
                                   "--ckpt-every", "2"])
    assert out.count("checkpoints in") == 1  # only rank 0 prints
    # simulate an interruption: drop the last checkpoint and resume from step 2 under torchrun
    state2 = json.loads((ddp / "step_00000002" / "trainer_state.json").read_text())
    assert state2["world_size"] == 2 and len(state2["ranks"]) == 2
    uninterrupted = load_file(ddp / "step_00000004" / "model.safetensors")
    (ddp / "step_00000004").rename(tmp_path / "ddp_first_run_step4")
    _run(TORCHRUN + TRAIN + ["--steps", "4", "--batch-size", "2", "--grad-accum", "2", "--ckpt-dir", str(ddp),
                             "--resume"])
    # the reference: one process, batch 8, no accumulation (the CLI's main, in this process)
    train_main(TRAIN[2:] + ["--steps", "4", "--batch-size", "8", "--ckpt-dir", str(tmp_path / "one")])

    init = load_file(ddp / "step_00000002" / "model.safetensors")
    a = load_file(ddp / "step_00000004" / "model.safetensors")
    b = load_file(tmp_path / "one" / "step_00000004" / "model.safetensors")
    assert set(a) == set(b)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6 if _device() == "cpu" else 1e-5, rtol=0), k
        assert torch.equal(a[k], uninterrupted[k]), k  # DDP resume is exact
    assert any(not torch.allclose(a[k], init[k], atol=1e-4) for k in a)  # the last two steps moved the weights


@pytest.mark.xdist_group("dist")
def test_ddp_weighs_targets_across_processes(tmp_path):
    """A loss averaged over a varying number of targets per sample (the toy tagger: 1 to 6 of 6 positions): two
    ranks x micro-batch 2 x 2 accumulation steps equal one process on batch 8 only when every micro-batch is
    weighed by its share of all the ranks' targets (one all-reduce per step); the ranks' micro-batches hold
    different numbers of targets. The logged loss is the global batch's too (printed to 6 digits)."""
    tagger = TRAIN + ["--set", "tagger=1", "--steps", "2"]
    out = _run(TORCHRUN + tagger + ["--batch-size", "2", "--grad-accum", "2", "--ckpt-dir", str(tmp_path / "ddp")])
    history = train_main(tagger[2:] + ["--batch-size", "8", "--ckpt-dir", str(tmp_path / "one")])
    logged = re.search(r"^step=2 .*?loss=(\S+)", out, flags=re.M)  # the CLI prints the last record
    assert float(logged.group(1)) == pytest.approx(history[-1]["loss"], rel=2e-5)
    a = load_file(tmp_path / "ddp" / "step_00000002" / "model.safetensors")
    b = load_file(tmp_path / "one" / "step_00000002" / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6 if _device() == "cpu" else 1e-5, rtol=0), k
