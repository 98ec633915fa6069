"""A text-conditioned diffusion transformer (DiT, Peebles & Xie 2023) in pixel space, with classifier-free guidance.

Explained in notebook 04b, §Diffusion. A denoiser ``eps_theta(x_t, t, caption)`` is trained with the eps-MSE of
:mod:`vlm_primer.generative.diffusion` and sampled with its DDPM or DDIM steps. How it reads its two conditions:

* **the timestep** is a scalar that changes the whole computation (how much noise to remove), so, as in DiT, it
  *modulates* every block: a sinusoidal embedding and an MLP give a vector ``c`` from which each block regresses a
  shift, a scale and a gate per sub-layer (**adaLN-Zero**: ``x + gate * f(LN(x) * (1 + scale) + shift)``). The
  regression layers and the output layer start at zero, so every block starts as the identity and the model as
  ``eps = 0``;
* **the caption** is a sequence, and *where* each word matters differs from patch to patch ("a red circle left of
  a blue square"), so, as in Stable Diffusion (Rombach et al. 2022) and Imagen (Saharia et al. 2022), each block
  **cross-attends** from the image patches to the caption's token states. A pooled caption vector folded into
  ``c`` would tell every patch the same thing. Our caption encoder is a small text transformer trained jointly
  from scratch (Stable Diffusion freezes CLIP's text tower, Imagen a frozen T5: the survey's point that a good
  text encoder carries much of the image-text alignment).

**Classifier-free guidance** (Ho & Salimans 2022; explained in notebook 04b, §Classifier-free guidance): in
training a caption is replaced by the empty caption (``<bos> <eos>``) with probability ``cond_drop``, so the one
network learns both ``eps(x_t, t, caption)`` and ``eps(x_t, t, "")``. At sampling time
``eps_uncond + s (eps_cond - eps_uncond)`` with ``s > 1`` extrapolates away from the unconditional prediction:
images that match the caption better, less diverse. Both predictions come from one batched forward. This ``s`` is
DiT's and ``diffusers``' guidance scale; Ho & Salimans write ``(1 + w) eps_cond - w eps_uncond``, so ``s = 1 + w``
and ``s = 1`` is no guidance.

Simplified from DiT: the model predicts eps only and samples with the fixed posterior variance (DiT also learns
the variance, with the variational-bound term in its loss). DDIM steps go from one visited timestep to the next
visited one, as Song et al.'s code does; ``diffusers``' ``DDIMScheduler`` steps to ``t - T // n``, so the two
differ for ``linspace`` spacing, or ``trailing`` when ``n`` does not divide ``T``.

The images live in ``[-1, 1]`` (scale Shapes World's ``[0, 1]`` images with ``2 x - 1``); ``sample`` returns them
in that range. The ``base`` preset is DiT-B's width and depth on 128 px pixels in 8 px patches: 256 tokens, as
many as DiT-B/2 on a 256-pixel image's ``32 x 32 x 4`` latent (the paper's setting, with a VAE we do not have), with
a CLIP-B-sized text encoder.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from tqdm.auto import tqdm

from vlm_primer.config import PresetConfig
from vlm_primer.generative.diffusion import NoiseSchedule, add_noise, ddim_step, ddpm_step, inference_timesteps
from vlm_primer.nn import MLP, Attention, TextConfig, TextTransformer, sincos_2d
from vlm_primer.validate import (check_choice, check_finite, check_images, check_mask, check_same_batch,
                                 check_tokens, value_checks_enabled)

__all__ = ["DiT", "DiTBlock", "DiTConfig", "DiffusionOutput", "SAMPLERS", "timestep_embedding"]

SAMPLERS = ("ddim", "ddpm")
DIT_SCHEDULES = ("linear", "scaled_linear", "cosine")
FREQ_DIM = 256  # DiT's sinusoidal timestep features, before the MLP
# The caption encoder: the project tokenizer (814 ids, <pad>=0, <eos>=3), bidirectional (every token sees the whole
# caption, as Imagen's T5 encoder); the cross-attention reads all its token states.
SHAPES_CAPTIONS = dict(vocab_size=814, eos_token_id=3, pad_token_id=0, causal=False)


@dataclass
class DiTConfig(PresetConfig):
    """The image (``image_size`` x ``image_size`` x ``in_channels``, cut into ``patch_size`` patches), the DiT blocks
    (``dim``, ``depth``, ``heads``, ``mlp_ratio``), the caption encoder ``text`` (a
    :class:`~vlm_primer.nn.TextConfig` or a dict of its fields), the condition dropout of classifier-free guidance
    and the noise schedule. The empty caption is ``<bos> <eos>`` (``bos_token_id``, ``text.eos_token_id``)."""

    image_size: int = 32
    in_channels: int = 3
    patch_size: int = 4
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    text: TextConfig = field(default_factory=lambda: TextConfig(**DiTConfig.PRESETS["tiny"]["text"]))
    bos_token_id: int = 2
    cond_drop: float = 0.1
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02

    PRESETS: ClassVar[dict] = {
        # 32 px Shapes World, 4 px patches (64 tokens); a 2-block caption encoder.
        "tiny": dict(image_size=32, patch_size=4, dim=128, depth=4, heads=4,
                     text=dict(SHAPES_CAPTIONS, context_length=16, dim=64, depth=2, heads=4)),
        # 64 px Shapes World (the world's small scale), 4 px patches (256 tokens), DiT-S-like width.
        "small": dict(image_size=64, patch_size=4, dim=384, depth=8, heads=6,
                      text=dict(SHAPES_CAPTIONS, context_length=32, dim=256, depth=4, heads=4)),
        # DiT-B (the paper's 768 wide, 12 blocks, 12 heads) on 128 px Shapes World pixels (the world's base scale) in
        # 8 px patches: 256 tokens, as many as DiT-B/2 on a 256 px image's 32x32 latent (we have no latent
        # auto-encoder); a CLIP-B-sized caption encoder (Stable Diffusion's choice) over the project tokenizer.
        "base": dict(image_size=128, in_channels=3, patch_size=8, dim=768, depth=12, heads=12,
                     text=dict(TextConfig.PRESETS["clip"], **SHAPES_CAPTIONS, pool="last", act="gelu",
                               context_length=32)),
    }
    BOUNDS: ClassVar[dict] = dict(image_size=">0", in_channels=">0", patch_size=">0", dim=">0", depth=">0",
                                  heads=">0", mlp_ratio="(0, 64]", bos_token_id=">=0", cond_drop="[0, 1]",
                                  num_train_timesteps="[2, 100000]", beta_start="(0, 1)", beta_end="(0, 1)")

    def validate(self) -> None:
        self.coerce_parts(text=TextConfig)
        check_choice(self.beta_schedule, DIT_SCHEDULES, "beta_schedule")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")
        if self.dim % 4:
            raise ValueError(f"dim={self.dim} must be divisible by 4 (2-D sin-cos positions)")
        if int(self.dim * self.mlp_ratio) < 1:
            raise ValueError(f"mlp_ratio={self.mlp_ratio} gives dim * mlp_ratio < 1: an MLP with no hidden unit")
        if self.beta_end < self.beta_start:
            raise ValueError(f"beta_end={self.beta_end} must be >= beta_start={self.beta_start}")
        if self.text.context_length < 2:
            raise ValueError(f"text.context_length={self.text.context_length} cannot hold the empty caption "
                             "<bos> <eos>")
        if self.bos_token_id >= self.text.vocab_size:
            raise ValueError(f"bos_token_id={self.bos_token_id} is outside text.vocab_size={self.text.vocab_size}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2


@dataclass
class DiffusionOutput:
    loss: torch.Tensor          # eps-MSE
    eps_pred: torch.Tensor      # (B, C, H, W), the predicted noise
    noise: torch.Tensor         # (B, C, H, W), the true noise
    t: torch.Tensor             # (B,) the timesteps


def timestep_embedding(t: torch.Tensor, dim: int = FREQ_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (integer or fractional) timesteps ``(B,) -> (B, dim)``: ``[cos(t w_i), sin(t w_i)]``
    with ``w_i = max_period^(-i / (dim/2))``, as DiT's ``TimestepEmbedder`` (the same frequencies as
    :func:`~vlm_primer.nn.sincos_1d`, computed on ``t``'s device)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class DiTBlock(nn.Module):
    """Self-attention over the patches, cross-attention to the caption's token states, an MLP; each sub-layer
    ``x + gate * f(LN(x) * (1 + scale) + shift)`` with ``(shift, scale, gate)`` regressed from the timestep vector
    ``c`` by ``ada`` (zero-initialised: adaLN-Zero). Explained in notebook 04b, §Diffusion."""

    def __init__(self, dim: int, heads: int, context_dim: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.xattn = Attention(dim, heads, kv_dim=context_dim)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio), act="gelu_tanh")
        self.ada = nn.Linear(dim, 9 * dim)  # (shift, scale, gate) x (attn, xattn, mlp)

    def forward(self, x: torch.Tensor, c: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, N, dim)``, ``c`` ``(B, dim)``, ``context`` ``(B, L, context_dim)``, ``context_mask``
        ``(B, L)`` bool (True = real token)."""
        mods = rearrange(self.ada(F.silu(c)), "b (k d) -> k b 1 d", k=9)
        x = x + mods[2] * self.attn(_modulate(self.norm1(x), mods[0], mods[1]))
        x = x + mods[5] * self.xattn(_modulate(self.norm2(x), mods[3], mods[4]), context=context,
                                     key_padding_mask=context_mask)
        return x + mods[8] * self.mlp(_modulate(self.norm3(x), mods[6], mods[7]))


