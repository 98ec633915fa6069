"""What keeps a GPU busy, tested where it can be: on the CPU the logic (compiled graphs without breaks, loader
workers chosen from the device, the compile mode handed to ``torch.compile``); on CUDA the step itself (no
host-device synchronisation), skipped without a GPU. See the README, "What the library checks"."""

import sys
from pathlib import Path

import pytest
import torch

from vlm_primer.contrastive import CLIP, CLIPConfig, SigLIP, SigLIPConfig
from vlm_primer.training import Batches, TrainConfig, Trainer
from vlm_primer.training import trainer as trainer_mod
from vlm_primer.training.data import auto_num_workers
from vlm_primer.validate import validation


ONE_BATCH = Batches([{"x": torch.ones(1)}])
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _pair_batch(model, b=4, length=12, device="cpu"):
    gen = torch.Generator().manual_seed(0)
    size = model.cfg.vision.image_size
    ids = torch.randint(5, model.cfg.text.vocab_size, (b, length), generator=gen)
    return {"pixel_values": torch.rand(b, 3, size, size, generator=gen).to(device), "input_ids": ids.to(device),
            "attention_mask": torch.ones_like(ids).to(device)}


@pytest.mark.parametrize("kind", [(CLIP, CLIPConfig), (SigLIP, SigLIPConfig)], ids=["clip", "siglip"])
def test_value_checks_do_not_break_the_compiled_graph(kind):
    model_cls, cfg_cls = kind
    model = model_cls(cfg_cls.from_preset("tiny")).train()
    batch = _pair_batch(model)
    # The control: dynamo does see a value read as a graph break ...
    control = torch._dynamo.explain(lambda x: x * int(x.max()))(torch.ones(3))
    assert control.graph_break_count == 1
    # ... but the model, traced with value checks on, has none: one graph, as CUDA graphs need.
    with validation(True):
        explained = torch._dynamo.explain(model)(**batch)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
    # and in eager mode the same checks still read the values
    bad = dict(batch, input_ids=batch["input_ids"].clone().fill_(model.cfg.text.vocab_size))
    with validation(True), pytest.raises(ValueError, match="ids outside"):
        model(**bad)


def test_loader_workers_follow_the_device():
    assert auto_num_workers("cpu", cpu_count=64) == 0  # workers would take the cores the model computes on
    assert auto_num_workers("mps", cpu_count=64) == 0  # macOS spawns workers: a notebook's functions cannot go
    assert auto_num_workers("cuda", cpu_count=16) == 8  # capped: beyond it the collate waits, not the workers
    assert auto_num_workers("cuda", cpu_count=16, procs_per_node=8) == 1  # torchrun: 8 GPUs share the cores
    assert auto_num_workers("cuda", cpu_count=2) == 1 and auto_num_workers("cuda:1", cpu_count=1) == 0
    assert TrainConfig().num_workers == "auto"
    trainer = Trainer(torch.nn.Linear(2, 2), ONE_BATCH, TrainConfig(device="cpu", progress=False))
    assert trainer.num_workers == 0
    assert Trainer(torch.nn.Linear(2, 2), ONE_BATCH, TrainConfig(device="cpu", num_workers=3)).num_workers == 3


def test_trainer_hands_the_compile_mode_to_torch_compile(monkeypatch):
    seen = []
    monkeypatch.setattr(trainer_mod.torch, "compile", lambda m, mode=None: seen.append(mode) or m)
    for compile_, mode in [(True, None), ("reduce-overhead", "reduce-overhead"), ("max-autotune", "max-autotune")]:
        Trainer(torch.nn.Linear(2, 2), ONE_BATCH, TrainConfig(device="cpu", compile=compile_))
        assert seen[-1] == mode
    Trainer(torch.nn.Linear(2, 2), ONE_BATCH, TrainConfig(device="cpu", compile=False))
    assert len(seen) == 3


