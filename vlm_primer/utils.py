"""Small helpers every chapter uses: seeding, the scale and seed knobs, devices.

Input checks live in :mod:`vlm_primer.validate`.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from vlm_primer.validate import check_device, check_int

SCALES = ("tiny", "small", "base")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a torch Generator seeded the same way.

    The one seeding helper of the project: a notebook that calls it at the top prints the same
    numbers every time it runs on the same machine.
    """
    seed = check_int(seed, "seed", minimum=None)
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

    A reader sets it to rerun a chapter's live run at another seed; the seed spreads a chapter quotes
    come from ``benchmarks/`` (e.g. ``bench_contrastive_seeds.py`` for notebook 02).
    """
    raw = os.environ.get("VLM_PRIMER_SEED", "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ValueError(f"VLM_PRIMER_SEED must be a non-negative integer, got {raw!r}")
    return int(raw)


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


_MPS_WARNED = False


def _warn_without_mps_fallback() -> None:
    """Once: say how to make an operation Apple's MPS backend lacks run on the CPU instead of failing."""
    global _MPS_WARNED
    if os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK", "0").strip() not in ("", "0") or _MPS_WARNED:
        return
    _MPS_WARNED = True
    import warnings

    warnings.warn("device 'auto' picked Apple's MPS, but torch was loaded without PYTORCH_ENABLE_MPS_FALLBACK=1, so "
                  "an operation MPS lacks will fail; start Python or JupyterLab with it set (`make lab` and "
                  "environment.yml do; so does importing vlm_primer before torch), or use device='cpu'",
                  stacklevel=3)


def default_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; ``cpu``, ``cuda[:N]`` and ``mps`` must be available.

    On a Mac, ``mps`` runs what the backend lacks on the CPU with a one-line warning per operation when torch was
    loaded with ``PYTORCH_ENABLE_MPS_FALLBACK=1`` (``import vlm_primer`` sets it if torch is not loaded yet;
    ``make lab`` and environment.yml set it); otherwise ``auto`` says once how to get that.

    ``VLM_PRIMER_DEVICE=cpu`` (or ``cuda``, ``mps``) makes ``auto`` pick that device instead: the test
    suite runs on the CPU this way even where a GPU is visible.
    """
    device = "auto" if device is None else check_device(device)
    if device == "auto":
        forced = os.environ.get("VLM_PRIMER_DEVICE", "").strip()
        if forced and forced != "auto":
            try:
                return default_device(check_device(forced))
            except (TypeError, ValueError) as e:
                raise ValueError(f"VLM_PRIMER_DEVICE={forced!r}: {e}") from None
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            _warn_without_mps_fallback()
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but no CUDA GPU is available here; use 'auto' or 'cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r} asked for, but only {torch.cuda.device_count()} GPU(s) are visible")
    if device.type == "mps" and not _mps_available():
        raise ValueError("device 'mps' asked for, but Apple's MPS backend is not available here; use 'auto' or 'cpu'")
    return device
