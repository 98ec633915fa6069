"""Safetensors checkpoints: weights, optimizer, schedule, RNG and data position, written atomically.

A checkpoint is a directory ``<ckpt_dir>/step_00000100/`` holding

- ``model.safetensors``: the weights (``safetensors.torch.save_model``, so tied weights are fine);
- ``optimizer.safetensors``: every tensor of the optimizer state (``state.<param index>.<name>``);
- ``trainer_state.json``: the step, the optimizer's non-tensor parts (param groups, hyper-parameters),
  the LR-scheduler and gradient-scaler state, each process's RNG states (Python, NumPy, torch CPU,
  CUDA) and data position, the history and the config.

Nothing is ever unpickled. Writes are atomic: files go into a temporary directory next to the
final one, which is then renamed with ``os.replace``; an existing checkpoint directory is never
replaced (``FileExistsError``). Explained in notebook 06 (§checkpoints).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

FORMAT_VERSION = 1
MODEL_FILE, OPTIM_FILE, STATE_FILE = "model.safetensors", "optimizer.safetensors", "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``ckpt_dir`` as ``(step, path)``, oldest first ([] if none)."""
    root = Path(ckpt_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file() and (p / MODEL_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step in ``ckpt_dir``, or ``None``."""
    ckpts = list_checkpoints(ckpt_dir)
    return ckpts[-1][1] if ckpts else None


# --------------------------------------------------------------------------- RNG states as JSON


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch-CPU and (if initialised) CUDA RNG states as JSON-able lists."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(mt), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


# --------------------------------------------------------------------------- optimizer state


def split_optimizer_state(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer ``state_dict`` -> (tensors for safetensors, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    for pid, per_param in sd["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                rest["state"].setdefault(str(pid), {})[key] = value
    return tensors, rest


def join_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`split_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {int(pid): dict(v) for pid, v in rest["state"].items()}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


# --------------------------------------------------------------------------- save / load


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if torch.is_tensor(obj) and obj.numel() == 1:
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint's JSON state: {obj!r:.80}")


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, default=_json_default)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically; refuse to replace an existing one.

    ``state`` is any JSON-able dict (the trainer puts step, scheduler, scaler, RNG, data position,
    history and config there); the optimizer's tensors go to ``optimizer.safetensors`` and its
    other parts into ``state["optimizer"]``.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"checkpoint {path} already exists; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = dict(state or {})
    state["format_version"] = FORMAT_VERSION
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        safetensors.torch.save_model(model, str(tmp / MODEL_FILE))
        if optimizer is not None:
            tensors, rest = split_optimizer_state(optimizer.state_dict())
            safetensors.torch.save_file(tensors, str(tmp / OPTIM_FILE))
            state["optimizer"] = rest
        _write_json(tmp / STATE_FILE, state)
        os.replace(tmp, path)  # atomic; fails rather than replacing a non-empty directory
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_weights(model: nn.Module, path: str | os.PathLike, *, strict: bool = True) -> nn.Module:
    """Load ``model.safetensors`` of a checkpoint directory (or a ``.safetensors`` file) into ``model``."""
    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no weights at {file}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    safetensors.torch.load_model(model, str(file), strict=strict, device=str(device))
    return model


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Load weights (and optimizer state) in place; return the JSON state (step, RNG, ...)."""
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint directory (no {STATE_FILE})")
    with open(path / STATE_FILE) as f:
        state = json.load(f)
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {state.get('format_version')!r}, expected {FORMAT_VERSION}")
    load_weights(model, path)
    if optimizer is not None:
        if "optimizer" not in state:
            raise ValueError(f"{path} holds no optimizer state")
        tensors = safetensors.torch.load_file(str(path / OPTIM_FILE))
        optimizer.load_state_dict(join_optimizer_state(tensors, state["optimizer"]))
    return state


def rotate_checkpoints(ckpt_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints; return the deleted paths."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    old = [p for _, p in list_checkpoints(ckpt_dir)[:-keep_last]]
    for p in old:
        shutil.rmtree(p)
    return old
