"""Train the toy classifier (dropout on, grad accumulation 2) and write final weights, in two modes.

    python resume_run.py first  OUT_DIR --max-steps N --stop-at K
        trains N steps in one go (OUT_DIR/full.st), then, from the same seed, K steps of the same
        N-step schedule with checkpoints in OUT_DIR/ck (OUT_DIR/part.st)
    python resume_run.py resume OUT_DIR --max-steps N
        a new process: continues OUT_DIR/ck to step N (OUT_DIR/resumed.st); then, as a negative
        control, continues a copy of the step-K checkpoint with the torch RNG reseeded after loading
        (OUT_DIR/scrambled.st), whose weights must differ.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from toy_training import ToyClassifier, ToyDataset
from vlm_primer import seed_everything
from vlm_primer.training import Trainer, TrainConfig, latest_checkpoint
from vlm_primer.training.plot import THROUGHPUT_KEYS

p = argparse.ArgumentParser()
p.add_argument("mode", choices=("first", "resume"))
p.add_argument("out", type=Path)
p.add_argument("--max-steps", type=int, required=True)
p.add_argument("--stop-at", type=int)
a = p.parse_args()
torch.set_num_threads(1)


def make_trainer(ckpt_dir):
    seed_everything(0)
    model = ToyClassifier(dropout=0.3)
    config = TrainConfig(max_steps=a.max_steps, batch_size=4, grad_accum_steps=2, lr=3e-2, warmup_steps=2,
                         log_every=2, ckpt_dir=ckpt_dir and str(ckpt_dir), progress=False, live_plot=False, seed=7)
    # 20 samples / batch 4 = 5 batches per epoch: odd, so epochs end in the middle of an accumulation
    return Trainer(model, ToyDataset(20, seed=1), config)


def finish(trainer, name):
    save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()}, a.out / f"{name}.st")
    # Throughput (samples/s, data wait) is wall-clock: everything else must match bit for bit.
    history = [{k: v for k, v in h.items() if k not in THROUGHPUT_KEYS} for h in trainer.history]
    info = {"history": history, "step": trainer.step, "epoch": trainer.epoch}
    (a.out / f"{name}.json").write_text(json.dumps(info))


if a.mode == "first":
    t = make_trainer(None)
    t.fit()
    finish(t, "full")
    t = make_trainer(a.out / "ck")
    t.fit(steps=a.stop_at)
    finish(t, "part")
    shutil.copytree(a.out / "ck", a.out / "ck_scrambled")
else:
    t = make_trainer(a.out / "ck")
    t.load_checkpoint(latest_checkpoint(a.out / "ck"))
    t.fit()
    finish(t, "resumed")
    t = make_trainer(a.out / "ck_scrambled")
    t.load_checkpoint(latest_checkpoint(a.out / "ck_scrambled"))
    torch.manual_seed(1234)
    t.fit()
    finish(t, "scrambled")
print("done", file=sys.stderr)