class DiT(nn.Module):
    """The denoiser ``eps_theta(x_t, t, caption)``: patch embedding + fixed 2-D sin-cos positions, ``depth``
    :class:`DiTBlock` s conditioned on the timestep (adaLN-Zero) and the caption (cross-attention), an adaLN-modulated
    linear head back to pixels. :meth:`forward` is the training loss, :meth:`sample` generates images.
    Explained in notebook 04b, §Diffusion."""

    def __init__(self, cfg: DiTConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else DiTConfig()
        self.cfg = cfg
        d, p = cfg.dim, cfg.patch_size
        self.patch_embed = nn.Conv2d(cfg.in_channels, d, kernel_size=p, stride=p)
        self.register_buffer("pos_emb", sincos_2d(cfg.grid, cfg.grid, d), persistent=False)
        self.t_embed = nn.Sequential(nn.Linear(FREQ_DIM, d), nn.SiLU(), nn.Linear(d, d))
        self.text = TextTransformer(cfg.text)
        self.blocks = nn.ModuleList([DiTBlock(d, cfg.heads, cfg.text.dim, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(d, 2 * d)  # (shift, scale) of the head
        self.head = nn.Linear(d, p * p * cfg.in_channels)
        self.schedule = NoiseSchedule.make(cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end, cfg.beta_schedule)
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT's initialisation: Xavier-uniform linear layers (the patch embedding as the linear layer it is), zero
        biases, N(0, 0.02) timestep MLP; the adaLN regressions and the head zero (adaLN-Zero). The caption encoder
        keeps its own initialisation."""
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and not name.startswith("text."):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        for lin in (self.t_embed[0], self.t_embed[2]):
            nn.init.normal_(lin.weight, std=0.02)
        for lin in [b.ada for b in self.blocks] + [self.ada_out, self.head]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    # ------------------------------------------------------------------ conditions

    def encode_text(self, input_ids, attention_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions ``(B, L)`` (ids and 0/1 mask; all real when ``attention_mask`` is None) -> ``(context,
        context_mask)``: the caption encoder's token states ``(B, L, text.dim)`` and the mask as bool."""
        tc = self.cfg.text
        ids = check_tokens(input_ids, max_len=tc.context_length, vocab_size=tc.vocab_size, device=self.device)
        mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else \
            check_mask(attention_mask, shape=tuple(ids.shape), device=self.device)
        return self.text(ids, mask).last_hidden_state, mask

    def null_ids(self, batch: int, length: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        """The empty caption ``<bos> <eos>`` padded to ``length``: ``(ids, mask)`` of shape ``(batch, length)``."""
        tc = self.cfg.text
        if not isinstance(batch, numbers.Integral) or isinstance(batch, bool) or batch < 1:
            raise ValueError(f"batch must be a positive int, got {batch!r}")
        if not isinstance(length, numbers.Integral) or isinstance(length, bool) \
                or not 2 <= length <= tc.context_length:
            raise ValueError(f"length must be an int in [2, text.context_length={tc.context_length}] (the empty "
                             f"caption is <bos> <eos>), got {length!r}")
        ids = torch.full((batch, length), tc.pad_token_id, dtype=torch.long, device=self.device)
        ids[:, 0], ids[:, 1] = self.cfg.bos_token_id, tc.eos_token_id
        mask = torch.zeros_like(ids, dtype=torch.bool)
        mask[:, :2] = True
        return ids, mask

    def null_context(self, batch: int, length: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        """The empty caption's ``(context, context_mask)`` repeated ``batch`` times, padded to ``length`` tokens (the
        padding is masked out): the unconditional input of classifier-free guidance."""
        ids, mask = self.null_ids(1, length)
        context, mask = self.encode_text(ids, mask)
        return context.expand(batch, -1, -1), mask.expand(batch, -1)

    def _check_context(self, context: torch.Tensor, context_mask, batch: int) -> torch.Tensor | None:
        tc = self.cfg.text
        if not isinstance(context, torch.Tensor):
            raise TypeError(f"context must be a tensor (B, L, {tc.dim}) from encode_text, got {type(context).__name__}")
        if context.ndim != 3 or context.shape[0] != batch or context.shape[2] != tc.dim or context.shape[1] == 0:
            raise ValueError(f"context must have shape (B, L, text.dim) = ({batch}, L, {tc.dim}), got "
                             f"{tuple(context.shape)}")
        if context_mask is None:
            return None
        return check_mask(context_mask, shape=tuple(context.shape[:2]), name="context_mask", like="context",
                          desc="(B, L)", device=context.device)

    def _check_t(self, t, batch: int) -> torch.Tensor:
        """``t`` as a ``(B,)`` int64 tensor in ``[0, T)`` (an int is broadcast)."""
        T = self.cfg.num_train_timesteps
        if isinstance(t, numbers.Integral) and not isinstance(t, bool):
            t = torch.full((batch,), int(t), dtype=torch.long, device=self.device)
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"t must be an int or a (B,) integer tensor of timesteps, got {type(t).__name__}")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"t must hold integer timesteps, got dtype {t.dtype}")
        if t.ndim == 0:
            t = t.expand(batch)
        if tuple(t.shape) != (batch,):
            raise ValueError(f"t must have shape (B,) = ({batch},), got {tuple(t.shape)}")
        t = t.to(self.device, torch.long)
        if value_checks_enabled() and bool(((t < 0) | (t >= T)).any()):  # reads the values: a sync on a GPU
            raise ValueError(f"t has timesteps outside [0, num_train_timesteps={T}): min {int(t.min())}, "
                             f"max {int(t.max())}")
        return t

    # ------------------------------------------------------------------ the denoiser

    def eps(self, x_t: torch.Tensor, t, context: torch.Tensor, context_mask=None) -> torch.Tensor:
        """Predicted noise ``(B, C, H, W)`` for noisy images ``x_t``, timesteps ``t`` (``(B,)`` ints or one int) and
        the caption states ``context`` ``(B, L, text.dim)`` with ``context_mask`` ``(B, L)`` (from
        :meth:`encode_text` or :meth:`null_context`)."""
        cfg = self.cfg
        check_images(x_t, channels=cfg.in_channels, size=cfg.image_size, name="x_t", device=self.device)
        check_finite(x_t, "x_t")
        context_mask = self._check_context(context, context_mask, len(x_t))
        t = self._check_t(t, len(x_t))
        return self._eps(x_t, t, context, context_mask)

    def _eps(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
             context_mask: torch.Tensor | None) -> torch.Tensor:
        cfg, dtype = self.cfg, self.head.weight.dtype
        x = rearrange(self.patch_embed(x_t.to(dtype)), "b d h w -> b (h w) d") + self.pos_emb.to(dtype)
        c = self.t_embed(timestep_embedding(t).to(dtype))
        context = context.to(dtype)
        for block in self.blocks:
            x = block(x, c, context, context_mask)
        shift, scale = rearrange(self.ada_out(F.silu(c)), "b (k d) -> k b 1 d", k=2)
        x = self.head(_modulate(self.norm_out(x), shift, scale))
        return rearrange(x, "b (h w) (p q c) -> b c (h p) (w q)", h=cfg.grid, p=cfg.patch_size, q=cfg.patch_size)

    def forward(self, pixel_values: torch.Tensor, input_ids, attention_mask=None, t: torch.Tensor | None = None,
                noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> DiffusionOutput:
        """The eps-MSE on clean images ``pixel_values`` ``(B, C, H, W)`` in ``[-1, 1]`` and their captions.

        ``t`` ``(B,)`` is drawn uniformly from ``[0, T)`` and ``noise`` from ``N(0, I)`` when not given (from
        ``generator`` if given). In training mode each caption is replaced by the empty caption with probability
        ``cond_drop`` (classifier-free guidance's condition dropout); in eval mode captions are kept."""
        cfg = self.cfg
        device = self.device
        check_images(pixel_values, channels=cfg.in_channels, size=cfg.image_size, name="pixel_values", device=device)
        check_finite(pixel_values, "pixel_values")
        tc = cfg.text
        ids = check_tokens(input_ids, max_len=tc.context_length, vocab_size=tc.vocab_size, device=device)
        check_same_batch(pixel_values=pixel_values, input_ids=ids)
        mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else \
            check_mask(attention_mask, shape=tuple(ids.shape), device=device)
        B = len(ids)
        t = torch.randint(0, cfg.num_train_timesteps, (B,), generator=generator, device=_gen_device(generator, device)
                          ).to(device) if t is None else self._check_t(t, B)
        if noise is None:
            noise = torch.randn(pixel_values.shape, generator=generator, device=_gen_device(generator, device),
                                dtype=pixel_values.dtype).to(device)
        elif not isinstance(noise, torch.Tensor) or noise.shape != pixel_values.shape:
            raise ValueError(f"noise must be a tensor of the shape of pixel_values {tuple(pixel_values.shape)}, got "
                             f"{tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__}")
        else:
            check_finite(noise, "noise")
            noise = noise.to(device)
        if self.training and cfg.cond_drop > 0:  # classifier-free guidance: learn the unconditional eps too
            drop = torch.rand(B, generator=generator, device=_gen_device(generator, device)).to(device) < cfg.cond_drop
            ids, mask = _pad(ids, mask, max(2, ids.shape[1]), tc.pad_token_id)
            null_ids, null_mask = self.null_ids(B, ids.shape[1])
            ids = torch.where(drop[:, None], null_ids, ids)
            mask = torch.where(drop[:, None], null_mask, mask)
        context = self.text(ids, mask).last_hidden_state
        x_t = add_noise(self.schedule, pixel_values, noise, t)
        eps_pred = self._eps(x_t, t, context, mask)
        loss = F.mse_loss(eps_pred.float(), noise.float())
        return DiffusionOutput(loss=loss, eps_pred=eps_pred, noise=noise, t=t)

    # ------------------------------------------------------------------ guidance and sampling

    def guided_eps(self, x_t: torch.Tensor, t, context: torch.Tensor, context_mask, guidance_scale: float,
                   uncond: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Classifier-free guidance: ``eps_uncond + s (eps_cond - eps_uncond)``, both from one batched forward.
        ``s = 1`` is the conditional prediction, ``s = 0`` the unconditional one (each computed alone).
        ``uncond`` is the empty caption's ``(context, mask)`` (default :meth:`null_context`).
        Explained in notebook 04b, §Classifier-free guidance."""
        check_finite(guidance_scale, "guidance_scale")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale!r}")
        cfg = self.cfg
        check_images(x_t, channels=cfg.in_channels, size=cfg.image_size, name="x_t", device=self.device)
        check_finite(x_t, "x_t")
        B = len(x_t)
        context_mask = self._check_context(context, context_mask, B)
        if context_mask is None:
            context_mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
        t = self._check_t(t, B)
        if uncond is None and guidance_scale != 1:
            uncond = self.null_context(B, max(2, context.shape[1]))
        if uncond is not None:
            null_mask = self._check_context(uncond[0], uncond[1], B)
            uncond = (uncond[0], null_mask if null_mask is not None else
                      torch.ones(uncond[0].shape[:2], dtype=torch.bool, device=uncond[0].device))
        return self._guided_eps(x_t, t, context, context_mask, guidance_scale, uncond)

    def _guided_eps(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor,
                    guidance_scale: float, uncond: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """:meth:`guided_eps` on checked input (``t`` ``(B,)``, both masks bool)."""
        if guidance_scale == 1:
            return self._eps(x_t, t, context, context_mask)
        null, null_mask = uncond
        if guidance_scale == 0:
            return self._eps(x_t, t, null, null_mask)
        L = max(context.shape[1], null.shape[1])
        context, context_mask = _pad(context, context_mask, L)
        null, null_mask = _pad(null, null_mask, L)
        eps = self._eps(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([context, null]),
                        torch.cat([context_mask, null_mask]))
        eps_cond, eps_uncond = eps.chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    @torch.no_grad()
    def sample(self, input_ids, attention_mask=None, steps: int = 50, sampler: str = "ddim",
               guidance_scale: float = 3.0, eta: float = 0.0, generator: torch.Generator | None = None,
               progress: bool = False, spacing: str = "leading", clip_sample: bool | float = True) -> torch.Tensor:
        """Generate one image per caption, ``(B, C, H, W)`` in ``[-1, 1]``: start from ``N(0, I)`` (drawn from
        ``generator``) and take ``steps`` DDIM (``eta``: 0 = deterministic) or DDPM steps over
        :func:`~vlm_primer.generative.diffusion.inference_timesteps` (``spacing``), each with the guided noise
        prediction at ``guidance_scale``. ``clip_sample`` clips each step's ``x0`` estimate (``True`` = to
        ``[-1, 1]``, as ``diffusers`` does by default). Explained in notebook 04b, §Diffusion."""
        check_choice(sampler, SAMPLERS, "sampler")
        check_finite(guidance_scale, "guidance_scale")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale!r}")
        T = self.cfg.num_train_timesteps
        if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or not 1 <= steps <= T:
            raise ValueError(f"steps must be an int in [1, num_train_timesteps={T}], got {steps!r}")
        timesteps = inference_timesteps(T, int(steps), spacing).tolist()
        check_finite(eta, "eta")
        if not 0 <= eta <= 1:
            raise ValueError(f"eta must lie in [0, 1], got {eta!r}")
        context, mask = self.encode_text(input_ids, attention_mask)
        B, cfg = len(context), self.cfg
        uncond = self.null_context(B, max(2, context.shape[1])) if guidance_scale != 1 else None
        shape = (B, cfg.in_channels, cfg.image_size, cfg.image_size)
        x = torch.randn(shape, generator=generator, device=_gen_device(generator, self.device)).to(self.device)
        for i, t in enumerate(tqdm(timesteps, disable=not progress, desc=f"{sampler} sampling")):
            eps = self._guided_eps(x, torch.full((B,), t, dtype=torch.long, device=self.device), context, mask,
                                   guidance_scale, uncond)
            if sampler == "ddim":
                prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
                x = ddim_step(self.schedule, eps, t, prev_t, x, eta=eta, clip_sample=clip_sample,
                              generator=generator).prev_sample
            else:
                x = ddpm_step(self.schedule, eps, t, x, clip_sample=clip_sample, timesteps=timesteps,
                              generator=generator).prev_sample
        return x


def _gen_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    """Where random numbers are drawn: on the generator's device (a CPU generator draws on the CPU, then the tensor
    moves), as ``diffusers``' ``randn_tensor``."""
    return device if generator is None else generator.device


def _pad(x: torch.Tensor, mask: torch.Tensor, length: int, value: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad ids ``(B, L)`` or states ``(B, L, d)`` and their mask to ``length`` positions (new ones masked out)."""
    extra = length - x.shape[1]
    if extra <= 0:
        return x, mask
    pad = (0, 0, 0, extra) if x.ndim == 3 else (0, extra)
    return F.pad(x, pad, value=value), F.pad(mask, (0, extra), value=False)
