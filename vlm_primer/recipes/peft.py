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

  ``r + out`` numbers per layer: about ten times fewer than LoRA at equal rank.
* **QLoRA** (Dettmers et al. 2023): the frozen ``W`` is stored in 4 bits. :func:`nf4_quantize` cuts the weight
  into blocks of 64, divides each by its absmax and rounds to the nearest of the 16 NormalFloat levels
  (:data:`NF4`: quantiles of a standard normal, with an exact zero); *double quantisation* stores the absmax
  constants themselves in 8 bits (bitsandbytes' dynamic map, blocks of 256, after subtracting their mean), so the
  constants cost ``8/64 + 32/(64·256) ≈ 0.127`` bits per weight instead of ``32/64 = 0.5``.
  :func:`nf4_dequantize` undoes it.

:func:`apply_lora` and :func:`apply_vera` swap the ``nn.Linear`` layers named in ``target_modules`` for adapters
in place and freeze everything else (``peft.get_peft_model`` with ``bias="none"``); :func:`trainable_parameters`
counts what is left to train; :func:`merge_adapters` folds the adapters into the weights. Outputs, gradients,
trainable-parameter counts, the DoRA magnitude and the VeRA projections equal ``peft``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NF4", "LoRALinear", "NF4Tensor", "VeRALinear", "apply_lora", "apply_vera", "dynamic_map",
           "merge_adapters", "nf4_dequantize", "nf4_quantize", "normal_float_levels", "trainable_parameters",
           "unmerge_adapters", "vera_projections"]


# --- checks ----------------------------------------------------------------------------------------------------

def _check_linear(base, name: str = "base") -> nn.Linear:
    if not isinstance(base, nn.Linear):
        raise TypeError(f"{name} must be an nn.Linear, got {type(base).__name__}")
    return base


