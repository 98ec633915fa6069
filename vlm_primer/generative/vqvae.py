"""VQ-VAE, the vector-quantised auto-encoder (van den Oord et al. 2017, "Neural Discrete Representation Learning").

A convolutional encoder turns an image into a small grid of vectors (8x8 for a 32-pixel image at ``tiny``); each
vector is replaced by its nearest neighbour in a learned codebook of ``K`` vectors, and a decoder rebuilds the image
from the replaced ones. The index of each chosen code is a *token*: the image becomes a sequence of ``h * w``
integers in ``[0, K)``, exactly what a language model predicts. That is why text-to-image transformers need one:
Parti, CM3Leon and Chameleon write an image as a sequence of image tokens next to the text tokens, predict them one
by one with the ordinary next-token loss, and hand the predicted tokens to the tokenizer's decoder to get pixels
back. (Parti uses a ViT-VQGAN; CM3Leon and Chameleon a Make-A-Scene-style tokenizer of 8192 codes, 1024 tokens
per image.)

The nearest-code lookup has no gradient, so three pieces make the whole thing trainable:

- the **straight-through estimator**: the decoder reads ``z + sg(q - z)``, equal to the code ``q`` in the forward
  pass, while the backward pass copies the decoder's gradient onto the encoder output ``z`` unchanged;
- the **codebook loss** ``||sg(z) - q||^2`` pulls each chosen code towards the encoder outputs that chose it
  (with ``ema=True`` each code is instead set to the running mean of those outputs: no loss, no gradient);
- the **commitment loss** ``beta * ||z - sg(q)||^2`` keeps the encoder close to the codes it chose.

(``sg`` is stop-gradient, ``.detach()``.) The loss is ``MSE(reconstruction, pixels) + codebook_loss + beta *
commitment_loss``. A code that no encoder output picks gets no gradient and never moves again: a "dead code", and
when most codes die, codebook collapse. ``restart_dead=True`` re-seeds dead codes from random encoder outputs of
the current batch (as Jukebox does). Explained in notebook 04b, §VQ-VAE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.validate import as_tensor, check_finite, check_images, check_tokens, value_checks_enabled

__all__ = ["QuantizerOutput", "VQVAE", "VQVAEConfig", "VQVAEOutput", "VectorQuantizer"]


@dataclass
class VQVAEConfig(PresetConfig):
    """The conv encoder/decoder, the codebook and the loss weights. ``channels[0]`` is the width at full
    resolution; every later entry is one level: a stride-2 convolution to that width, then ``res_blocks``
    residual blocks. The token grid is ``image_size / 2 ** (len(channels) - 1)`` per side.
    Explained in notebook 04b, §VQ-VAE."""

    image_size: int = 32
    in_channels: int = 3
    channels: tuple[int, ...] = (8, 16, 32)
    res_blocks: int = 1             # residual blocks per downsampled level, in the encoder and in the decoder
    codebook_size: int = 128        # K
    code_dim: int = 16              # D
    beta: float = 0.25              # weight of the commitment loss
    ema: bool = False               # codebook = running means of its encoder outputs, instead of the codebook loss
    ema_decay: float = 0.99         # of the EMA codebook and of the usage counts that find dead codes
    restart_dead: bool = False      # re-seed codes whose EMA usage falls below dead_threshold
    dead_threshold: float = 1.0     # in uses per batch (a code used n times in every batch has EMA usage n)

    PRESETS: ClassVar[dict] = {
        # 32 px -> 8x8 = 64 tokens from 128 codes; narrow enough that a forward+backward of 64 images takes well
        # under 100 ms on one CPU thread.
        "tiny": dict(image_size=32, channels=(8, 16, 32), res_blocks=1, codebook_size=128, code_dim=16),
        # 64 px -> 16x16 = 256 tokens from 512 codes.
        "small": dict(image_size=64, channels=(32, 64, 128), res_blocks=2, codebook_size=512, code_dim=32),
        # VQGAN-like f=16: 256 px -> 16x16 = 256 tokens, VQGAN's widths, 8192 codes (Chameleon's codebook size).
        "base": dict(image_size=256, channels=(128, 128, 256, 256, 512), res_blocks=2, codebook_size=8192,
                     code_dim=256),
    }
    BOUNDS: ClassVar[dict] = dict(image_size=">0", in_channels=">0", channels=">0", res_blocks=">=0",
                                  codebook_size=">0", code_dim=">0", beta=">=0", ema_decay="[0, 1)",
                                  dead_threshold=">=0")

    def validate(self) -> None:
        if len(self.channels) == 0:
            raise ValueError("channels must hold at least one width (the full-resolution one), got ()")
        if self.image_size % self.factor:
            raise ValueError(f"image_size={self.image_size} is not divisible by the downsampling factor "
                             f"{self.factor} = 2 ** (len(channels) - 1) with channels={self.channels}")

    @property
    def factor(self) -> int:
        """Pixels per side covered by one token."""
        return 2 ** (len(self.channels) - 1)

    @property
    def grid(self) -> int:
        """Tokens per side."""
        return self.image_size // self.factor

    @property
    def num_tokens(self) -> int:
        return self.grid**2


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor         # (B, D, H, W): the codes, carrying the straight-through gradient onto z
    indices: torch.Tensor           # (B, H, W) long: the code each vector got
    codebook_loss: torch.Tensor     # mse(q, sg(z)); zero when the codebook is an EMA
    commitment_loss: torch.Tensor   # mse(z, sg(q)), not yet multiplied by beta
    perplexity: torch.Tensor        # exp(entropy of the batch's code usage): K when all codes are used evenly
    usage: torch.Tensor             # fraction of the K codes used at least once in the batch


class VectorQuantizer(nn.Module):
    """Nearest-code lookup in a ``(K, D)`` codebook with the straight-through gradient, the codebook and commitment
    losses, optional EMA codebook updates (``ema``) and dead-code restarts (``restart_dead``).

    Buffers: ``usage_ema`` (K,) counts each code's uses per batch (an EMA with ``decay``; kept in every mode, it is
    what finds dead codes); with ``ema`` also ``cluster_size`` (K,) and ``embed_sum`` (K, D). All updates happen in
    training mode only, after the lookup, and from this process's batch alone (no all-reduce).
    Explained in notebook 04b, §VQ-VAE."""

    def __init__(self, codebook_size: int, code_dim: int, *, ema: bool = False, decay: float = 0.99,
                 restart_dead: bool = False, dead_threshold: float = 1.0, eps: float = 1e-5) -> None:
        super().__init__()
        for name, v in (("codebook_size", codebook_size), ("code_dim", code_dim)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        self.codebook_size, self.code_dim = codebook_size, code_dim
        self.ema, self.decay, self.eps = ema, decay, eps
        self.restart_dead, self.dead_threshold = restart_dead, dead_threshold
        # VQGAN's initialisation. With EMA updates the codebook is overwritten, never trained by gradient descent.
        init = torch.empty(codebook_size, code_dim).uniform_(-1 / codebook_size, 1 / codebook_size)
        self.codebook = nn.Parameter(init, requires_grad=not ema)
        # Starting at the threshold, a code unused in the first training batch is re-seeded at once.
        self.register_buffer("usage_ema", torch.full((codebook_size,), float(dead_threshold)))
        if ema:  # every code starts as a cluster of one vector at its initial position
            self.register_buffer("cluster_size", torch.ones(codebook_size))
            self.register_buffer("embed_sum", init.clone())

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """The nearest code (squared L2) to each vector of ``z`` ``(B, D, H, W)``: indices ``(B, H, W)`` long."""
        check_images(z, channels=self.code_dim, name="z")
        b, _, h, w = z.shape
        flat = rearrange(z.detach(), "b d h w -> (b h w) d").float()
        e = self.codebook.detach().float()
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2, for every (vector, code) pair at once
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)
        return rearrange(dist.argmin(1), "(b h w) -> b h w", b=b, h=h, w=w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """The code vectors of ``indices`` ``(B, H, W)``: ``(B, D, H, W)``."""
        if not isinstance(indices, torch.Tensor) or indices.is_floating_point() or indices.dtype == torch.bool:
            raise TypeError(f"indices must be an integer tensor, got {getattr(indices, 'dtype', type(indices))}")
        if value_checks_enabled() and indices.numel():
            lo, hi = (int(v) for v in indices.aminmax())
            if lo < 0 or hi >= self.codebook_size:
                raise ValueError(f"indices has codes outside [0, {self.codebook_size}): min {lo}, max {hi}")
        return rearrange(F.embedding(indices.long(), self.codebook), "b h w d -> b d h w")

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """``z`` ``(B, D, H, W)``, the encoder's output -> :class:`QuantizerOutput`."""
        indices = self.nearest(z)
        q = self.lookup(indices).to(z.dtype)
        codebook_loss = z.new_zeros(()) if self.ema else F.mse_loss(q, z.detach())
        commitment_loss = F.mse_loss(z, q.detach())
        quantized = z + (q - z).detach()   # straight-through: the value of q, the gradient of z

        counts = torch.bincount(indices.flatten(), minlength=self.codebook_size).float()
        perplexity = torch.special.entr(counts / counts.sum()).sum().exp()   # entr(p) = -p log p, entr(0) = 0
        usage = (counts > 0).float().mean()
        if self.training:
            self._update(rearrange(z.detach(), "b d h w -> (b h w) d").float(), indices.flatten(), counts)
        return QuantizerOutput(quantized=quantized, indices=indices, codebook_loss=codebook_loss,
                               commitment_loss=commitment_loss, perplexity=perplexity, usage=usage)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> None:
        """Training-time updates after the lookup: the EMA codebook, the usage counts, dead-code restarts."""
        k, decay = self.codebook_size, self.decay
        if self.ema:
            sums = F.one_hot(indices, k).type_as(flat).t() @ flat            # (K, D): sum of each code's vectors
            self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
            self.embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
            total = self.cluster_size.sum()
            # Laplace smoothing (Sonnet, VQ-VAE-2): no division by zero for a code that was never used
            n = (self.cluster_size + self.eps) / (total + k * self.eps) * total
            self.codebook.copy_(self.embed_sum / n[:, None])
        self.usage_ema.mul_(decay).add_(counts, alpha=1 - decay)
        if self.restart_dead:
            dead = (self.usage_ema < self.dead_threshold).nonzero().flatten()
            if len(dead):
                rows = flat[torch.randint(len(flat), (len(dead),), device=flat.device)]  # the global RNG
                self.codebook[dead] = rows.to(self.codebook.dtype)
                self.usage_ema[dead] = self.dead_threshold   # the same grace as a new code at the start
                if self.ema:  # a one-vector cluster at its new place, or the next EMA step would undo the restart
                    self.cluster_size[dead] = 1.0
                    self.embed_sum[dead] = rows


