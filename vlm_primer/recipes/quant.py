"""QLoRA's storage (survey §3.7): 4-bit NormalFloat with double quantisation, and a linear layer kept in it.

Chapter 06b (survey §3.7) explains it. QLoRA (Dettmers et al. 2023) fine-tunes LoRA adapters
(:mod:`vlm_primer.recipes.peft`) on top of a frozen model whose weights are stored in 4 bits:

* :func:`nf4_quantize` cuts the weight into blocks of 64, divides each by its absmax and rounds to the nearest of
  the 16 NormalFloat levels (:data:`NF4`: quantiles of a standard normal, with an exact zero); *double
  quantisation* stores the absmax constants themselves in 8 bits (bitsandbytes' dynamic map, blocks of 256, after
  subtracting their mean), so the constants cost ``8/64 + 32/(64·256) ≈ 0.127`` bits per weight instead of
  ``32/64 = 0.5``. :func:`nf4_dequantize` undoes it.
* :class:`NF4Linear` is an ``nn.Linear`` stored that way: the packed 4-bit codes and the constants are buffers
  (about 4.13 bits per weight), the weight is rebuilt in the compute dtype at each forward pass (QLoRA's
  "storage data type" vs "computation data type") and never receives a gradient; the bias stays as it was.
  :func:`~vlm_primer.recipes.peft.apply_qlora` quantises a model's linear layers this way and puts LoRA on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from vlm_primer.validate import check_int

__all__ = ["NF4", "NF4Linear", "NF4Tensor", "dynamic_map", "nf4_dequantize", "nf4_quantize", "normal_float_levels"]


# --- 4-bit NormalFloat with double quantisation ------------------------------------------------------------------

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
        if check_int(v, name, hint="an even number of values") % 2:
            raise ValueError(f"{name} must be an even int (each byte packs two 4-bit codes), got {v!r}")
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


class NF4Linear(nn.Module):
    """A frozen ``nn.Linear`` whose weight is stored in NF4 (:func:`nf4_quantize`, double quantisation by
    default): ``forward(x) = x W_q^T + b`` with ``W_q = nf4_dequantize(...)`` rebuilt in ``x``'s dtype at each call.
    Built from a trained layer with :meth:`from_linear`; ``weight`` gives the dequantised weight (read-only: the
    layer has no trainable weight). Chapter 06b (survey §3.7) explains it."""

    def __init__(self, q: NF4Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        if not isinstance(q, NF4Tensor) or len(q.shape) != 2:
            raise TypeError(f"q must be the NF4Tensor of a 2-D weight, got {type(q).__name__}")
        self.out_features, self.in_features = q.shape
        self._meta = {f.name: getattr(q, f.name) for f in fields(q) if not isinstance(getattr(q, f.name), torch.Tensor)
                      and getattr(q, f.name) is not None}
        for name in ("packed", "absmax", "absmax_codes", "absmax_scales", "absmax_offset"):
            self.register_buffer(name, getattr(q, name))
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_linear(cls, layer: nn.Linear, block_size: int = 64, double_quant: bool = True) -> "NF4Linear":
        if type(layer) is not nn.Linear:
            raise TypeError(f"layer must be an nn.Linear, got {type(layer).__name__}")
        return cls(nf4_quantize(layer.weight, block_size, double_quant), layer.bias)

    def quantized(self) -> NF4Tensor:
        """The stored weight as an :class:`NF4Tensor`."""
        tensors = {n: getattr(self, n) for n in ("packed", "absmax", "absmax_codes", "absmax_scales", "absmax_offset")}
        return NF4Tensor(**tensors, **self._meta)

    @property
    def weight(self) -> torch.Tensor:
        return nf4_dequantize(self.quantized())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"bits_per_weight={self.quantized().bits_per_parameter():.3f}")
