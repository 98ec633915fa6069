"""Safetensors checkpoints: weights, optimizer, schedule, RNG and data position, written atomically.

A checkpoint is a directory ``<ckpt_dir>/step_00000100/`` holding

- ``model.safetensors``: the weights (``safetensors.torch.save_model``, so tied weights are fine);
- ``optimizer.safetensors``: every tensor of the optimizer state (``state.<param index>.<name>``);
- ``trainer_state.json``: the step, the optimizer's non-tensor parts (param groups, hyper-parameters),
  the LR-scheduler and gradient-scaler state, each process's RNG states (Python, NumPy, torch CPU,
  CUDA) and data position, the history and the config;
- ``manifest.json``: the size and SHA-256 of each file above, written last.

Nothing is ever unpickled. Writes are atomic: files go into a temporary directory next to the
final one, which is then renamed with ``os.replace``, so a crash mid-save leaves at most a hidden
``.step_*.tmp-*`` directory that is never taken for a checkpoint. Every file and the directory are
flushed to disk (``fsync``) before the rename, and the parent after it, so a power cut cannot leave a
renamed checkpoint with empty files while ``keep_last`` has already deleted the older ones. An existing checkpoint is never
replaced unless ``overwrite=True`` is passed. Loading verifies everything first (every file
present, sizes and hashes as in the manifest, JSON parseable, tensor names and shapes matching
the model and optimizer) and only then touches the model: a bad checkpoint raises
:class:`CheckpointError` naming the file and the problem, and leaves the model as it was.
Explained in notebook 02, §Scaling up (``--ckpt-dir``, ``--resume auto``).
"""

from __future__ import annotations

import hashlib
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

FORMAT_VERSION = 2
MODEL_FILE, OPTIM_FILE, STATE_FILE = "model.safetensors", "optimizer.safetensors", "trainer_state.json"
MANIFEST_FILE = "manifest.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or does not fit the model; the message names it."""


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
        if m and p.is_dir() and (p / MANIFEST_FILE).is_file():
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


def fsync_path(path: Path) -> None:
    """Flush a file's contents, or a directory's entries, to disk (directories are skipped on Windows)."""
    if path.is_dir() and os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, default=_json_default))  # inside the temporary directory: atomic with it


