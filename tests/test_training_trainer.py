"""Trainer, TrainConfig, optimizer groups, schedule, precision and the live plot (in-process, fast)."""

import math
import os
import sys

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))
from toy_training import ToyClassifier, ToyDataset  # noqa: E402

from vlm_primer.training import CosineWarmup, TrainConfig, Trainer, param_groups  # noqa: E402
from vlm_primer.training import trainer as trainer_mod  # noqa: E402
from vlm_primer.training.trainer import resolve_precision  # noqa: E402


def cfg(**kw):
    base = dict(max_steps=6, batch_size=8, lr=1e-2, warmup_steps=2, log_every=2, progress=False, live_plot=False)
    return TrainConfig(**{**base, **kw})


def test_config_validation_and_presets():
    assert TrainConfig.from_preset("tiny").max_steps == 300
    with pytest.raises(ValueError, match="unknown preset"):
        TrainConfig.from_preset("huge")
    for bad, match in [
        (dict(max_steps=0), "max_steps"),
        (dict(precision="fp8"), "precision"),
        (dict(min_lr_ratio=2.0), "min_lr_ratio"),
        (dict(grad_accum_steps=0), "grad_accum_steps"),
        (dict(betas=(0.9,)), "betas"),
        (dict(grad_clip=0.0), "grad_clip"),
        (dict(live_plot="sometimes"), "live_plot"),
    ]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)