def _check_rank(r) -> int:
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ValueError(f"r must be a positive int (the adapter rank), got {r!r}")
    return r


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
        the bias untouched); the forward pass is then the plain layer's. Merging twice does nothing."""
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
    for name, v in (("in_features", in_features), ("out_features", out_features)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
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
        self.base = _check_linear(base)
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
    _check_rank(r)
    _check_positive(alpha, "alpha")
    _make_dropout(dropout)
    for name, layer in _find_targets(model, target_modules):
        _replace(model, name, LoRALinear(layer, r, alpha, dropout=dropout, use_dora=use_dora))
    _freeze_all_but_adapters(model)
    return model


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


# --- QLoRA: 4-bit NormalFloat with double quantisation -----------------------------------------------------------

# The 16 NF4 levels of QLoRA (Dettmers et al. 2023, appendix E), as bitsandbytes hard-codes them
NF4 = torch.tensor([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                    0.7229568362236023, 1.0])


def normal_float_levels(offset: float = 0.9677083) -> torch.Tensor:
    """NF4 derived: 8 quantiles of N(0, 1) on the positive side (probabilities ``offset`` down to 0.5), 7 on the
    negative side, and zero, scaled into ``[-1, 1]`` (bitsandbytes' ``create_normal_map``). Equals :data:`NF4`."""
    pos = torch.special.ndtri(torch.linspace(offset, 0.5, 9)[:-1].double())   # 8 positive levels
    neg = -torch.special.ndtri(torch.linspace(offset, 0.5, 8)[:-1].double())  # 7 negative levels
    v = torch.cat([pos, neg, torch.zeros(1, dtype=torch.float64)]).float().sort().values
    return v / v.max()


def dynamic_map(signed: bool = True, max_exponent_bits: int = 7, total_bits: int = 8) -> torch.Tensor:
    """bitsandbytes' 8-bit dynamic (tree) quantisation map: 256 sorted values in ``[-1, 1]``, dense near zero
    (a decimal exponent from 1e-6 to 1 and a linear fraction). QLoRA stores the absmax constants with it."""
    data = []
    non_sign_bits = total_bits - 1
    for i in range(max_exponent_bits):
        items = 2 ** (i + non_sign_bits - max_exponent_bits + (0 if signed else 1)) + 1
        bounds = torch.linspace(0.1, 1, items)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        data += (10 ** (-(max_exponent_bits - 1) + i) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    data += [0.0, 1.0]
    data += [0.0] * (2 ** total_bits - len(data))
    return torch.tensor(sorted(data), dtype=torch.float32)


def _blockwise(x: torch.Tensor, code: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax quantisation of flat ``x`` in blocks of ``block`` onto the sorted ``code``: (indices uint8, absmax)."""
    pad = (-x.numel()) % block
    blocks = F.pad(x, (0, pad)).view(-1, block)
    absmax = blocks.abs().amax(dim=1)
    normed = blocks / torch.where(absmax > 0, absmax, torch.ones_like(absmax))[:, None]
    mids = (code[1:] + code[:-1]) / 2  # nearest level = the bucket between midpoints
    idx = torch.bucketize(normed, mids)
    return idx.view(-1)[: x.numel()].to(torch.uint8), absmax


@dataclass
class NF4Tensor:
    """A weight stored as QLoRA stores it. ``packed``: two 4-bit NF4 indices per byte (first one in the high
    nibble); ``absmax``: one fp32 scale per block of ``block_size`` or, with double quantisation, ``None`` and
    instead ``absmax_codes`` (8-bit indices into :func:`dynamic_map`), ``absmax_scales`` (one fp32 per 256
    constants) and ``absmax_offset`` (their mean, subtracted before quantising)."""
    packed: torch.Tensor
    shape: tuple[int, ...]
    dtype: torch.dtype
    block_size: int
    absmax: torch.Tensor | None = None
    absmax_codes: torch.Tensor | None = None
    absmax_scales: torch.Tensor | None = None
    absmax_offset: torch.Tensor | None = None
    absmax_block_size: int = 256

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of storage: the packed indices and the quantisation constants."""
        parts = [self.packed, self.absmax, self.absmax_codes, self.absmax_scales, self.absmax_offset]
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    def bits_per_parameter(self) -> float:
        return 8 * self.nbytes / self.numel


def nf4_quantize(w: torch.Tensor, block_size: int = 64, double_quant: bool = True,
                 absmax_block_size: int = 256) -> NF4Tensor:
    """Quantise ``w`` (any shape) to 4-bit NormalFloat: per block of ``block_size`` values, ``w / absmax`` rounded
    to the nearest :data:`NF4` level. ``double_quant`` also quantises the absmax constants (minus their mean) to
    8 bits with :func:`dynamic_map` in blocks of ``absmax_block_size`` (QLoRA: 64 and 256)."""
    if not isinstance(w, torch.Tensor) or not w.is_floating_point() or w.numel() == 0:
        raise TypeError(f"w must be a non-empty floating-point tensor, got {type(w).__name__}"
                        + (f" {w.dtype} {tuple(w.shape)}" if isinstance(w, torch.Tensor) else ""))
    for name, v in (("block_size", block_size), ("absmax_block_size", absmax_block_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0 or v % 2:
            raise ValueError(f"{name} must be a positive even int, got {v!r}")
    if not torch.isfinite(w).all():
        raise ValueError("w has non-finite values (nan or inf); they cannot be quantised")
    flat = w.detach().reshape(-1).float()
    idx, absmax = _blockwise(flat, NF4.to(flat.device), block_size)
    idx = F.pad(idx, (0, idx.numel() % 2))
    packed = (idx[0::2] << 4) | idx[1::2]
    q = NF4Tensor(packed, tuple(w.shape), w.dtype, block_size, absmax_block_size=absmax_block_size)
    if double_quant:
        offset = absmax.mean()
        q.absmax_codes, q.absmax_scales = _blockwise(absmax - offset, dynamic_map().to(flat.device),
                                                     absmax_block_size)
        q.absmax_offset = offset
    else:
        q.absmax = absmax
    return q


def nf4_dequantize(q: NF4Tensor) -> torch.Tensor:
    """The weight ``q`` stores: ``NF4[index] · absmax`` of its block, reshaped and cast back."""
    if not isinstance(q, NF4Tensor):
        raise TypeError(f"q must be an NF4Tensor (from nf4_quantize), got {type(q).__name__}")
    idx = torch.stack([q.packed >> 4, q.packed & 0xF], dim=1).view(-1)[: q.numel].long()
    if q.absmax is not None:
        absmax = q.absmax
    else:
        code = dynamic_map().to(q.absmax_scales.device)
        scales = q.absmax_scales.repeat_interleave(q.absmax_block_size)[: q.absmax_codes.numel()]
        absmax = code[q.absmax_codes.long()] * scales + q.absmax_offset
    values = NF4.to(absmax.device)[idx] * absmax.repeat_interleave(q.block_size)[: q.numel]
    return values.view(q.shape).to(q.dtype)
