"""The one validation layer: every public entry point checks its input with these helpers.

Bad input gets one ``ValueError`` or ``TypeError`` whose message names the argument and what was
wrong with it, instead of a deep stack trace or, worse, a silent wrong answer. The README's
section "What the library checks" lists the rules; in short:

- **Token ids** may come in any integer dtype (``uint8``, ``int16``, ... what NumPy arrays and
  compact datasets hold) and as array-likes; they are checked in ``int64`` and cast once.
- **Masks** hold 0 and 1 only (bool, integer or float); a row with no real token is refused.
- **Empty** batches and empty sequences are refused with a message that says so.
- **Counts** (steps, sizes, seeds, ``k``) go through :func:`check_int`: a Python or NumPy integer in range;
  a bool or a float (even ``2.0``) is a ``TypeError``.
- **Configs** check every field against its annotation and the class's ``BOUNDS`` when they are
  built (:func:`check_fields`), so ``lr="1e-3"`` or ``patch_size=0`` fail at once, naming the field.

Two kinds of checks run. *Structure* (type, shape, dtype) is free and always on. *Values* (ids in
range, masks of 0/1, finite scalars) read tensor contents, and on a GPU each read is a
device-to-host synchronisation; they run while :func:`value_checks_enabled` is true: by default,
unless ``VLM_PRIMER_VALIDATE=0`` is set or they are switched off with :func:`set_validation` /
``with validation(False):``. The :class:`~vlm_primer.training.Trainer` checks the values of its
first step only (``TrainConfig.validate_inputs``); code that ``torch.compile`` traces never does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import os
import sys
import types
import typing
from typing import Any, Iterator, Sequence

import numpy as np
import torch

_VALUE_CHECKS = os.environ.get("VLM_PRIMER_VALIDATE", "1").strip().lower() not in ("0", "false", "off", "no")


def value_checks_enabled() -> bool:
    """Whether checks that read tensor values run (see the module docstring).

    Never while ``torch.compile`` traces a model: reading a value there is a graph break (and on a GPU a
    synchronisation in every compiled step), so a compiled model checks structure only. Run a step
    eagerly to check a dataset's values.
    """
    return _VALUE_CHECKS and not torch.compiler.is_compiling()


def set_validation(enabled: bool) -> None:
    """Switch the value checks on or off for the whole process."""
    global _VALUE_CHECKS
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False, got {enabled!r}")
    _VALUE_CHECKS = enabled


@contextlib.contextmanager
def validation(enabled: bool) -> Iterator[None]:
    """``with validation(False): ...`` runs a block without the value checks, then restores them."""
    before = _VALUE_CHECKS
    set_validation(enabled)
    try:
        yield
    finally:
        set_validation(before)


# --------------------------------------------------------------------------- tensors


def as_tensor(x: Any, name: str, expected: str) -> torch.Tensor:
    """``x`` if it is a tensor; a NumPy array, list or tuple converted to one; else a ``TypeError``."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (np.ndarray, list, tuple)):
        try:
            arr = np.asarray(x)
            if arr.dtype == object or arr.dtype.kind in "USV":
                raise TypeError(f"its elements are {arr.dtype.name}, not numbers")
            return torch.as_tensor(arr)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be {expected}; the {type(x).__name__} given cannot be converted: {e}") from None
    raise TypeError(f"{name} must be {expected}, got {type(x).__name__}")


def _on_device(t: torch.Tensor, device: torch.device | None, name: str, converted: bool) -> torch.Tensor:
    if device is None or t.device == device:
        return t
    if converted:  # an array-like we just turned into a CPU tensor: move it where the model is
        return t.to(device)
    raise ValueError(f"{name} is on {t.device} but the model is on {device}; move it with .to({str(device)!r})")


