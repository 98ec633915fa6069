"""Nothing saved is lost or half-loaded: atomic saves survive a crash, every file is verified
before the model is touched, errors name the file, and a NaN loss never reaches the disk."""

from __future__ import annotations

import json
import math
import os
import sys

import pytest
import safetensors.torch
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))
from toy_training import ToyClassifier, ToyDataset, ToyOutput, checkpoint_config as cfg  # noqa: E402

from vlm_primer.training import (CheckpointError, NonFiniteLossError, Trainer,  # noqa: E402
                                 latest_checkpoint, list_checkpoints, load_checkpoint, load_weights, save_checkpoint)
from vlm_primer.training.checkpoint import MANIFEST_FILE, MODEL_FILE, OPTIM_FILE, STATE_FILE, file_sha256  # noqa: E402
from vlm_primer.training.optim import build_optimizer  # noqa: E402


@pytest.fixture
def saved(tmp_path):
    """A finished 3-step run: its checkpoint directory."""
    torch.manual_seed(0)
    Trainer(ToyClassifier(), ToyDataset(64), cfg(tmp_path)).fit()
    return latest_checkpoint(tmp_path / "ckpt")


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model, before):
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def reseal(path):
    """Rewrite the manifest to match the files, as if the damage had been done before saving."""
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    for name in manifest["files"]:
        f = path / name
        manifest["files"][name] = {"bytes": f.stat().st_size, "sha256": file_sha256(f)}
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))


# --------------------------------------------------------------------------- atomic saves


def test_a_crash_mid_save_leaves_the_previous_checkpoint_latest(saved, tmp_path, monkeypatch):
    ckpt = saved.parent

    def crash(tensors, filename, *a, **k):
        with open(filename, "wb") as f:  # half a file, then the process "dies"
            f.write(b"\x00" * 10)
        raise KeyboardInterrupt("simulated crash while writing the optimizer state")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    t = Trainer(ToyClassifier(), ToyDataset(64), cfg(tmp_path, max_steps=5, resume=True))
    with pytest.raises(KeyboardInterrupt, match="simulated crash"):
        t.fit()
    assert sorted(os.listdir(ckpt)) == ["step_00000003"]  # no half-written step_5, no temporary leftovers
    assert latest_checkpoint(ckpt) == saved


def test_a_killed_save_is_never_taken_for_a_checkpoint(saved, tmp_path):
    ckpt = saved.parent
    # What `kill -9` during a save can leave: the hidden temporary directory with some files in it ...
    leftover = ckpt / ".step_00000005.tmp-abc123"
    leftover.mkdir()
    (leftover / MODEL_FILE).write_bytes(b"partial")
    # ... and a directory someone copied by hand without finishing: no manifest.
    copied = ckpt / "step_00000009"
    copied.mkdir()
    (copied / MODEL_FILE).write_bytes((saved / MODEL_FILE).read_bytes())
    assert [s for s, _ in list_checkpoints(ckpt)] == [3]
    t = Trainer(ToyClassifier(), ToyDataset(64), cfg(tmp_path, max_steps=4, resume=True))
    t.fit()
    assert t.step == 4 and [s for s, _ in list_checkpoints(ckpt)] == [3, 4]
    with pytest.raises(CheckpointError, match=f"step_00000009 has no {MANIFEST_FILE}: not a complete checkpoint"):
        load_checkpoint(copied, model=ToyClassifier())


def test_overwrite_needs_the_flag_and_replaces_completely(saved):
    other = ToyClassifier()
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        save_checkpoint(saved, model=other)
    save_checkpoint(saved, model=other, overwrite=True)
    assert sorted(os.listdir(saved)) == [MANIFEST_FILE, MODEL_FILE, STATE_FILE]  # the new one, nothing of the old
    assert sorted(p.name for p in saved.parent.iterdir()) == ["step_00000003"]
    assert torch.equal(load_weights(ToyClassifier(), saved).net[0].weight, other.net[0].weight)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads which file an fsync'd descriptor is from /proc")
def test_every_file_reaches_the_disk_before_the_rename(tmp_path, monkeypatch):
    """A power cut after the rename must not leave a checkpoint of empty files (the OS may write a
    rename before the data): each file and the directory are fsync'd first, the parent after."""
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.realpath(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.realpath(src), os.path.realpath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    model = ToyClassifier()
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.0)
    model(torch.randn(2, 8)).logits.sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "ckpt" / "step_00000001", model=model, optimizer=opt, state={"step": 1})
    renames = [i for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(path.resolve())]
    assert len(renames) == 1, events
    (_, tmp, _), before, after = events[renames[0]], events[:renames[0]], events[renames[0] + 1:]
    synced = {e[1] for e in before if e[0] == "fsync"}
    for name in os.listdir(path):
        assert os.path.join(tmp, name) in synced, f"{name} was not flushed before the rename"
    assert tmp in synced, "the directory's entries were not flushed before the rename"
    assert ("fsync", str(path.parent.resolve())) in after, "the rename was not flushed"


# --------------------------------------------------------------------------- verify before load


