"""Parameter-efficient fine-tuning (survey §3.7): LoRA, DoRA and VeRA adapters, and QLoRA's 4-bit NormalFloat.

Chapter 06b (survey §3.7) explains it. Fine-tuning every weight of a VLM costs a full copy of the model and
its optimizer state per task; these methods freeze the pretrained ``nn.Linear`` layers (``W``, ``b``) and train a
few new parameters per layer instead:

* **LoRA** (Hu et al. 2021): :class:`LoRALinear` learns a low-rank update ``ΔW = s · B A`` with ``A`` ``(r, in)``
  (Kaiming-uniform, ``a = sqrt(5)``, like ``nn.Linear``), ``B`` ``(out, r)`` (zeros, so training starts at the
  pretrained model) and ``s = alpha / r``::

      h = W x + b + s · B A dropout(x)

  ``r (in + out)`` trainable numbers instead of ``in · out``; after training ``ΔW`` folds into ``W``
  (:meth:`LoRALinear.merge`) and inference costs nothing extra.
* **DoRA** (Liu et al. 2024): ``use_dora=True`` splits the weight into a magnitude ``m`` (one number per output
  row, initialised to ``||W||_row``) and a direction that LoRA updates::

      W' = m / ||W + s·BA||_row · (W + s·BA),     h = W' x + b

  The norm is treated as a constant (detached from the gradient, the paper's §4.3), exactly as ``peft`` does.
* **VeRA** (Kopiczko et al. 2024): :class:`VeRALinear` shares *one* pair of frozen random matrices ``A``
  ``(r, in_max)`` and ``B`` ``(out_max, r)`` across all adapted layers (each layer slices the part it needs) and
  trains only two scaling vectors per layer, ``lambda_d`` ``(r)`` (starts at ``d_initial``) and ``lambda_b``
  ``(out)`` (starts at zero)::

      h = W x + b + lambda_b ⊙ B (lambda_d ⊙ A dropout(x))

  ``r + out`` numbers per layer against LoRA's ``r (in + out)``: about ``2r`` times fewer for a square layer at
  equal rank (16 at ``r = 8``; the paper's "10x" compares different ranks).
* **QLoRA** (Dettmers et al. 2023): LoRA on a frozen ``W`` stored in 4-bit NormalFloat
  (:class:`~vlm_primer.recipes.quant.NF4Linear`, :mod:`vlm_primer.recipes.quant`): :func:`apply_qlora` quantises
  the targeted layers and puts a :class:`LoRALinear` on each. The adapter trains in full precision against the
  dequantised weight; it cannot be merged back into 4 bits without losing it (QLoRA merges into a 16-bit copy).

:func:`apply_lora`, :func:`apply_qlora` and :func:`apply_vera` swap the ``nn.Linear`` layers named in
``target_modules`` for adapters in place and freeze everything else (``peft.get_peft_model`` with ``bias="none"``);
:func:`trainable_parameters` counts what is left to train; :func:`merge_adapters` folds the adapters into the
weights. Outputs, gradients, trainable-parameter counts, the DoRA magnitude and the VeRA projections equal
``peft``'s.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from vlm_primer.recipes.quant import NF4Linear
from vlm_primer.validate import check_int

__all__ = ["PEFT_METHODS", "LoRALinear", "VeRALinear", "apply_lora", "apply_peft", "apply_qlora", "apply_vera",
           "merge_adapters", "trainable_parameters", "unmerge_adapters", "vera_projections"]

PEFT_METHODS = ("lora", "dora", "qlora", "vera")


# --- checks ----------------------------------------------------------------------------------------------------

def _check_linear(base, name: str = "base") -> nn.Linear:
    if not isinstance(base, (nn.Linear, NF4Linear)):
        raise TypeError(f"{name} must be an nn.Linear (or a 4-bit NF4Linear), got {type(base).__name__}")
    return base


def _check_rank(r) -> int:
    return check_int(r, "r", hint="the adapter rank")


def _check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _make_dropout(p) -> nn.Module:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ValueError(f"dropout must be a number in [0, 1), got {p!r}")
    return nn.Dropout(p) if p > 0 else nn.Identity()


def _freeze(base: nn.Linear) -> None:
    for p in base.parameters():
        p.requires_grad_(False)


# --- LoRA and DoRA ---------------------------------------------------------------------------------------------

class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: ``base(x) + (alpha / r) · B A dropout(x)``.

    ``A`` ``(r, in)`` starts Kaiming-uniform (``a = sqrt(5)``), ``B`` ``(out, r)`` at zero, as in ``peft``, so a
    fresh adapter changes nothing. ``use_dora=True`` adds DoRA's magnitude ``m`` ``(out,)``, initialised to the
    norm of each row of ``W``: the layer then computes ``m / ||W + s·BA||_row · (W + s·BA) x + b`` with the norm
    detached from the gradient (``peft``'s ``DoraLinearLayer``; with dropout in training mode the dropped input
    goes through both ``W`` and ``BA``, the bias is added once). :meth:`merge` folds the update into
    ``base.weight`` (inference at the cost of the plain layer), :meth:`unmerge` takes it out again.
    Chapter 06b (survey §3.7) explains it.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, use_dora: bool = False) -> None:
        super().__init__()
        self.base = _check_linear(base)
        self.r = _check_rank(r)
        self.alpha = _check_positive(alpha, "alpha")
        self.scale = self.alpha / self.r
        self.dropout = _make_dropout(dropout)
        if not isinstance(use_dora, bool):
            raise TypeError(f"use_dora must be a bool, got {use_dora!r}")
        _freeze(base)
        w = base.weight
        self.A = nn.Parameter(torch.empty(r, base.in_features, device=w.device, dtype=w.dtype))
        self.B = nn.Parameter(torch.zeros(base.out_features, r, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        # DoRA's magnitude: ||W + s·BA|| per output row (= ||W||_row at init since B = 0)
        self.m = nn.Parameter(self.weight_norm()) if use_dora else None
        self.merged = False
        self._merged_norm: torch.Tensor | None = None  # DoRA: the norm used by merge(), needed by unmerge()

    @property
    def use_dora(self) -> bool:
        return self.m is not None

    def delta_weight(self) -> torch.Tensor:
        """The low-rank update ``s · B A`` ``(out, in)``."""
        return (self.B @ self.A) * self.scale

    def weight_norm(self) -> torch.Tensor:
        """``||W + s·BA||`` of each output row ``(out,)``, detached (DoRA treats it as a constant)."""
        with torch.no_grad():
            return torch.linalg.norm(self.base.weight + self.scale * (self.B @ self.A), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged:
            return result
        dx = self.dropout(x)
        lora = F.linear(F.linear(dx, self.A), self.B)
        if self.m is None:
            return result + lora * self.scale
        g = self.m / self.weight_norm()  # m / ||W + s·BA||: the rescaling of each output row
        if isinstance(self.dropout, nn.Identity) or not self.training:
            wx = result if self.base.bias is None else result - self.base.bias  # reuse W x
        else:
            wx = F.linear(dx, self.base.weight)  # the dropped input goes through W too
        # base(x) + [(g - 1) W dx + g s B A dx]  =  g (W + s BA) x + b  without dropout
        return result + ((g - 1) * wx + g * lora * self.scale)

    @torch.no_grad()
    def merge(self) -> "LoRALinear":
        """Fold the adapter into ``base.weight`` (``W += s·BA``; DoRA: ``W = m / ||W + s·BA||_row · (W + s·BA)``,
        the bias untouched); the forward pass is then the plain layer's. Merging twice does nothing. A 4-bit base
        (QLoRA) refuses: rounding ``W + s·BA`` back to NF4 would lose most of the update."""
        if isinstance(self.base, NF4Linear):
            raise ValueError("cannot merge a LoRA adapter into a 4-bit NF4Linear base (QLoRA): the update would be "
                             "rounded away; replace the base with nn.Linear(weight=base.weight) in 16/32 bits first")
        if not self.merged:
            w = self.base.weight
            if self.m is None:
                w += self.delta_weight()
            else:
                self._merged_norm = self.weight_norm()
                w.copy_((self.m / self._merged_norm)[:, None] * (w + self.delta_weight()))
            self.merged = True
        return self

    @torch.no_grad()
    def unmerge(self) -> "LoRALinear":
        """Take the adapter back out of ``base.weight`` (the inverse of :meth:`merge`, up to float rounding)."""
        if self.merged:
            w = self.base.weight
            if self.m is None:
                w -= self.delta_weight()
            else:
                w.copy_(w / (self.m / self._merged_norm)[:, None] - self.delta_weight())
                self._merged_norm = None
            self.merged = False
        return self

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}, scale={self.scale:g}, dora={self.use_dora}, merged={self.merged}"


# --- VeRA ------------------------------------------------------------------------------------------------------

def vera_projections(r: int, in_features: int, out_features: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """VeRA's shared frozen random matrices ``A`` ``(r, in_features)`` and ``B`` ``(out_features, r)``, drawn
    Kaiming-uniform (``bound = sqrt(6 / fan_in)``) from a CPU generator seeded with ``seed``, ``A`` first: the
    values ``peft`` draws from ``VeraConfig.projection_prng_key``."""
    _check_rank(r)
    check_int(in_features, "in_features")
    check_int(out_features, "out_features")
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def kaiming(shape):
        bound = math.sqrt(3.0) * math.sqrt(2.0) / math.sqrt(shape[1])  # gain sqrt(2), fan_in = shape[1]
        return torch.empty(shape).uniform_(-bound, bound, generator=gen)

    return kaiming((r, in_features)), kaiming((out_features, r))


class VeRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus VeRA: ``base(x) + lambda_b ⊙ B (lambda_d ⊙ A dropout(x))``.

    ``A`` ``(r, ≥in)`` and ``B`` ``(≥out, r)`` are frozen random matrices shared by every adapted layer (buffers,
    not parameters; this layer uses ``A[:, :in]`` and ``B[:out]``); only ``lambda_d`` ``(r,)`` (starts at
    ``d_initial``) and ``lambda_b`` ``(out,)`` (starts at zero, so a fresh adapter changes nothing) train.
    :func:`apply_vera` draws the shared pair (:func:`vera_projections`) and builds these.
    Chapter 06b (survey §3.7) explains it.
    """

    def __init__(self, base: nn.Linear, A: torch.Tensor, B: torch.Tensor, d_initial: float = 0.1,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if type(base) is not nn.Linear:
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        self.base = base
        if not (isinstance(A, torch.Tensor) and isinstance(B, torch.Tensor) and A.ndim == 2 and B.ndim == 2):
            raise TypeError("A and B must be 2-D tensors (r, in_max) and (out_max, r)")
        r = A.shape[0]
        if B.shape[1] != r or A.shape[1] < base.in_features or B.shape[0] < base.out_features:
            raise ValueError(f"A {tuple(A.shape)} and B {tuple(B.shape)} must be (r, >= {base.in_features}) and "
                             f"(>= {base.out_features}, r) for a Linear({base.in_features}, {base.out_features})")
        if isinstance(d_initial, bool) or not isinstance(d_initial, (int, float)) or not math.isfinite(d_initial):
            raise ValueError(f"d_initial must be a finite number, got {d_initial!r}")
        self.r = r
        self.dropout = _make_dropout(dropout)
        _freeze(base)
        w = base.weight
        self.register_buffer("A", A)  # the same tensors in every layer: stored once in memory
        self.register_buffer("B", B)
        self.lambda_d = nn.Parameter(torch.full((r,), float(d_initial), device=w.device, dtype=w.dtype))
        self.lambda_b = nn.Parameter(torch.zeros(base.out_features, device=w.device, dtype=w.dtype))
        self.merged = False

    def _projections(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.A[:, : self.base.in_features], self.B[: self.base.out_features]

    def delta_weight(self) -> torch.Tensor:
        """The update ``diag(lambda_b) B diag(lambda_d) A`` ``(out, in)``."""
        A, B = self._projections()
        return (self.lambda_b[:, None] * B) @ (self.lambda_d[:, None] * A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged:
            return result
        A, B = self._projections()
        return result + self.lambda_b * F.linear(self.lambda_d * F.linear(self.dropout(x), A), B)

    @torch.no_grad()
    def merge(self) -> "VeRALinear":
        """Fold the update into ``base.weight``. Merging twice does nothing."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True
        return self

    @torch.no_grad()
    def unmerge(self) -> "VeRALinear":
        """Take the update back out of ``base.weight``."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False
        return self

    def extra_repr(self) -> str:
        return f"r={self.r}, merged={self.merged}"


# --- applying adapters to a model ------------------------------------------------------------------------------

def _find_targets(model: nn.Module, target_modules: str | Iterable[str]) -> list[tuple[str, nn.Linear]]:
    """The ``(name, layer)`` of every module whose name is a target or ends with ``"." + target`` (``peft``'s
    rule for a list of names); each target must match at least one ``nn.Linear`` and nothing else."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    targets = (target_modules,) if isinstance(target_modules, str) else tuple(target_modules)
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"target_modules must be one or more module names, got {target_modules!r}")
    found: list[tuple[str, nn.Linear]] = []
    for t in targets:
        hits = [(n, m) for n, m in model.named_modules() if n == t or n.endswith("." + t)]
        if not hits:
            linears = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m) is nn.Linear})
            raise ValueError(f"no module of the model is called {t!r}; its nn.Linear layers are called {linears}")
        for n, m in hits:
            if type(m) is not nn.Linear:
                kind = "already has an adapter" if isinstance(m, (LoRALinear, VeRALinear)) else "is not an nn.Linear"
                raise TypeError(f"target {t!r} matches {n!r}, which {kind} ({type(m).__name__})")
            if n not in {f for f, _ in found}:
                found.append((n, m))
    return found


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _freeze_all_but_adapters(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, (LoRALinear, VeRALinear)):
            for p in m.parameters(recurse=False):
                p.requires_grad_(True)


def apply_lora(model: nn.Module, target_modules: str | Iterable[str], r: int, alpha: float, dropout: float = 0.0,
               use_dora: bool = False) -> nn.Module:
    """Replace every ``nn.Linear`` named in ``target_modules`` (a name matches a module called exactly that or
    ending in ``"." + name``, e.g. ``("q", "v")``) with a :class:`LoRALinear` (DoRA with ``use_dora=True``), in
    place; freeze every other parameter. Returns ``model``. Like ``peft.get_peft_model(model,
    LoraConfig(r=r, lora_alpha=alpha, target_modules=..., lora_dropout=dropout, use_dora=use_dora))``.
    An unknown name raises ``ValueError`` listing the ``nn.Linear`` layers that exist; a name that matches
    something other than an ``nn.Linear`` raises ``TypeError``."""
    return _apply_lora(model, target_modules, r, alpha, dropout, use_dora, lambda layer: layer)


def _apply_lora(model: nn.Module, target_modules: str | Iterable[str], r: int, alpha: float, dropout: float,
                use_dora: bool, base) -> nn.Module:
    """:func:`apply_lora` and :func:`apply_qlora`: a :class:`LoRALinear` on ``base(layer)`` for every target."""
    _check_rank(r)
    _check_positive(alpha, "alpha")
    _make_dropout(dropout)
    for name, layer in _find_targets(model, target_modules):
        _replace(model, name, LoRALinear(base(layer), r, alpha, dropout=dropout, use_dora=use_dora))
    _freeze_all_but_adapters(model)
    return model


def apply_qlora(model: nn.Module, target_modules: str | Iterable[str], r: int, alpha: float, dropout: float = 0.0,
                block_size: int = 64, double_quant: bool = True) -> nn.Module:
    """QLoRA: every ``nn.Linear`` named in ``target_modules`` is stored in 4-bit NormalFloat
    (:meth:`NF4Linear.from_linear`, blocks of ``block_size``, double quantisation) and gets a :class:`LoRALinear`
    on top, in place; every other parameter is frozen (as :func:`apply_lora`). Returns ``model``."""
    return _apply_lora(model, target_modules, r, alpha, dropout, False,
                       lambda layer: NF4Linear.from_linear(layer, block_size, double_quant))


def apply_vera(model: nn.Module, target_modules: str | Iterable[str], r: int, d_initial: float = 0.1,
               dropout: float = 0.0, seed: int = 0) -> nn.Module:
    """Replace every ``nn.Linear`` named in ``target_modules`` with a :class:`VeRALinear`, in place, all sharing
    one pair of frozen random projections sized for the largest target (:func:`vera_projections` with ``seed``);
    freeze every other parameter. Returns ``model``. Like ``peft.get_peft_model(model, VeraConfig(r=r,
    target_modules=..., d_initial=d_initial, vera_dropout=dropout, projection_prng_key=seed))``."""
    _check_rank(r)
    _make_dropout(dropout)
    found = _find_targets(model, target_modules)
    in_max = max(layer.in_features for _, layer in found)
    out_max = max(layer.out_features for _, layer in found)
    A, B = vera_projections(r, in_max, out_max, seed)
    w = found[0][1].weight
    A, B = A.to(w.device, w.dtype), B.to(w.device, w.dtype)
    for name, layer in found:
        _replace(model, name, VeRALinear(layer, A, B, d_initial=d_initial, dropout=dropout))
    _freeze_all_but_adapters(model)
    return model


def apply_peft(model: nn.Module, method: str, r: int = 8, alpha: float | None = None, *,
               keep: Iterable[str] = ("connector",)) -> nn.Module:
    """What ``python -m vlm_primer.train RECIPE --peft METHOD`` does to the model a recipe built: an adapter
    (``method`` in :data:`PEFT_METHODS`; rank ``r``, ``alpha = 2 r`` unless given; VeRA takes no alpha) on every
    ``nn.Linear`` that the recipe left trainable, except those inside a module named in ``keep``, which stays fully
    trainable (LLaVA-1.5's LoRA recipe: the connector trained in full, the language model through LoRA); everything
    else frozen. A frozen tower stays frozen and gets no adapter. Returns ``model``."""
    if method not in PEFT_METHODS:
        raise ValueError(f"method must be one of {PEFT_METHODS}, got {method!r}")
    keep = (keep,) if isinstance(keep, str) else tuple(keep)
    _check_rank(r)
    alpha = 2.0 * r if alpha is None else _check_positive(alpha, "alpha")
    kept = lambda name: any(part in keep for part in name.split("."))  # noqa: E731
    before = {n for n, p in model.named_parameters() if p.requires_grad and kept(n)}
    targets = [n for n, m in model.named_modules() if type(m) is nn.Linear and m.weight.requires_grad and not kept(n)]
    if not targets:
        raise ValueError("the model has no trainable nn.Linear layer outside the kept modules "
                         f"{keep}: nothing to put an adapter on")
    if method == "vera":
        apply_vera(model, targets, r)
    elif method == "qlora":
        apply_qlora(model, targets, r, alpha)
    else:
        apply_lora(model, targets, r, alpha, use_dora=method == "dora")
    for n, p in model.named_parameters():
        if n in before:
            p.requires_grad_(True)
    return model


def trainable_parameters(model: nn.Module) -> int:
    """The number of parameters that require a gradient (each shared tensor counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _adapters(model: nn.Module) -> list[tuple[str, LoRALinear | VeRALinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (LoRALinear, VeRALinear))]


def merge_adapters(model: nn.Module, unload: bool = False) -> nn.Module:
    """Fold every adapter of ``model`` into its base weights (in place). ``unload=True`` also puts the plain
    ``nn.Linear`` layers back (``peft``'s ``merge_and_unload``): the model has its original structure and cost.
    Returns ``model``."""
    for name, adapter in _adapters(model):
        adapter.merge()
        if unload:
            _replace(model, name, adapter.base)
    return model


def unmerge_adapters(model: nn.Module) -> nn.Module:
    """Take every merged adapter of ``model`` back out of its base weights (in place). Returns ``model``."""
    for _, adapter in _adapters(model):
        adapter.unmerge()
    return model