def group_norm(channels: int) -> nn.GroupNorm:
    """VQGAN's GroupNorm (32 groups at its widths), with at least 4 channels per group at narrow widths."""
    return nn.GroupNorm(math.gcd(32, max(channels // 4, 1), channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    """``x + conv1x1(silu(norm(conv3x3(silu(norm(x))))))``: VQ-VAE's 3x3-then-1x1 block with VQGAN's norms."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = group_norm(dim), nn.Conv2d(dim, dim, 3, padding=1)
        self.norm2, self.conv2 = group_norm(dim), nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


@dataclass
class VQVAEOutput:
    reconstruction: torch.Tensor    # (B, C, H, W), not clamped
    loss: torch.Tensor              # recon_loss + codebook_loss + beta * commitment_loss
    recon_loss: torch.Tensor        # MSE against pixel_values
    codebook_loss: torch.Tensor     # zero with an EMA codebook
    commitment_loss: torch.Tensor   # before the beta weighting
    perplexity: torch.Tensor        # of the batch's code usage
    usage: torch.Tensor             # fraction of codes used in the batch
    indices: torch.Tensor           # (B, h, w) long; tokenize() gives them flattened to (B, h*w)


class VQVAE(nn.Module):
    """An image tokenizer: :meth:`encode` (conv encoder), the :class:`VectorQuantizer`, :meth:`decode` (the
    mirrored conv decoder); :meth:`tokenize` and :meth:`detokenize` go between pixels and ``(B, h*w)`` token ids in
    raster order. Explained in notebook 04b, §VQ-VAE."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        enc: list[nn.Module] = [nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)]
        for c_in, c in zip(ch[:-1], ch[1:]):  # per level: halve the resolution, then the residual blocks
            enc += [group_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c, 4, stride=2, padding=1)]
            enc += [ResBlock(c) for _ in range(cfg.res_blocks)]
        enc += [group_norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], cfg.code_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.code_dim, ema=cfg.ema, decay=cfg.ema_decay,
                                         restart_dead=cfg.restart_dead, dead_threshold=cfg.dead_threshold)
        dec: list[nn.Module] = [nn.Conv2d(cfg.code_dim, ch[-1], 1)]
        for c, c_out in zip(ch[:0:-1], ch[-2::-1]):  # the mirror image: residual blocks, then double the size
            dec += [ResBlock(c) for _ in range(cfg.res_blocks)]
            dec += [group_norm(c), nn.SiLU(), nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1)]
        dec += [group_norm(ch[0]), nn.SiLU(), nn.Conv2d(ch[0], cfg.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def _check(self, pixel_values: torch.Tensor) -> torch.Tensor:
        cfg, codebook = self.cfg, self.quantizer.codebook
        check_images(pixel_values, channels=cfg.in_channels, size=cfg.image_size, name="pixel_values",
                     device=codebook.device)
        check_finite(pixel_values, "pixel_values")
        return pixel_values.to(codebook.dtype)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels ``(B, C, H, W)`` -> the continuous encoder output ``z`` ``(B, D, h, w)``, before quantisation."""
        return self.encoder(self._check(pixel_values))

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """(Quantised) vectors ``(B, D, h, w)`` -> pixels ``(B, C, H, W)``."""
        check_images(z_q, channels=self.cfg.code_dim, size=self.cfg.grid, name="z_q")
        return self.decoder(z_q)

    @torch.no_grad()
    def tokenize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels -> token ids ``(B, h*w)`` long, row by row (raster order). Updates nothing, even in training."""
        return rearrange(self.quantizer.nearest(self.encode(pixel_values)), "b h w -> b (h w)")

    def detokenize(self, indices: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, h*w)`` in raster order, or ``(B, h, w)`` -> pixels ``(B, C, H, W)``."""
        g = self.cfg.grid
        want = f"a (B, {g * g}) or (B, {g}, {g}) tensor of code indices"
        idx = as_tensor(indices, "indices", want)
        if idx.ndim not in (2, 3) or idx.shape[1:] not in ((g * g,), (g, g)):
            raise ValueError(f"indices must be {want}, got shape {tuple(idx.shape)}")
        flat = check_tokens(idx.flatten(1), name="indices", device=self.quantizer.codebook.device)
        return self.decode(self.quantizer.lookup(rearrange(flat, "b (h w) -> b h w", h=g)))

    def forward(self, pixel_values: torch.Tensor) -> VQVAEOutput:
        """``pixel_values`` ``(B, C, H, W)``, in whatever normalisation the caller uses -> :class:`VQVAEOutput`."""
        z = self.encode(pixel_values)
        vq = self.quantizer(z)
        reconstruction = self.decode(vq.quantized)
        recon_loss = F.mse_loss(reconstruction, pixel_values.to(reconstruction.dtype))
        loss = recon_loss + vq.codebook_loss + self.cfg.beta * vq.commitment_loss
        return VQVAEOutput(reconstruction=reconstruction, loss=loss, recon_loss=recon_loss,
                           codebook_loss=vq.codebook_loss, commitment_loss=vq.commitment_loss,
                           perplexity=vq.perplexity, usage=vq.usage, indices=vq.indices)
