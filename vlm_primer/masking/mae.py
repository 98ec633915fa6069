"""MAE, the masked auto-encoder (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners").

Explained in notebook 03, §MAE. Hide most patches (75 %), encode only the visible ones with a ViT, then a small
decoder sees the encoded patches plus a shared learned ``mask_token`` at every hidden position (each with its own
fixed 2-D sin-cos position) and predicts the pixels of every patch. The loss is the mean squared error on the
*hidden* patches only, against each patch's pixels normalised by its own mean and variance (``norm_pix_loss``).
The encoder never sees a mask token, so at 75 % masking it processes a quarter of the tokens: that is why MAE is
cheap to pre-train, and why after pre-training the encoder alone (all patches, no masking) is the feature extractor.

Weight for weight ``transformers``' ``ViTMAEForPreTraining`` (:mod:`vlm_primer.interop.mae`): same noise, same
mask, same logits, same loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from einops import repeat
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.masking.masks import patchify, random_masking
from vlm_primer.nn import Transformer, ViT, ViTConfig, sincos_2d
from vlm_primer.validate import check_images

__all__ = ["MAE", "MAEConfig", "MAEOutput", "MAE_VIT"]

# MAE's encoder: a ViT with a [CLS] token and fixed 2-D sin-cos positions, every output token normalised, no pooling.
MAE_VIT = dict(cls_token=True, pos_emb="sincos", pool="none", final_norm_on="tokens")


@dataclass
class MAEConfig(PresetConfig):
    """The encoder (a :class:`~vlm_primer.nn.ViTConfig`), the decoder's width, depth and heads, the mask ratio and
    the loss' per-patch normalisation."""

    encoder: ViTConfig = field(default_factory=lambda: ViTConfig(**MAEConfig.PRESETS["tiny"]["encoder"]))
    decoder_dim: int = 32
    decoder_depth: int = 2
    decoder_heads: int = 4
    decoder_mlp_dim: int | None = None   # default 4 x decoder_dim
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True

    PRESETS: ClassVar[dict] = {
        # Shapes World at chapter 02's size: 48 px, 6 px patches (64 of them), a 4-block encoder, a 2-block decoder.
        "tiny": dict(encoder=dict(ViTConfig.PRESETS["tiny"], image_size=48, patch_size=6, **MAE_VIT),
                     decoder_dim=32, decoder_depth=2, decoder_heads=4),
        "small": dict(encoder=dict(ViTConfig.PRESETS["small"], **MAE_VIT), decoder_dim=256, decoder_depth=4,
                      decoder_heads=8),
        # The paper's ViT-B/16 (LayerNorm eps 1e-6) with its 8-block, 512-wide decoder, 75 % masking.
        "base": dict(encoder=dict(ViTConfig.PRESETS["base"], **MAE_VIT), decoder_dim=512, decoder_depth=8,
                     decoder_heads=16),
    }
    BOUNDS: ClassVar[dict] = dict(decoder_dim=">0", decoder_depth=">0", decoder_heads=">0", decoder_mlp_dim=">0",
                                  mask_ratio="[0, 1)")

    def validate(self) -> None:
        self.coerce_parts(encoder=ViTConfig)
        enc = self.encoder
        enc.check_whole_patches("MAE")
        if not enc.cls_token or enc.pos_emb != "sincos" or enc.pool != "none" or enc.final_norm_on != "tokens":
            raise ValueError(f"MAE's encoder is a ViT with {MAE_VIT}; got cls_token={enc.cls_token}, "
                             f"pos_emb={enc.pos_emb!r}, pool={enc.pool!r}, final_norm_on={enc.final_norm_on!r}")
        if self.decoder_dim % self.decoder_heads or self.decoder_dim % 4:
            raise ValueError(f"decoder_dim={self.decoder_dim} must be divisible by decoder_heads="
                             f"{self.decoder_heads} and by 4 (2-D sin-cos positions)")
        if self.mask_ratio == 0:
            raise ValueError("mask_ratio=0 hides no patch: MAE's loss, a mean over the hidden patches, would have "
                             "nothing to average (to encode unmasked images, call encode(pixels, mask_ratio=0.0))")
        if int(enc.num_patches * (1 - self.mask_ratio)) < 1:
            raise ValueError(f"mask_ratio={self.mask_ratio} keeps no patch out of {enc.num_patches}")


