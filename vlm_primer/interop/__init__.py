"""Weight conversion to and from ``transformers`` (``clip``, ``siglip``, ``llama``, ...).

Conversions are strict: every source tensor is used exactly once, and a missing or unexpected key
or a shape mismatch raises a ``ValueError`` that names it. The helpers here are shared by every
converter. Explained in notebook 02, §Loading real checkpoints.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

__all__ = ["StrictSource", "convert_pairs", "load_strict", "state_dict_of", "hf_act_to_ours", "ours_act_to_hf"]

_HF_ACTS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
            "gelu_fast": "gelu_tanh", "relu": "relu", "silu": "silu", "swish": "silu"}


def hf_act_to_ours(name: str) -> str:
    """``transformers``' ``hidden_act`` name -> ours (``gelu_pytorch_tanh`` -> ``gelu_tanh``, ...)."""
    if name not in _HF_ACTS:
        raise ValueError(f"unsupported transformers hidden_act {name!r}; supported: {sorted(_HF_ACTS)}")
    return _HF_ACTS[name]


def ours_act_to_hf(name: str) -> str:
    return {"gelu_tanh": "gelu_pytorch_tanh"}.get(name, name)


def state_dict_of(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(model_or_state_dict, nn.Module):
        return dict(model_or_state_dict.state_dict())
    if isinstance(model_or_state_dict, Mapping):
        return dict(model_or_state_dict)
    raise TypeError(f"expected an nn.Module or a state dict, got {type(model_or_state_dict).__name__}")


class StrictSource:
    """A source state dict whose tensors must each be taken exactly once.

    ``src[key]`` takes a tensor; :meth:`finish` raises if any tensor was left unused. Keys ending in
    one of ``ignore`` (e.g. non-persistent ``position_ids`` buffers saved by old checkpoints) and
    keys outside ``prefix`` when ``prefix`` is set are dropped first.
    """

    def __init__(self, state_dict: Mapping[str, torch.Tensor], name: str, *, prefix: str = "",
                 ignore: Iterable[str] = ("position_ids",)) -> None:
        ignore = tuple(ignore)
        self.name = name
        self.tensors = {
            k[len(prefix):]: v for k, v in state_dict.items()
            if k.startswith(prefix) and not (ignore and k.endswith(ignore))
        }
        if not self.tensors:
            raise ValueError(f"{name}: no tensors found" + (f" under prefix {prefix!r}" if prefix else ""))
        self.used: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self.tensors:
            raise ValueError(f"{self.name}: missing key {key!r}")
        if key in self.used:
            raise ValueError(f"{self.name}: key {key!r} would be used twice")
        self.used.add(key)
        return self.tensors[key]

    def finish(self) -> None:
        left = sorted(set(self.tensors) - self.used)
        if left:
            more = f" (+{len(left) - 8} more)" if len(left) > 8 else ""
            raise ValueError(f"{self.name}: unexpected keys not used by the conversion: {left[:8]}{more}")


def convert_pairs(src: StrictSource, pairs: Iterable[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """``{dst: src[src_key]}`` for ``(dst, src_key)`` pairs, cloned and contiguous."""
    return {dst: src[key].detach().clone().contiguous() for dst, key in pairs}


def check_state_dict(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor], name: str) -> None:
    """Raise a ``ValueError`` naming missing/unexpected keys and shape mismatches."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [f"{k}: expected {tuple(expected[k].shape)}, got {tuple(got[k].shape)}"
              for k in sorted(set(expected) & set(got)) if expected[k].shape != got[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:8]}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:8]}")
    if shapes:
        problems.append(f"shape mismatches {shapes[:8]}")
    if problems:
        raise ValueError(f"{name}: " + "; ".join(problems))


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], name: str | None = None) -> nn.Module:
    """Load ``state_dict`` into ``module`` after checking keys and shapes (clear error otherwise)."""
    check_state_dict(module.state_dict(), state_dict, name or type(module).__name__)
    module.load_state_dict(state_dict, strict=True)
    return module
