"""``TrainConfig``: every knob of the :class:`~vlm_primer.training.Trainer` in one dataclass.

Explained in notebook 06 (training recipes). Batch sizes are per process and per micro-batch: the
global batch of one optimizer step is ``batch_size * grad_accum_steps * world_size``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from vlm_primer.config import PresetConfig

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


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
    """

    max_steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_accum_steps: int = 1
    grad_clip: float | None = 1.0
    precision: str = "auto"
    compile: bool = False
    find_unused_parameters: bool = False
    device: str = "auto"
    num_workers: int = 0
    log_every: int = 10
    eval_every: int | None = None
    ckpt_dir: str | None = None
    ckpt_every: int | None = None
    keep_last: int | None = None
    resume: bool | str = False
    seed: int = 0
    progress: bool = True
    live_plot: bool | str = "auto"

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(max_steps=300, batch_size=32, warmup_steps=20, log_every=10),
        "small": dict(max_steps=3000, batch_size=64, warmup_steps=200, log_every=25),
        "base": dict(max_steps=30000, batch_size=256, warmup_steps=2000, log_every=100),
    }

    def __post_init__(self) -> None:
        def positive_int(name: str, allow_none: bool = False, minimum: int = 1) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
                raise ValueError(f"TrainConfig.{name} must be an int >= {minimum}, got {v!r}")

        for name in ("max_steps", "batch_size", "grad_accum_steps", "log_every"):
            positive_int(name)
        for name in ("eval_every", "ckpt_every", "keep_last"):
            positive_int(name, allow_none=True)
        positive_int("warmup_steps", minimum=0)
        positive_int("num_workers", minimum=0)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TypeError(f"TrainConfig.seed must be an int, got {self.seed!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be > 0 or None (off), got {self.grad_clip!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.live_plot not in (True, False, "auto"):
            raise ValueError(f"TrainConfig.live_plot must be True, False or 'auto', got {self.live_plot!r}")
        if not (self.resume in (True, False, "auto") or isinstance(self.resume, str)):
            raise ValueError(
                f"TrainConfig.resume must be False, True, 'auto' or a checkpoint path, got {self.resume!r}"
            )
        if isinstance(self.resume, str) and self.resume != "auto" and not self.resume:
            raise ValueError("TrainConfig.resume is an empty path")

    @property
    def global_batch_size_per_process(self) -> int:
        """Samples per optimizer step in one process (``batch_size * grad_accum_steps``)."""
        return self.batch_size * self.grad_accum_steps