def file_sha256(file: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (the manifest's and the zoo cards' hash)."""
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_manifest(folder: Path) -> None:
    files = {f.name: {"bytes": f.stat().st_size, "sha256": file_sha256(f)} for f in sorted(folder.iterdir()) if f.is_file()}
    _write_json(folder / MANIFEST_FILE, {"format_version": FORMAT_VERSION, "files": files})


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    state: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint directory atomically; refuse to replace an existing one unless ``overwrite``.

    ``state`` is any JSON-able dict (the trainer puts step, scheduler, scaler, RNG, data position,
    history and config there); the optimizer's tensors go to ``optimizer.safetensors`` and its
    other parts into ``state["optimizer"]``. With ``overwrite=True`` the old directory is moved
    aside only once the new one is complete, and deleted after the new one is in place.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"checkpoint {path} already exists; refusing to overwrite it (pass overwrite=True "
                              "to replace it)")
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
        _write_manifest(tmp)  # last: a directory with a manifest is complete
        for f in tmp.iterdir():
            fsync_path(f)
        fsync_path(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)  # atomic; fails rather than replacing a non-empty directory
        fsync_path(path.parent)  # the rename itself
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


# --------------------------------------------------------------------------- verify, then load


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{file} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file} is not valid JSON ({e}): the checkpoint is corrupt") from None


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(str(file))
    except FileNotFoundError:
        raise CheckpointError(f"{file} is missing") from None
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{file} cannot be read as safetensors ({e}): the file is corrupt") from None


def verify_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Check a checkpoint directory against its manifest (files, sizes, SHA-256); return its JSON state."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a checkpoint directory")
    if not (path / MANIFEST_FILE).is_file():
        raise CheckpointError(f"{path} has no {MANIFEST_FILE}: not a complete checkpoint (an interrupted save, "
                              "or one written by an older vlm_primer)")
    manifest = _read_json(path / MANIFEST_FILE)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path / MANIFEST_FILE} is not a format-{FORMAT_VERSION} manifest")
    for name in (MODEL_FILE, STATE_FILE):
        if name not in files:
            raise CheckpointError(f"{path / MANIFEST_FILE} does not list {name}")
    for name, meta in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file} is missing (the manifest lists it)")
        if file.stat().st_size != meta.get("bytes"):
            raise CheckpointError(f"{file} has {file.stat().st_size} bytes, the manifest says {meta.get('bytes')}: "
                                  "the file is truncated or was changed")
        if file_sha256(file) != meta.get("sha256"):
            raise CheckpointError(f"{file} does not match its SHA-256 in the manifest: the file is corrupt or "
                                  "was changed")
    state = _read_json(path / STATE_FILE)
    version = state.get("format_version") if isinstance(state, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path / STATE_FILE}: checkpoint format {version!r}, expected {FORMAT_VERSION}")
    return state


def alias_groups(sd: dict[str, torch.Tensor]) -> list[list[str]]:
    """State-dict names grouped by the tensor they share (tied weights are saved once)."""
    groups: dict[Any, list[str]] = {}
    for name, t in sd.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride()) if t.numel() else name
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def _weights_for(model: nn.Module, tensors: dict[str, torch.Tensor], file: Path, strict: bool) -> dict[str, torch.Tensor]:
    """The ``load_state_dict`` input for ``model`` from a file's tensors, every name and shape checked."""
    expected = model.state_dict()
    groups = alias_groups(expected)
    missing = [g[0] for g in groups if not any(k in tensors for k in g)]
    unexpected = sorted(set(tensors) - set(expected))
    if strict and (missing or unexpected):
        raise CheckpointError(f"{file} does not fit {type(model).__name__}: missing {missing[:5]}"
                              f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                              f"{' ...' if len(unexpected) > 5 else ''}")
    out = {}
    for group in groups:
        src = next((k for k in group if k in tensors), None)
        for name in group if src is not None else ():
            if tuple(tensors[src].shape) != tuple(expected[name].shape):
                raise CheckpointError(f"{file}: {src} has shape {tuple(tensors[src].shape)}, but the model's {name} "
                                      f"has shape {tuple(expected[name].shape)}")
            out[name] = tensors[src]
    return out


def _optimizer_state_for(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: Any,
                         file: Path) -> dict[str, Any]:
    """The optimizer ``state_dict`` to load, checked against ``optimizer``'s groups and parameter shapes."""
    try:
        sd = join_optimizer_state(tensors, rest)
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{file} and its JSON part do not form an optimizer state ({e!r})") from None
    have = [len(g["params"]) for g in optimizer.param_groups]
    got = [len(g.get("params", ())) for g in sd["param_groups"]]
    if have != got:
        raise CheckpointError(f"{file}: the checkpoint's optimizer has parameter groups of sizes {got}, this one {have}")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for pid, per_param in sd["state"].items():
        if not 0 <= pid < len(params):
            raise CheckpointError(f"{file}: state for parameter {pid}, but the optimizer has {len(params)}")
        for key, value in per_param.items():
            if torch.is_tensor(value) and value.ndim and tuple(value.shape) != tuple(params[pid].shape):
                raise CheckpointError(f"{file}: {key} of parameter {pid} has shape {tuple(value.shape)}, the "
                                      f"parameter has shape {tuple(params[pid].shape)}")
    return sd


def load_weights(model: nn.Module, path: str | os.PathLike, *, strict: bool = True) -> nn.Module:
    """Load the weights of a checkpoint directory (verified) or of a ``.safetensors`` file into ``model``.

    Names and shapes are checked before the model is touched; a mismatch raises :class:`CheckpointError`.
    """
    path = Path(path)
    if path.is_dir():
        verify_checkpoint(path)
        file = path / MODEL_FILE
    else:
        file = path
        if not file.is_file():
            raise FileNotFoundError(f"no weights at {file}")
    weights = _weights_for(model, _read_tensors(file), file, strict)
    model.load_state_dict(weights, strict=False)
    return model


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    require: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Load weights (and optimizer state) in place; return the JSON state (step, RNG, ...).

    Everything is verified first (see the module docstring), including that the state holds the
    keys in ``require``; only then are the model and optimizer changed.
    """
    path = Path(path)
    state = verify_checkpoint(path)
    missing = [k for k in require if k not in state]
    if missing:
        raise CheckpointError(f"{path / STATE_FILE} lacks {missing}")
    weights = _weights_for(model, _read_tensors(path / MODEL_FILE), path / MODEL_FILE, strict=True)
    optim_state = None
    if optimizer is not None:
        if "optimizer" not in state or not (path / OPTIM_FILE).is_file():
            raise CheckpointError(f"{path} holds no optimizer state")
        optim_state = _optimizer_state_for(optimizer, _read_tensors(path / OPTIM_FILE), state["optimizer"],
                                           path / OPTIM_FILE)
    model.load_state_dict(weights, strict=False)  # verified: from here on nothing can half-load
    if optim_state is not None:
        optimizer.load_state_dict(optim_state)
    return state


def rotate_checkpoints(ckpt_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints; return the deleted paths."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    old = [p for _, p in list_checkpoints(ckpt_dir)[:-keep_last]]
    for p in old:
        shutil.rmtree(p)
    return old