def check_images(
    images: torch.Tensor,
    *,
    channels: int = 3,
    size: int | tuple[int, int] | None = None,
    name: str = "images",
    device: torch.device | None = None,
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
    return _on_device(images, device, name, converted=False)


def _integer_dtype(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def check_tokens(
    tokens: Any,
    *,
    max_len: int | None = None,
    vocab_size: int | None = None,
    name: str = "input_ids",
    device: torch.device | None = None,
) -> torch.Tensor:
    """Check a batch of token ids ``(B, L)``; return it as an ``int64`` tensor.

    Accepts any integer dtype and array-likes (lists, NumPy arrays). The range check against
    ``vocab_size`` reads the values (see :func:`value_checks_enabled`).
    """
    converted = not isinstance(tokens, torch.Tensor)
    tokens = as_tensor(tokens, name, "a (B, L) tensor of integer token ids")
    if converted and tokens.numel() == 0:  # NumPy makes [[], []] float64: the shape is what is wrong
        tokens = tokens.long()
    if not _integer_dtype(tokens.dtype):
        raise TypeError(f"{name} must be an integer tensor of token ids, got dtype {tokens.dtype}")
    if tokens.ndim != 2:
        raise ValueError(f"{name} must have shape (B, L), got shape {tuple(tokens.shape)}")
    if tokens.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(tokens.shape)})")
    if tokens.shape[1] == 0:
        raise ValueError(f"{name} holds empty sequences (shape {tuple(tokens.shape)}): every sequence needs at "
                         "least one token (the tokenizer adds <eos>)")
    if max_len is not None and tokens.shape[1] > max_len:
        raise ValueError(
            f"{name} has length {tokens.shape[1]}, longer than the model's context of {max_len} tokens"
        )
    tokens = _on_device(tokens.long(), device, name, converted)  # checked and used in a wide dtype
    if vocab_size is not None and value_checks_enabled():
        lo, hi = (int(v) for v in tokens.aminmax())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"{name} has ids outside [0, {vocab_size}): min {lo}, max {hi}")
    return tokens


def check_labels(
    labels: Any, *, shape: tuple[int, ...], vocab_size: int, ignore_index: int = -100, name: str = "labels",
    device: torch.device | None = None,
) -> torch.Tensor:
    """Check next-token targets: integer ids in ``[0, vocab_size)`` or ``ignore_index``; return ``int64``."""
    converted = not isinstance(labels, torch.Tensor)
    labels = as_tensor(labels, name, f"a tensor of token ids of shape {shape}")
    if not _integer_dtype(labels.dtype):
        raise TypeError(f"{name} must be an integer tensor of token ids, got dtype {labels.dtype}")
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape (B, L) = {tuple(shape)}, got {tuple(labels.shape)}")
    labels = _on_device(labels.long(), device, name, converted)
    if value_checks_enabled():
        bad = (labels != ignore_index) & ((labels < 0) | (labels >= vocab_size))
        if bool(bad.any()):
            raise ValueError(f"{name} must hold ids in [0, {vocab_size}) or {ignore_index} (ignored), "
                             f"found {int(labels[bad][0])}")
    return labels


def check_mask(
    mask: Any,
    *,
    shape: tuple[int, int],
    name: str = "attention_mask",
    like: str = "input_ids",
    desc: str = "(B, L)",
    device: torch.device | None = None,
) -> torch.Tensor:
    """Check a padding mask of 0/1 (1 = real token) of ``shape``; return it as a bool tensor.

    Accepts bool, integer or float tensors and array-likes. Values other than 0 and 1, and rows with
    no real token (attention over nothing is undefined), are refused while value checks are on.
    """
    converted = not isinstance(mask, torch.Tensor)
    mask = as_tensor(mask, name, f"a {desc} tensor of 0/1 (1 = real token)")
    if mask.is_complex():
        raise TypeError(f"{name} must hold 0/1 as bool, integer or float, got dtype {mask.dtype}")
    if mask.ndim >= 1 and mask.shape[0] != shape[0]:
        raise ValueError(f"mismatched batch sizes: {like}={shape[0]}, {name}={mask.shape[0]}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {desc} = {tuple(shape)}, got {tuple(mask.shape)}")
    mask = _on_device(mask, device, name, converted)
    if value_checks_enabled():
        if mask.dtype != torch.bool:
            bad = (mask != 0) & (mask != 1)
            if bool(bad.any()):
                raise ValueError(f"{name} must hold only 0 and 1 (1 = real token), found {mask[bad][0].item()!r}")
        empty = ~mask.bool().any(dim=-1)
        if bool(empty.any()):
            row = int(empty.nonzero()[0, 0])
            raise ValueError(f"{name} row {row} is all zeros: that sequence has no token to attend to")
    return mask.bool()


