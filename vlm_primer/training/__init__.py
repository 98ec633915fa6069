"""Training infrastructure shared by every chapter (explained in notebook 06).

- :class:`Trainer` + :class:`TrainConfig`: AdamW with cosine warmup, mixed precision, gradient
  accumulation and clipping, DDP under ``torchrun``, safetensors checkpoints with exact resume,
  a progress bar and a live loss plot in notebooks.
- :mod:`~vlm_primer.training.distributed`: ``init_distributed``, ``rank``, ``world_size``, ...
- :mod:`~vlm_primer.training.data`: :class:`ResumableSampler`, :class:`ResumableLoader`, :class:`Batches`.
- :mod:`~vlm_primer.training.shards`: WebDataset shards (:func:`write_shards`, :func:`shard_loader`).
- :mod:`~vlm_primer.training.recipes`: recipes for ``python -m vlm_primer.train``.
"""

from vlm_primer.training.checkpoint import (CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint,
                                           load_weights, save_checkpoint, verify_checkpoint)
from vlm_primer.training.config import TrainConfig
from vlm_primer.training.data import Batches, ResumableLoader, ResumableSampler
from vlm_primer.training.distributed import (
    cleanup,
    init_distributed,
    is_distributed,
    is_main_process,
    rank,
    world_size,
)
from vlm_primer.training.optim import CosineWarmup, build_optimizer, param_groups
from vlm_primer.training.recipes import RecipeArgs, TrainJob, register_recipe
from vlm_primer.training.shards import ShardLoader, shard_loader, write_shards
from vlm_primer.training.trainer import NonFiniteLossError, Trainer

__all__ = [
    "Batches", "CheckpointError", "CosineWarmup", "NonFiniteLossError", "RecipeArgs", "ResumableLoader", "ResumableSampler", "ShardLoader", "TrainConfig",
    "TrainJob", "Trainer", "build_optimizer", "cleanup", "init_distributed", "is_distributed",
    "is_main_process", "latest_checkpoint", "list_checkpoints", "load_checkpoint", "load_weights",
    "param_groups", "rank", "register_recipe", "save_checkpoint", "shard_loader", "verify_checkpoint", "world_size",
    "write_shards",
]
