"""Small helpers every chapter uses: seeding, the scale knob, devices and input checks.

Input checks raise ``ValueError``/``TypeError`` with a message that names the offending shape or
value, so that a reader who passes the wrong thing gets one clear line instead of a deep trace.
"""

from __future__ import annotations

import os
import random
from typing import Sequence

import numpy as np
import torch

SCALES = ("tiny", "small", "base")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a torch Generator seeded the same way.

    The one seeding helper of the project: a notebook that calls it at the top prints the same
    numbers every time it runs on the same machine.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def get_scale(default: str = "tiny") -> str:
    """The book's scale knob: ``VLM_PRIMER_SCALE=tiny|small|base`` (default ``tiny``)."""
    scale = os.environ.get("VLM_PRIMER_SCALE", default).strip().lower() or default
    if scale not in SCALES:
        raise ValueError(f"VLM_PRIMER_SCALE must be one of {SCALES}, got {scale!r}")
    return scale


def get_seed(default: int = 0) -> int:
    """The book's seed knob: ``VLM_PRIMER_SEED=N`` (default 0), the seed of a chapter's main run.

    ``benchmarks/bench_zeroshot_seeds.py`` sets it to measure how a chapter's result varies by seed.
    """
    raw = os.environ.get("VLM_PRIMER_SEED", "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ValueError(f"VLM_PRIMER_SEED must be a non-negative integer, got {raw!r}")
    return int(raw)


def default_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else is passed to ``torch.device``."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


# --------------------------------------------------------------------------- input checks


def check_images(
    images: torch.Tensor,
    *,
    channels: int = 3,
    size: int | tuple[int, int] | None = None,
    name: str = "images",
) -> torch.Tensor:
    """Check a float image batch ``(B, C, H, W)``; return it unchanged."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, {channels}, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{name} must have shape (B, {channels}, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (e.g. float32 in [0, 1] or normalised), got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(images.shape)})")
    if images.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels in dim 1, got shape {tuple(images.shape)}")
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(images.shape[-2:]) != hw:
            raise ValueError(f"{name} must be {hw[0]}x{hw[1]} pixels, got shape {tuple(images.shape)}")
    return images


def check_tokens(
    tokens: torch.Tensor,
    *,
    max_len: int | None = None,
    vocab_size: int | None = None,
    name: str = "input_ids",
) -> torch.Tensor:
    """Check an integer token batch ``(B, L)``; return it unchanged."""
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, L), got {type(tokens).__name__}")
    if tokens.ndim != 2:
        raise ValueError(f"{name} must have shape (B, L), got shape {tuple(tokens.shape)}")
    if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"{name} must be an integer tensor, got dtype {tokens.dtype}")
    if tokens.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(tokens.shape)})")
    if max_len is not None and tokens.shape[1] > max_len:
        raise ValueError(
            f"{name} has length {tokens.shape[1]}, longer than the model's context of {max_len} tokens"
        )
    if vocab_size is not None and tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(
            f"{name} has ids outside [0, {vocab_size}): min {int(tokens.min())}, max {int(tokens.max())}"
        )
    return tokens


def check_same_batch(**tensors: torch.Tensor | None) -> int:
    """Check that all given tensors share dim 0; return that batch size."""
    sizes = {k: v.shape[0] for k, v in tensors.items() if v is not None}
    if len(set(sizes.values())) > 1:
        desc = ", ".join(f"{k}={n}" for k, n in sizes.items())
        raise ValueError(f"mismatched batch sizes: {desc}")
    return next(iter(sizes.values())) if sizes else 0


def check_choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value