def test_flops_are_counted_on_the_eager_model(monkeypatch):
    """MFU's FLOP count runs the first step eagerly: compiling under the counter's module hooks would compile the
    model twice. The later steps go through the compiled model."""
    sys.path.insert(0, str(Path(__file__).parent / "helpers"))
    from toy_training import ToyClassifier, ToyDataset

    compiled_calls = []

    class Compiled(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, **batch):
            compiled_calls.append(1)
            return self.model(**batch)

    monkeypatch.setattr(trainer_mod.torch, "compile", lambda m, mode=None: Compiled(m))
    config = TrainConfig(device="cpu", compile=True, peak_tflops=1e-6, max_steps=3, batch_size=8, log_every=3,
                         warmup_steps=1, progress=False, live_plot=False)
    trainer = Trainer(ToyClassifier(), ToyDataset(64), config)
    history = trainer.fit()
    assert len(compiled_calls) == 2 and trainer._flops_per_step > 0 and history[-1]["mfu"] > 0


def test_mfu_needs_no_flag_on_a_gpu_the_table_knows(monkeypatch):
    from vlm_primer.recipes.compute import GPUS, gpu_of

    assert gpu_of("NVIDIA H100 80GB HBM3") is GPUS["H100-80GB"] and gpu_of("NVIDIA H200") is GPUS["H200"]
    assert gpu_of("NVIDIA A100-SXM4-80GB") is GPUS["A100-80GB"] and gpu_of("NVIDIA A100-PCIE-40GB") is GPUS["A100-40GB"]
    assert gpu_of("Tesla V100-SXM2-32GB") is GPUS["V100"] and gpu_of("NVIDIA GeForce RTX 4090") is None
    trainer = Trainer(torch.nn.Linear(2, 2), ONE_BATCH, TrainConfig(device="cpu", progress=False))
    assert trainer.peak_tflops is None  # a CPU: no peak, no MFU unless given
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    trainer.device, trainer.amp_dtype = torch.device("cuda"), torch.bfloat16
    assert trainer._known_peak() == 989.0
    trainer.amp_dtype = None  # fp32: whether TF32 runs is the user's setting, so no guess
    assert trainer._known_peak() is None


@needs_cuda
def test_a_cuda_training_step_never_synchronises():
    """After the first step (which checks the input values), a step queues its work and returns: no
    ``.item()``, no value read, no blocking copy. ``set_sync_debug_mode("error")`` turns any into an error."""
    torch.manual_seed(0)
    model = CLIP(CLIPConfig.from_preset("tiny"))
    batches = [{k: v.pin_memory() for k, v in _pair_batch(model, b=8).items()} for _ in range(4)]
    config = TrainConfig(device="cuda", max_steps=4, warmup_steps=1, log_every=4, progress=False, live_plot=False,
                         num_workers=0)
    trainer = Trainer(model, Batches(batches), config)
    trainer.train_step()  # checks the values (a few synchronisations, once)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            trainer.train_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert trainer.step == 3 and all(p.grad is None for p in model.parameters())


@needs_cuda
def test_an_accumulated_language_model_step_never_synchronises():
    """Gradient accumulation weighs micro-batches by their targets, counted on the host before the copy: a step of
    two micro-batches of a language model queues its work and returns, as a single batch does."""
    from vlm_primer.nn import DecoderConfig, DecoderLM

    torch.manual_seed(0)
    model = DecoderLM(DecoderConfig.from_preset("tiny"))
    batches = []
    for targets in (2, 12, 5, 9):
        ids = torch.randint(4, model.cfg.vocab_size, (4, 16))
        labels = ids.masked_fill(torch.arange(16) < 16 - targets, -100)
        batches.append({"input_ids": ids.pin_memory(), "labels": labels.pin_memory()})
    config = TrainConfig(device="cuda", max_steps=4, warmup_steps=1, log_every=4, grad_accum_steps=2, progress=False,
                         live_plot=False, num_workers=0)
    trainer = Trainer(model, Batches(batches), config)
    trainer.train_step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        trainer.train_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert trainer.step == 2