def check_caption_pairs(input_ids: Any, attention_mask: Any, *, images: int, vocab_size: int,
                        device: torch.device | None = None, max_len: int | None = None,
                        model: str = "the model") -> tuple[torch.Tensor, torch.Tensor]:
    """Captions to train a captioner on, one per image: ``(ids, mask)`` as int64 tensors (the mask all ones when
    ``None``). Each caption needs two real tokens, since the captioning loss predicts every token after the first."""
    ids = check_tokens(input_ids, max_len=max_len, vocab_size=vocab_size, device=device)
    if len(ids) != images:
        raise ValueError(f"{images} images but {len(ids)} captions: {model} trains on matching pairs")
    mask = torch.ones_like(ids) if attention_mask is None else \
        check_mask(attention_mask, shape=tuple(ids.shape), device=ids.device).long()
    if value_checks_enabled() and bool((mask.sum(1) < 2).any()):
        raise ValueError("input_ids: every caption needs at least 2 real tokens (the captioning loss predicts each "
                         "token after the first)")
    return ids, mask


def check_finite(value: Any, name: str) -> None:
    """A float or a tensor of finite values (``NaN``/``inf`` refused while value checks are on)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and value_checks_enabled() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite, got {value.detach().flatten()[:4].tolist()}")
        return
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a float or a tensor, got {value!r} ({type(value).__name__})")
    if not isinstance(value, numbers.Integral) and not math.isfinite(value):  # an int is finite (and may overflow a float)
        raise ValueError(f"{name} must be finite, got {value!r}")


def check_same_batch(**tensors: torch.Tensor | None) -> int:
    """Check that all given tensors share dim 0; return that batch size."""
    sizes = {k: v.shape[0] for k, v in tensors.items() if v is not None}
    if len(set(sizes.values())) > 1:
        desc = ", ".join(f"{k}={n}" for k, n in sizes.items())
        raise ValueError(f"mismatched batch sizes: {desc}")
    return next(iter(sizes.values())) if sizes else 0


def check_int(value: Any, name: str, minimum: int | None = 1, maximum: int | None = None, hint: str = "") -> int:
    """``value`` as an ``int`` (Python or NumPy integers), or an error naming ``name``: a ``TypeError`` for anything
    else (bools and floats too, even ``2.0``), a ``ValueError`` outside ``[minimum, maximum]`` (``None``: no bound).
    ``hint`` says in the message what the number is, e.g. ``"the adapter rank"``."""
    if minimum is None:
        bound = "" if maximum is None else f" <= {maximum}"
    else:
        bound = f" >= {minimum}" if maximum is None else f" in [{minimum}, {maximum}]"
    hint = f" ({hint})" if hint else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int{bound}{hint}, got {value!r} ({type(value).__name__})")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an int{bound}{hint}, got {value!r}")
    return int(value)


def check_choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


# --------------------------------------------------------------------------- configs

_BOUND_WORDS = {">0": "positive", ">=0": "non-negative"}


def _in_bound(v: float, bound: str) -> bool:
    if bound == ">0":
        return v > 0
    if bound == ">=0":
        return v >= 0
    lo, hi = (float(s) for s in bound[1:-1].split(","))
    return (lo <= v if bound[0] == "[" else lo < v) and (v <= hi if bound[-1] == "]" else v < hi)


def _describe(hint: Any, bound: str | None) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(h, bound) for h in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if typing.get_origin(hint) is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if hint is bool:
        return "True or False"
    if hint in (int, float):
        kind = "int" if hint is int else "finite float"
        if bound is None:
            return f"an {kind}" if hint is int else f"a {kind}"
        if bound in _BOUND_WORDS:
            return f"a {_BOUND_WORDS[bound]} {kind}"
        return f"{'an' if hint is int else 'a'} {kind} in {bound}"
    if hint is str:
        return "a string"
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of {_describe(args[0], None).split(' ', 1)[1]}s"
        if len(set(args)) == 1:
            return f"a tuple of {len(args)} values, each {_describe(args[0], bound)}"
        return f"a tuple of {len(args)} ({', '.join(_describe(a, bound) for a in args)})"
    if dataclasses.is_dataclass(hint):
        return f"a {hint.__name__} (or a dict of its fields)"
    return getattr(hint, "__name__", str(hint))


def _coerce(value: Any, hint: Any, bound: str | None, values: bool = True) -> tuple[bool, Any]:
    """``(True, value in canonical form)`` if ``value`` fits ``hint`` (and ``bound``), else ``(False, None)``.

    With ``values=False`` only the type is checked (not finiteness or the bound).
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for h in typing.get_args(hint):
            ok, v = _coerce(value, h, bound, values)
            if ok:
                return True, v
        return False, None
    if hint is type(None):
        return value is None, None
    if origin is typing.Literal:  # the right type with another value is a ValueError, not a TypeError
        args = typing.get_args(hint)
        return any(type(value) is type(a) and (not values or value == a) for a in args), value
    if hint is bool:
        return isinstance(value, (bool, np.bool_)), bool(value) if isinstance(value, (bool, np.bool_)) else None
    if hint in (int, float):
        if isinstance(value, (bool, np.bool_)):
            return False, None
        if hint is int and not isinstance(value, numbers.Integral):
            return False, None
        if not isinstance(value, numbers.Real):
            return False, None
        if not values:
            return True, value
        if not isinstance(value, numbers.Integral) and not math.isfinite(value):
            return False, None
        if isinstance(value, numbers.Integral) and abs(value) > sys.float_info.max:  # schedules and bars use floats
            return False, None
        value = hint(value)
        return (bound is None or _in_bound(value, bound)), value
    if hint is str:
        return isinstance(value, str), value
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (tuple, list)):
            return False, None
        if not values:  # a sequence: its length and elements are values
            return True, value
        pairs = [(v, args[0]) for v in value] if len(args) == 2 and args[1] is Ellipsis else list(zip(value, args))
        if len(pairs) != len(value) or (args[-1] is not Ellipsis and len(value) != len(args)):
            return False, None
        out = []
        for v, h in pairs:
            ok, v = _coerce(v, h, bound, values)
            if not ok:
                return False, None
            out.append(v)
        return True, tuple(out)
    if origin is dict:
        return isinstance(value, dict), value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return isinstance(value, (hint, dict)), value
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value  # Any, callables, ...: not checked here


