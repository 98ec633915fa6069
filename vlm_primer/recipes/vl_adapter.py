"""VL-Adapter: bottleneck adapters in the language model of a VLM, one set per task or one set shared by all tasks.

Chapter 06b (survey §3.7, parameter-efficient fine-tuning) explains it. Houlsby et al. (2019) adapt a frozen
transformer by inserting a small **bottleneck adapter** after its attention and MLP sub-layers, on the sub-layer's
output ``y`` before the residual sum::

    adapter(y) = y + W_up σ(W_down y)          W_down: (d/reduction, d), W_up: (d, d/reduction), ReLU σ

``W_up`` starts at zero, so the adapted model starts as the pretrained one, exactly. Both choices, ReLU and the
zero ``W_up``, are ours: Houlsby's code uses GELU and starts both matrices near zero (a truncated normal of standard
deviation 1e-3), so near the identity but not at it. VL-Adapter (Sung et al. 2022) trains
such adapters in the language model of a CLIP + LM model on several vision-language tasks at once (with the visual
projection and the layer norms) and compares **one adapter set per task** with **a single adapter set shared by
every task**: the shared set matches the per-task sets with a fraction of their parameters, because what the tasks
need from the LM overlaps.

:func:`apply_adapters` wraps the attention and MLP sub-layers of a :class:`~vlm_primer.nn.Transformer` (by default
a LLaVA's language model) in :class:`AdaptedSublayer`\\ s holding one :class:`BottleneckAdapter` per task name;
:func:`set_task` picks the one in use. A single task name (``("shared",)``) is the shared set.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from vlm_primer.nn.transformer import Transformer
from vlm_primer.validate import check_int

__all__ = ["AdaptedSublayer", "BottleneckAdapter", "adapter_parameters", "apply_adapters", "set_task"]


class BottleneckAdapter(nn.Module):
    """``y + up(relu(down(y)))`` with ``up`` initialised to zero (the identity at the start)."""

    def __init__(self, dim: int, reduction: int = 8) -> None:
        super().__init__()
        check_int(dim, "dim")
        check_int(reduction, "reduction")
        if reduction > dim:
            raise ValueError(f"reduction={reduction} leaves no bottleneck of a {dim}-wide layer")
        self.down, self.up = nn.Linear(dim, dim // reduction), nn.Linear(dim // reduction, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.up(torch.relu(self.down(y)))


class AdaptedSublayer(nn.Module):
    """A sub-layer (``base``, frozen) followed by the adapter of the ``active`` task."""

    def __init__(self, base: nn.Module, dim: int, tasks: tuple[str, ...], reduction: int) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.adapters = nn.ModuleDict({t: BottleneckAdapter(dim, reduction) for t in tasks})
        self.active = tasks[0]

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.adapters[self.active](self.base(*args, **kwargs))


def _transformer(model: nn.Module) -> Transformer:
    if isinstance(model, Transformer):
        return model
    lm = getattr(model, "language_model", None)
    found = getattr(lm, "transformer", None)
    if not isinstance(found, Transformer):
        raise TypeError(f"apply_adapters needs a Transformer or a model with language_model.transformer (a LLaVA), "
                        f"got {type(model).__name__}")
    return found


def apply_adapters(model: nn.Module, tasks: Iterable[str] = ("shared",), reduction: int = 8) -> nn.Module:
    """Put a :class:`BottleneckAdapter` per task after the attention and MLP sub-layers of every block of
    ``model``'s language model (or of ``model``, a :class:`~vlm_primer.nn.Transformer`), in place. Freezes the
    sub-layers' weights only: what else trains (VL-Adapter trains the connector and the layer norms too) is the
    caller's choice. Returns ``model`` with the first task active."""
    tasks = tuple(tasks) if not isinstance(tasks, str) else (tasks,)
    if not tasks or not all(isinstance(t, str) and t for t in tasks) or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must be distinct non-empty names, got {tasks!r}")
    blocks = _transformer(model).blocks
    if any(isinstance(b.attn, AdaptedSublayer) for b in blocks):
        raise ValueError("model already has adapters")
    for block in blocks:
        dim = block.ln2.weight.shape[0]
        block.attn = AdaptedSublayer(block.attn, dim, tasks, reduction)
        block.mlp = AdaptedSublayer(block.mlp, dim, tasks, reduction)
    return model


def _sublayers(model: nn.Module) -> list[AdaptedSublayer]:
    found = [m for m in model.modules() if isinstance(m, AdaptedSublayer)]
    if not found:
        raise ValueError("model has no adapters: call apply_adapters first")
    return found


def set_task(model: nn.Module, task: str) -> nn.Module:
    """Use ``task``'s adapters everywhere (an error names the tasks the model has)."""
    for sub in _sublayers(model):
        if task not in sub.adapters:
            raise KeyError(f"no adapters for task {task!r}; the model has {list(sub.adapters)}")
        sub.active = task
    return model


def adapter_parameters(model: nn.Module, task: str | None = None) -> list[nn.Parameter]:
    """The adapters' parameters, of ``task`` only or of every task."""
    return [p for sub in _sublayers(model) for name, a in sub.adapters.items() if task in (None, name)
            for p in a.parameters()]
