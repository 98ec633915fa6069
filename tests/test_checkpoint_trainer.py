"""Safetensors checkpoints: round trip, no overwrites, rotation, RNG state, tied weights."""

import json
import math
import os
import random
import sys

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))
from toy_training import ToyClassifier, ToyDataset, checkpoint_config as cfg  # noqa: E402

from vlm_primer.training import Trainer, list_checkpoints, load_checkpoint, load_weights, save_checkpoint  # noqa: E402
from vlm_primer.training.checkpoint import rng_state, set_rng_state  # noqa: E402
from vlm_primer.training.optim import CosineWarmup, build_optimizer  # noqa: E402


def test_checkpoint_round_trip_is_safetensors_and_json_only(tmp_path):
    torch.manual_seed(0)
    model = ToyClassifier()
    trainer = Trainer(model, ToyDataset(64), cfg(tmp_path))
    trainer.fit()
    (step, path), = list_checkpoints(tmp_path / "ckpt")
    assert step == 3 and path.name == "step_00000003"
    assert sorted(os.listdir(path)) == ["manifest.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json"]
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["step_00000003"]  # no temporary leftovers
    state = json.loads((path / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["ranks"][0]["batch_in_epoch"] == 3 and len(state["history"]) == 3

    fresh = ToyClassifier()
    opt = build_optimizer(fresh, lr=1e-2)
    load_checkpoint(path, model=fresh, optimizer=opt)
    for k, v in model.state_dict().items():  # compared on the CPU: the trainer's device may be a GPU
        assert torch.equal(v.cpu(), fresh.state_dict()[k]), k
    ref, got = trainer.optimizer.state_dict(), opt.state_dict()
    assert got["param_groups"] == json.loads(json.dumps(ref["param_groups"]))
    for pid, st in ref["state"].items():
        for key, value in st.items():
            assert torch.equal(value.cpu(), got["state"][pid][key].cpu()), (pid, key)
    assert torch.equal(load_weights(ToyClassifier(), path / "model.safetensors").net[0].weight, model.net[0].weight.cpu())


def test_never_overwrites_and_resume_modes(tmp_path):
    Trainer(ToyClassifier(), ToyDataset(64), cfg(tmp_path)).fit()
    path = tmp_path / "ckpt" / "step_00000003"
    before = (path / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="resume=True"):
        Trainer(ToyClassifier(), ToyDataset(64), cfg(tmp_path)).fit()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        save_checkpoint(path, model=ToyClassifier())
    assert (path / "model.safetensors").read_bytes() == before
    # resume=True continues from the latest checkpoint and trains on to the new max_steps
    t = Trainer(ToyClassifier(), ToyDataset(64), cfg(tmp_path, max_steps=5, resume=True))
    t.fit()
    assert t.step == 5 and [s for s, _ in list_checkpoints(tmp_path / "ckpt")] == [3, 5]
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        Trainer(ToyClassifier(), ToyDataset(64), cfg(tmp_path / "empty", resume=True)).fit()
    t = Trainer(ToyClassifier(), ToyDataset(64), cfg(tmp_path / "empty", resume="auto"))
    t.fit()
    assert t.step == 3


def test_keep_last_rotates_only_when_asked(tmp_path):
    Trainer(ToyClassifier(), ToyDataset(64), cfg(tmp_path / "a", max_steps=5, ckpt_every=1)).fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "a" / "ckpt")] == [1, 2, 3, 4, 5]
    Trainer(ToyClassifier(), ToyDataset(64), cfg(tmp_path / "b", max_steps=5, ckpt_every=1, keep_last=2)).fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "b" / "ckpt")] == [4, 5]


def test_rng_state_round_trip():
    state = rng_state()
    draws = (random.random(), np.random.rand(), torch.rand(3))
    json.loads(json.dumps(state))  # plain JSON
    set_rng_state(json.loads(json.dumps(state)))
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert draws[0] == again[0] and draws[1] == again[1] and torch.equal(draws[2], again[2])


def test_tied_weights_save_and_load(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.out = nn.Linear(4, 10, bias=False)
            self.out.weight = self.emb.weight

    torch.manual_seed(0)
    model = Tied()
    save_checkpoint(tmp_path / "c", model=model)
    other = Tied()
    load_weights(other, tmp_path / "c")
    assert torch.equal(other.emb.weight, model.emb.weight) and other.out.weight is other.emb.weight


def test_resume_can_extend_the_schedule(tmp_path):
    Trainer(ToyClassifier(), ToyDataset(64), cfg(tmp_path, max_steps=4, warmup_steps=2)).fit(steps=2)
    t = Trainer(ToyClassifier(), ToyDataset(64), cfg(tmp_path, max_steps=10, warmup_steps=2, resume=True))
    t.fit(steps=1)
    f = CosineWarmup(2, 10, 0.1)  # the new config's schedule, not the saved one's
    assert t.history[-1]["step"] == 3 and math.isclose(t.history[-1]["lr"], 1e-2 * f(2))


def test_resume_takes_the_new_learning_rate_and_weight_decay(tmp_path):
    Trainer(ToyClassifier(), ToyDataset(64), cfg(tmp_path, max_steps=4, warmup_steps=1)).fit(steps=2)
    t = Trainer(ToyClassifier(), ToyDataset(64), cfg(tmp_path, max_steps=4, warmup_steps=1, lr=1e-3,
                                                     weight_decay=0.0, resume=True))
    t.fit(steps=1)
    f = CosineWarmup(1, 4, 0.1)
    assert t.history[-1]["step"] == 3 and math.isclose(t.history[-1]["lr"], 1e-3 * f(2))  # not 1e-2's schedule
    assert [g["weight_decay"] for g in t.optimizer.param_groups] == [0.0, 0.0]


def test_resuming_from_an_older_checkpoint_refuses_to_touch_the_newer_ones(tmp_path):
    Trainer(ToyClassifier(), ToyDataset(64), cfg(tmp_path, max_steps=4, ckpt_every=2)).fit()
    ckpt = tmp_path / "ckpt"
    before = {s: (p / "model.safetensors").read_bytes() for s, p in list_checkpoints(ckpt)}
    assert list(before) == [2, 4]
    with pytest.raises(FileExistsError, match=r"later checkpoints \(steps \[4\]\)"):
        Trainer(ToyClassifier(), ToyDataset(64), cfg(tmp_path, max_steps=4, ckpt_every=1, keep_last=1,
                                                     resume=str(ckpt / "step_00000002"))).fit()
    assert {s: (p / "model.safetensors").read_bytes() for s, p in list_checkpoints(ckpt)} == before