_HINTS: dict[type, dict[str, Any]] = {}


def check_fields(cfg: Any) -> None:
    """Check (and canonicalise) every field of the dataclass ``cfg`` against its annotation.

    ``int`` fields take integers only (not ``True``, not ``3.0``), ``float`` fields any finite real
    number (stored as ``float``); ``cfg.BOUNDS`` (``{"lr": ">0", "dropout": "[0, 1)"}``) adds ranges.
    The error names the class, the field, what was expected and what came, e.g.
    ``TrainConfig.lr must be a positive finite float, got '1e-3' (str)``.
    """
    cls = type(cfg)
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    bounds = getattr(cls, "BOUNDS", {})
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        hint, bound = _HINTS[cls][f.name], bounds.get(f.name)
        ok, canonical = _coerce(value, hint, bound)
        if not ok:
            error = ValueError if _coerce(value, hint, None, values=False)[0] else TypeError
            raise error(f"{cls.__name__}.{f.name} must be {_describe(hint, bound)}, "
                        f"got {value!r} ({type(value).__name__})")
        if canonical is not value:
            object.__setattr__(cfg, f.name, canonical)


def check_mlp_width(cfg: Any) -> None:
    """A transformer config's MLP must have at least one hidden unit (``mlp_dim`` or ``dim * mlp_ratio``)."""
    if cfg.mlp_dim is None and int(cfg.dim * cfg.mlp_ratio) < 1:
        raise ValueError(f"{type(cfg).__name__}.mlp_ratio={cfg.mlp_ratio} gives dim * mlp_ratio < 1: an MLP with no "
                         "hidden unit")


DEVICE_TYPES = ("auto", "cpu", "cuda", "mps")


def check_device(device: Any, name: str = "device") -> str | torch.device:
    """``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:N'``, ``'mps'`` or a ``torch.device``; else a clear error."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"{name} must be a string such as 'auto', 'cpu' or 'cuda:0', got {device!r} "
                        f"({type(device).__name__})")
    kind, _, index = device.partition(":")
    if kind not in DEVICE_TYPES or (index and (kind == "auto" or not index.isdigit())):
        raise ValueError(f"{name} must be one of {DEVICE_TYPES} (optionally 'cuda:N'), got {device!r}")
    return device