@pytest.mark.parametrize("damage,file,message", [
    ("truncate", MODEL_FILE, "bytes, the manifest says .*truncated"),
    ("flip", MODEL_FILE, "does not match its SHA-256"),
    ("flip", OPTIM_FILE, "does not match its SHA-256"),
    ("delete", OPTIM_FILE, "is missing"),
    ("garbage_json", STATE_FILE, "is not valid JSON"),
    ("garbage_tensors", MODEL_FILE, "cannot be read as safetensors"),
    ("garbage_json", MANIFEST_FILE, "is not valid JSON"),
])
def test_a_damaged_file_is_named_and_the_model_is_untouched(saved, damage, file, message):
    f = saved / file
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        f.write_bytes(data[:-9] + bytes([data[-9] ^ 0xFF]) + data[-8:])
    elif damage == "delete":
        f.unlink()
    elif damage == "garbage_json":
        f.write_text(data.decode()[:-5])
        if file != MANIFEST_FILE:
            reseal(saved)
    elif damage == "garbage_tensors":
        f.write_bytes(b"\xff" * 64)
        reseal(saved)
    model = ToyClassifier()
    opt = build_optimizer(model, lr=1e-2)
    before = snapshot(model)
    with pytest.raises(CheckpointError, match=f"{file}.*{message}|{file} {message}"):
        load_checkpoint(saved, model=model, optimizer=opt)
    assert unchanged(model, before) and not opt.state


def test_shape_mismatches_are_found_before_loading(saved, tmp_path):
    wider = ToyClassifier(hidden=16)
    before = snapshot(wider)
    with pytest.raises(CheckpointError, match=r"model.safetensors: net.0.weight has shape \(32, 8\), but the model's "
                                              r"net.0.weight has shape \(16, 8\)"):
        load_checkpoint(saved, model=wider)
    assert unchanged(wider, before)
    # The weights fit but the optimizer does not (it was built over the first layer only): the
    # model must not be half-restored.
    model = ToyClassifier()
    partial_opt = torch.optim.AdamW(model.net[0].parameters(), lr=1e-2)
    before = snapshot(model)
    with pytest.raises(CheckpointError, match=r"optimizer.safetensors: the checkpoint's optimizer has parameter "
                                              r"groups of sizes \[\d+, \d+\], this one \[2\]"):
        load_checkpoint(saved, model=model, optimizer=partial_opt)
    assert unchanged(model, before)


# --------------------------------------------------------------------------- non-finite losses


class NaNAt(ToyClassifier):
    """A classifier whose loss is NaN on forward call number ``at`` (1-based)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, x, y=None):
        out = super().forward(x, y)
        self.calls += 1
        return ToyOutput(out.loss * math.nan, out.logits) if self.calls == self.at else out


def test_a_nan_loss_stops_training_and_the_last_good_checkpoint_stays_latest(tmp_path):
    torch.manual_seed(0)
    t = Trainer(NaNAt(4), ToyDataset(64), cfg(tmp_path, max_steps=6, ckpt_every=1))
    with pytest.raises(NonFiniteLossError, match=r"not finite at step 4; the last finite loss was \d\.\d+ at step 3\. "
                                                 r"Training stopped.*step_00000003, is from before it"):
        t.fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "ckpt")] == [1, 2, 3]
    assert all(torch.isfinite(p).all() for p in t.model.parameters())  # stopped before the update (CPU)
    with pytest.raises(NonFiniteLossError):  # and it will not be saved by hand either
        t.save_checkpoint(tmp_path / "manual")
    assert not (tmp_path / "manual").exists()
    # resuming from the last good checkpoint works
    t2 = Trainer(ToyClassifier(), ToyDataset(64), cfg(tmp_path, max_steps=6, ckpt_every=1, resume=True))
    t2.fit()
    assert t2.step == 6


def test_skip_mode_drops_the_update_and_goes_on(tmp_path):
    torch.manual_seed(0)
    t = Trainer(NaNAt(2), ToyDataset(64), cfg(tmp_path, max_steps=4, on_nonfinite="skip"))
    history = t.fit()
    assert t.step == 4 and t.skipped == 1
    assert [r.get("skipped", 0) for r in history] == [0, 1, 1, 1]
    assert math.isnan(history[1]["loss"]) and all(math.isfinite(r["loss"]) for r in history if r["step"] != 2)
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    state = json.loads((latest_checkpoint(tmp_path / "ckpt") / STATE_FILE).read_text())
    assert state["ranks"][0]["skipped"] == 1


def test_the_first_step_checks_input_values_and_later_steps_do_not(tmp_path):
    seen = []

    class Probe(ToyClassifier):
        def forward(self, x, y=None):
            from vlm_primer.validate import value_checks_enabled
            seen.append(value_checks_enabled())
            return super().forward(x, y)

    Trainer(Probe(), ToyDataset(64), cfg(tmp_path / "a", ckpt_dir=None)).fit()
    assert seen == [True, False, False]
    seen.clear()
    Trainer(Probe(), ToyDataset(64), cfg(tmp_path / "b", ckpt_dir=None, validate_inputs="always")).fit()
    assert seen == [True, True, True]
