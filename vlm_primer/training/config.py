"""``TrainConfig``: every knob of the :class:`~vlm_primer.training.Trainer` in one dataclass.

Explained in notebook 06 (training recipes). Batch sizes are per process and per micro-batch: the
global batch of one optimizer step is ``batch_size * grad_accum_steps * world_size``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar, Literal

import torch

from vlm_primer.config import PresetConfig
from vlm_primer.validate import check_choice, check_device

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NONFINITE = ("raise", "skip")
VALIDATE_INPUTS = ("first_step", "always", "never")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclasses.dataclass
class TrainConfig(PresetConfig):
    """Optimisation, precision, logging and checkpoint settings of one training run.

    Schedule: linear warmup over ``warmup_steps`` optimizer steps to ``lr``, then a cosine decay to
    ``lr * min_lr_ratio`` at ``max_steps``. ``find_unused_parameters`` is passed to
    ``DistributedDataParallel`` (needed when some parameters get no gradient in a step). ``precision="auto"`` is bf16 autocast on a CUDA GPU that
    supports it and fp32 elsewhere; ``"fp16"`` adds a gradient scaler. ``ckpt_dir=None`` writes no
    checkpoints; ``ckpt_every=None`` saves only at the end of each ``fit``; ``keep_last=None`` keeps
    every checkpoint. ``resume`` is ``False`` (a fresh run; refuses a ``ckpt_dir`` that already holds
    checkpoints), ``True`` (continue from the latest one; error if there is none), ``"auto"``
    (continue if there is one) or the path of one checkpoint directory. ``live_plot="auto"`` draws
    the loss curve only inside a Jupyter kernel.

    Guards: a NaN or infinite loss (or gradient norm) stops training with an error naming the step,
    and no checkpoint is written after it (``on_nonfinite="raise"``); ``"skip"`` drops that update
    and goes on (it reads the loss every step, a GPU synchronisation). ``validate_inputs`` says
    when the models check the values of their inputs (ids in range, masks of 0/1): on the first
    step only (the default: a bad dataset fails at once, later steps run without the
    synchronisations those checks cost on a GPU), on every step, or never.

    Speed on a GPU: ``compile=True`` is ``torch.compile(model)``; a mode name (``"reduce-overhead"``:
    CUDA graphs, what small models need to stop being launch-bound; ``"max-autotune"``, ...) is passed
    as its ``mode``. ``num_workers="auto"`` loads map-style data in worker processes on a GPU (see
    :func:`~vlm_primer.training.data.auto_num_workers`) and in the main process on a CPU, where workers
    would take cores from the model.
    """

    max_steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_accum_steps: int = 1      # micro-batches per step, weighed by their loss items (Trainer, module docstring)
    grad_clip: float | None = 1.0
    precision: str = "auto"
    compile: bool | str = False
    find_unused_parameters: bool = False
    device: str | torch.device = "auto"
    num_workers: int | Literal["auto"] = "auto"
    log_every: int = 10
    eval_every: int | None = None
    ckpt_dir: str | os.PathLike | None = None
    ckpt_every: int | None = None
    keep_last: int | None = None
    resume: bool | str | os.PathLike = False
    seed: int = 0
    progress: bool = True
    live_plot: bool | str = "auto"
    on_nonfinite: str = "raise"
    validate_inputs: str = "first_step"
    peak_tflops: float | None = None     # the device's peak (dense, at this precision): logs MFU; None: known GPUs

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(max_steps=300, batch_size=32, warmup_steps=20, log_every=10),
        "small": dict(max_steps=3000, batch_size=64, warmup_steps=200, log_every=25),
        "base": dict(max_steps=30000, batch_size=256, warmup_steps=2000, log_every=100),
    }

    BOUNDS: ClassVar[dict[str, str]] = dict(
        max_steps=">0", batch_size=">0", grad_accum_steps=">0", log_every=">0", eval_every=">0", ckpt_every=">0",
        keep_last=">0", warmup_steps=">=0", num_workers=">=0", lr=">0", weight_decay=">=0", betas="[0, 1)",
        eps=">0", min_lr_ratio="[0, 1]", grad_clip=">0", peak_tflops=">0",
    )

    def validate(self) -> None:
        check_choice(self.precision, PRECISIONS, "TrainConfig.precision")
        check_choice(self.on_nonfinite, NONFINITE, "TrainConfig.on_nonfinite")
        check_choice(self.validate_inputs, VALIDATE_INPUTS, "TrainConfig.validate_inputs")
        if isinstance(self.compile, str) and self.compile not in COMPILE_MODES:
            raise ValueError(f"TrainConfig.compile must be True, False or a torch.compile mode {COMPILE_MODES}, "
                             f"got {self.compile!r}")
        self.device = str(check_device(self.device, "TrainConfig.device"))
        if self.ckpt_dir is not None:
            self.ckpt_dir = os.fspath(self.ckpt_dir)
        if isinstance(self.resume, os.PathLike):
            self.resume = os.fspath(self.resume)
        if self.live_plot not in (True, False, "auto"):
            raise ValueError(f"TrainConfig.live_plot must be True, False or 'auto', got {self.live_plot!r}")
        if self.resume == "":
            raise ValueError("TrainConfig.resume is an empty path")

    @property
    def global_batch_size_per_process(self) -> int:
        """Samples per optimizer step in one process (``batch_size * grad_accum_steps``)."""
        return self.batch_size * self.grad_accum_steps