def test_weight_decay_rule():
    model = ToyClassifier()
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["net.0.weight", "net.4.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["net.0.bias", "net.1.bias", "net.1.weight", "net.4.bias"]
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    model.no_weight_decay = lambda: {"net.0.weight"}  # the timm hook
    decay, _ = param_groups(model, 0.1)
    assert [names[id(p)] for p in decay["params"]] == ["net.4.weight"]


def test_cosine_warmup_values():
    f = CosineWarmup(warmup_steps=4, max_steps=14, min_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0
    assert math.isclose(f(9), 0.55)  # half-way through the cosine: (1 + 0.1) / 2
    assert math.isclose(f(14), 0.1) and math.isclose(f(100), 0.1)


def test_fit_learns_logs_evaluates_and_calls_post_step():
    torch.manual_seed(0)
    model = ToyClassifier(dropout=0.0)
    data = ToyDataset(64)
    evals = []

    def eval_fn(m):
        assert not m.training
        evals.append(1)
        dev = next(m.parameters()).device  # the trainer's device, a GPU under VLM_PRIMER_DEVICE=auto
        with torch.no_grad():
            acc = (m(data.x.to(dev)).logits.argmax(-1).cpu() == data.y).float().mean()
        return {"accuracy": acc}

    config = cfg(max_steps=40, warmup_steps=4, log_every=5, eval_every=20, lr=3e-2)
    history = Trainer(model, data, config, eval_fn=eval_fn).fit()
    assert [h["step"] for h in history] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert {"step", "loss", "lr", "grad_norm"} <= set(history[0])
    assert [h["step"] for h in history if "accuracy" in h] == [20, 40] and len(evals) == 2
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["accuracy"] > 0.8
    assert model.post_steps == 40
    f = CosineWarmup(4, 40, config.min_lr_ratio)
    assert all(math.isclose(h["lr"], config.lr * f(h["step"] - 1)) for h in history)


def test_gradient_accumulation_equals_big_batch():
    def run(batch_size, accum):
        torch.manual_seed(0)
        model = ToyClassifier(dropout=0.0)
        Trainer(model, ToyDataset(64), cfg(max_steps=3, batch_size=batch_size, grad_accum_steps=accum)).fit()
        return model.state_dict()

    big, small = run(8, 1), run(4, 2)
    assert all(torch.allclose(big[k], small[k], atol=1e-6) for k in big)
    other = run(8, 2)  # a different global batch moves the weights differently
    assert not all(torch.allclose(big[k], other[k], atol=1e-6) for k in big)


def test_fit_in_pieces_continues():
    torch.manual_seed(0)
    model = ToyClassifier(dropout=0.0)
    trainer = Trainer(model, ToyDataset(64), cfg(max_steps=6))
    trainer.fit(steps=2)
    assert trainer.step == 2
    trainer.fit()
    assert trainer.step == 6 and [h["step"] for h in trainer.history] == [2, 4, 6]


def test_precision_resolution_and_bf16_fp16_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None and resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    for precision in ("bf16", "fp16"):
        torch.manual_seed(0)
        trainer = Trainer(ToyClassifier(), ToyDataset(32), cfg(max_steps=2, log_every=1, precision=precision))
        history = trainer.fit()
        assert trainer.scaler.is_enabled() == (precision == "fp16")
        assert all(math.isfinite(h["loss"]) for h in history)


def test_bad_inputs_raise_clear_errors():
    class NoLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 4)

        def forward(self, x, y):
            return {"logits": self.lin(x)}

    with pytest.raises(ValueError, match="without a loss"):
        Trainer(NoLoss(), ToyDataset(16), cfg()).fit()
    with pytest.raises(TypeError, match="dict"):
        Trainer(ToyClassifier(), [(torch.zeros(8), 0)] * 3, cfg(batch_size=1), collate_fn=lambda s: s).fit()
    with pytest.raises(ValueError, match="smaller than one batch"):
        Trainer(ToyClassifier(), ToyDataset(4), cfg(batch_size=8))
    with pytest.raises(TypeError, match="TrainConfig"):
        Trainer(ToyClassifier(), ToyDataset(16), {"lr": 1})
    with pytest.raises(TypeError, match="nn.Module"):
        Trainer(lambda x: x, ToyDataset(16), cfg())


class _Handle:
    def __init__(self):
        self.updates = []

    def update(self, obj):
        self.updates.append(obj)


def test_live_plot_updates_one_output_in_a_kernel(monkeypatch):
    import IPython.display

    shown, handle = [], _Handle()

    def fake_display(obj, display_id=False):
        assert display_id is True
        shown.append(obj)
        return handle

    monkeypatch.setattr(IPython.display, "display", fake_display)
    monkeypatch.setattr(trainer_mod, "in_jupyter_kernel", lambda: True)
    monkeypatch.setattr(trainer_mod.LivePlot, "min_interval", 0.0)
    figures = set(plt.get_fignums())
    Trainer(ToyClassifier(), ToyDataset(32), cfg(max_steps=6, live_plot="auto")).fit()
    assert len(shown) == 1 and isinstance(shown[0], IPython.display.Image)  # one output ...
    assert len(handle.updates) == 2 + 1  # ... replaced at the other log steps (4, 6) and at the end
    assert all(u.data.startswith(b"\x89PNG") for u in shown + handle.updates)
    assert set(plt.get_fignums()) == figures  # no pyplot figure for the inline backend to show again
    # outside a kernel nothing is displayed
    monkeypatch.setattr(trainer_mod, "in_jupyter_kernel", lambda: False)
    Trainer(ToyClassifier(), ToyDataset(32), cfg(max_steps=2, live_plot="auto")).fit()
    assert len(shown) == 1


def test_records_report_throughput_and_mfu():
    torch.manual_seed(0)
    history = Trainer(ToyClassifier(dropout=0.0), ToyDataset(64), cfg(max_steps=4, log_every=2)).fit()
    for h in history:  # 2 steps of 8 samples per record
        assert h["samples_per_s"] > 0 and 0 <= h["data_wait"] <= 1 and "mfu" not in h and "tokens_per_s" not in h
    model = ToyClassifier(dropout=0.0)
    t = Trainer(model, ToyDataset(64), cfg(max_steps=4, log_every=2, peak_tflops=1e-6))
    history = t.fit()
    # the FLOPs of one step, counted once: forward (2 x batch x in x out per linear layer) and backward
    assert t._flops_per_step > 0 and all(h["mfu"] > 0 for h in history)
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3] * 2)
    ids = {"input_ids": torch.ones(4, 6, dtype=torch.long), "attention_mask": mask}
    t._count(ids)
    assert t._window_samples == 4 and t._window_tokens == 18  # real tokens only, from the host-side mask
    t._count({"chosen": ids, "rejected": ids, "beta": 0.1})  # a DPO batch: 4 pairs, both sides' tokens
    assert t._window_samples == 8 and t._window_tokens == 18 + 36
    with pytest.raises(ValueError, match="peak_tflops"):
        cfg(peak_tflops=0.0)