def _xavier(module: nn.Module) -> None:
    """MAE's initialisation (its reference code): Xavier-uniform linear weights, zero biases. On our tiny models it
    also leaves the predict-the-mean plateau sooner than the 0.02-normal init of the other ViTs."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


@dataclass
class MAEOutput:
    loss: torch.Tensor            # MSE on the hidden patches
    logits: torch.Tensor          # (B, N, p*p*C): predicted pixels of every patch (normalised if norm_pix_loss)
    mask: torch.Tensor            # (B, N), 1 = hidden
    ids_restore: torch.Tensor     # (B, N)
    target: torch.Tensor          # (B, N, p*p*C): what the loss compares the logits with
    latent: torch.Tensor          # (B, 1 + n_keep, dim): the encoder's output ([CLS] first)


class MAE(nn.Module):
    """Masked auto-encoder: :meth:`encode` (visible patches only), :meth:`decode` (all positions), the loss in
    :meth:`forward`; :meth:`features` runs the encoder on whole images for probing. Explained in notebook 03, §MAE."""

    def __init__(self, cfg: MAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        enc, d = cfg.encoder, cfg.decoder_dim
        self.encoder = ViT(enc)
        self.decoder_embed = nn.Linear(enc.dim, d)
        self.mask_token = nn.Parameter(torch.randn(d) * 0.02)
        self.register_buffer("decoder_pos", sincos_2d(enc.grid, enc.grid, d, cls_token=True), persistent=False)
        self.decoder = Transformer(cfg.decoder_depth, d, cfg.decoder_heads, act=enc.act, eps=enc.eps,
                                   qkv_bias=enc.qkv_bias, mlp_dim=cfg.decoder_mlp_dim)
        self.decoder_norm = nn.LayerNorm(d, eps=enc.eps)
        self.decoder_pred = nn.Linear(d, enc.patch_size**2 * enc.channels)
        self.apply(_xavier)
        w = self.encoder.patch_embed.weight  # the patch projection initialised as the linear layer it is
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    def _check(self, pixel_values: torch.Tensor) -> None:
        enc = self.cfg.encoder
        check_images(pixel_values, channels=enc.channels, size=enc.image_size, name="pixel_values",
                     device=self.decoder_pred.weight.device)

    def encode(self, pixel_values: torch.Tensor, mask_ratio: float | None = None, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None):
        """Patch-embed, add positions, keep ``1 - mask_ratio`` of the patches (by ``noise``), prepend [CLS], run the
        ViT blocks and the final norm. Returns ``(latent, mask, ids_restore)``."""
        vit = self.encoder
        x = vit.patch_embed(pixel_values.to(vit.patch_embed.weight.dtype)).flatten(2).transpose(1, 2)
        x = x + vit.pos_emb[1:].to(x.dtype)
        ratio = self.cfg.mask_ratio if mask_ratio is None else mask_ratio
        masked = random_masking(x, ratio, noise=noise, generator=generator)
        cls = repeat(vit.cls + vit.pos_emb[0].to(x.dtype), "d -> b 1 d", b=x.shape[0])
        x, _ = vit.transformer(torch.cat([cls, masked.kept], dim=1))
        return vit.norm(x), masked.mask, masked.ids_restore

    def decode(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Encoded visible patches -> predicted pixels of every patch ``(B, N, p*p*C)``: mask tokens fill the hidden
        positions, the shuffle is undone, the decoder's own sin-cos positions are added."""
        x = self.decoder_embed(latent)
        b, n_vis, d = x.shape
        n = ids_restore.shape[1]
        tokens = torch.cat([x[:, 1:], repeat(self.mask_token, "d -> b m d", b=b, m=n + 1 - n_vis)], dim=1)
        tokens = torch.gather(tokens, 1, repeat(ids_restore, "b n -> b n d", d=d))  # back to patch order
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos.to(x.dtype)
        x, _ = self.decoder(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def target(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Per-patch pixels, normalised per patch (mean 0, variance 1) when ``norm_pix_loss``."""
        target = patchify(pixel_values, self.cfg.encoder.patch_size)
        if self.cfg.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
        return target

    def forward(self, pixel_values: torch.Tensor, mask_ratio: float | None = None, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> MAEOutput:
        """``pixel_values`` ``(B, C, H, W)``; ``noise`` ``(B, N)`` fixes the mask (as in ``transformers``), else it
        is drawn from ``generator``; ``mask_ratio`` overrides the config's."""
        self._check(pixel_values)
        latent, mask, ids_restore = self.encode(pixel_values, mask_ratio, noise, generator)
        logits = self.decode(latent, ids_restore)
        target = self.target(pixel_values)
        per_patch = (logits - target).pow(2).mean(-1)
        loss = (per_patch * mask).sum() / mask.sum()
        return MAEOutput(loss=loss, logits=logits, mask=mask, ids_restore=ids_restore, target=target, latent=latent)

    @torch.no_grad()
    def reconstruct(self, pixel_values: torch.Tensor, out: MAEOutput) -> torch.Tensor:
        """The predicted image in pixel space: with ``norm_pix_loss`` the prediction is un-normalised with each true
        patch's mean and variance (what MAE's figures show); visible patches are predictions too."""
        from vlm_primer.masking.masks import unpatchify

        pred = out.logits
        if self.cfg.norm_pix_loss:
            patches = patchify(pixel_values, self.cfg.encoder.patch_size)
            pred = pred * (patches.var(-1, keepdim=True) + 1e-6) ** 0.5 + patches.mean(-1, keepdim=True)
        return unpatchify(pred, self.cfg.encoder.patch_size, self.cfg.encoder.channels)

    def features(self, pixel_values: torch.Tensor, pool: str = "mean") -> torch.Tensor:
        """The encoder on whole images (no masking): ``mean`` of the patch tokens (the paper's linear-probe feature
        uses [CLS]; on small data the mean is steadier) or ``cls``, ``(B, dim)``."""
        self._check(pixel_values)
        x = self.encoder(pixel_values).last_hidden_state
        if pool not in ("mean", "cls"):
            raise ValueError(f"pool must be 'mean' or 'cls', got {pool!r}")
        return x[:, 1:].mean(1) if pool == "mean" else x[:, 0]