class _Clock:
    """A fake ``time`` for the trainer: each forward pass takes 1 s, nothing else takes any."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


def test_throughput_counts_training_time_and_steps_only(monkeypatch, tmp_path):
    """Evaluation and checkpoints happen between windows and are not training time; MFU counts optimizer steps,
    whatever batch size the data has (here 4, not the config's 8)."""
    clock = _Clock()
    monkeypatch.setattr(trainer_mod, "time", clock)

    class Timed(ToyClassifier):
        def forward(self, *args, **kwargs):
            clock.now += 1.0
            return super().forward(*args, **kwargs)

    def eval_fn(m):
        clock.now += 100.0
        return {}

    torch.manual_seed(0)
    data = torch.utils.data.DataLoader(ToyDataset(64), batch_size=4, shuffle=False)
    t = Trainer(Timed(dropout=0.0), data, cfg(max_steps=6, log_every=2, eval_every=2, peak_tflops=1e-6,
                                           ckpt_dir=str(tmp_path), ckpt_every=2), eval_fn=eval_fn)
    save = t.save_checkpoint

    def slow_save(*args, **kwargs):
        clock.now += 50.0
        return save(*args, **kwargs)

    monkeypatch.setattr(t, "save_checkpoint", slow_save)
    history = t.fit()
    assert len(history) == 3 and clock.now == 1000 + 6 + 3 * 150  # every eval and save did run
    for h in history:  # 2 steps of 4 samples in 2 s per record
        assert h["samples_per_s"] == 4.0 and h["data_wait"] == 0.0
        assert h["mfu"] == pytest.approx(t._flops_per_step * 2 / 2 / 1e6)


def _ready_batches(n: int = 64, size: int = 8) -> list[dict[str, torch.Tensor]]:
    data = ToyDataset(n)
    return [{"x": data.x[i:i + size], "y": data.y[i:i + size]} for i in range(0, n, size)]


def test_ready_made_batches_train_as_they_are_in_order_epoch_after_epoch():
    from vlm_primer.training import Batches

    batches = _ready_batches()
    seen = []
    model = ToyClassifier(dropout=0.0)
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["x"].clone()), with_kwargs=True)
    Trainer(model, Batches(batches), cfg(max_steps=10)).fit()
    order = [next(i for i, b in enumerate(batches) if torch.equal(b["x"], x)) for x in seen]
    assert order == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]  # as given, the second epoch after the eighth batch
    with pytest.raises(ValueError, match="at least one batch"):
        Batches([])
    with pytest.raises(TypeError, match="a batch must be a dict of tensors.*got list"):
        Batches([[torch.zeros(2)]])


def test_a_plain_list_of_ready_batches_fails_with_a_hint_to_wrap_it():
    model = ToyClassifier(dropout=0.0)
    with pytest.raises(Exception) as caught:  # the model's own error on a batch of batches
        Trainer(model, _ready_batches(), cfg(max_steps=2)).fit()
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "item 0 of train_data looks like a whole batch" in notes and "Batches(" in notes
    from vlm_primer.training import ResumableLoader  # the same data in a loader built by hand: the same hint

    with pytest.raises(Exception) as caught:
        Trainer(ToyClassifier(), ResumableLoader(_ready_batches(), 8), cfg(max_steps=2)).fit()
    assert "Batches(" in "\n".join(getattr(caught.value, "__notes__", []))
    # samples (whose tensors do not share one first dimension) failing for another reason get no such note
    data = [{"x": torch.randn(8), "y": torch.tensor(9)}] * 16  # label 9 of 4 classes
    with pytest.raises(Exception) as caught:
        Trainer(ToyClassifier(), data, cfg(max_steps=1, batch_size=4)).fit()
    assert not getattr(caught.value, "__notes__", [])
