"""Llip (Lavoie et al., 2024): contrastive pretraining with text-conditioned image representations.

Explained in notebook 02, §Llip. Survey §2.2: there are many ways to caption one image, and CLIP
squeezes all of them onto a single image vector. Llip instead lets the vision tower output ``K``
learnable *mixture tokens* (extra tokens appended to the ViT input and read out at its output,
like register tokens), and builds the image representation *for a given caption* by
cross-attention: the caption's text embedding is the query, the ``K`` visual mixture tokens are the
keys and values. Different captions thus select different mixtures of the same visual features.

Training scores every image against every caption of the batch. The conditioning is pairwise, so
an image has a different embedding for each caption: ``(B_img, B_txt, D)`` contextualised
embeddings, computed in one batched attention call (the texts play the role of the query sequence,
shared by all images). Logits are ``t * cos(z_ij, y_j) + b`` and the loss is SigLIP's pairwise
sigmoid (the paper's choice) or CLIP's InfoNCE (``loss="infonce"``).

The query is the L2-normalised text embedding, so a zero-shot classifier row (a normalised mean of
prompt embeddings, :func:`vlm_primer.evaluation.build_classifier`) is a valid query too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.contrastive.clip import SHAPES_SMALL, SHAPES_TEXT, check_pair_batch
from vlm_primer.contrastive.losses import all_gather_with_grad, clip_loss, siglip_loss
from vlm_primer.nn import Attention, TextConfig, TextTransformer, ViT, ViTConfig
from vlm_primer.validate import check_choice, check_images

__all__ = ["Llip", "LlipConfig", "LlipOutput"]

# The image tower has no CLS token and no pooling of its own: the mixture tokens are its output.
_LLIP_VISION = dict(cls_token=False, pool="none", final_norm_on="tokens")


@dataclass
class LlipConfig(PresetConfig):
    """Llip = ViT with ``num_mixture_tokens`` extra outputs + text tower + text-conditioned pooling."""

    vision: ViTConfig = field(default_factory=lambda: ViTConfig(**ViTConfig.PRESETS["tiny"], **_LLIP_VISION))
    text: TextConfig = field(default_factory=lambda: TextConfig(**TextConfig.PRESETS["tiny"], **SHAPES_TEXT))
    embed_dim: int = 64
    num_mixture_tokens: int = 8      # K (the paper: 32 for ViT-B/16, 64 for ViT-G/14)
    heads: int = 4                   # heads of the text-to-mixture cross-attention
    temperature: float = 1.0         # softmax temperature of that attention (scores / (tau * sqrt(d)))
    loss: str = "sigmoid"            # sigmoid (SigLIP, the paper) | infonce (CLIP)
    init_logit_scale: float | None = None  # default: log 10 for sigmoid, log(1/0.07) for infonce
    init_logit_bias: float = -10.0   # sigmoid only
    max_logit_scale: float = math.log(100)

    PRESETS: ClassVar[dict] = {
        "tiny": dict(vision=dict(ViTConfig.PRESETS["tiny"], **_LLIP_VISION),
                     text=dict(TextConfig.PRESETS["tiny"], **SHAPES_TEXT),
                     embed_dim=64, num_mixture_tokens=8, heads=4),
        "small": dict(vision=dict(ViTConfig.PRESETS["small"], **_LLIP_VISION, **SHAPES_SMALL),
                      text=dict(TextConfig.PRESETS["small"], **SHAPES_TEXT),
                      embed_dim=256, num_mixture_tokens=16, heads=8),
        # ViT-B/16 with 32 mixture tokens (the paper's B/16 model)
        "base": dict(vision=dict(ViTConfig.PRESETS["clip_b16"], **_LLIP_VISION),
                     text=dict(TextConfig.PRESETS["clip"]), embed_dim=512, num_mixture_tokens=32, heads=8),
    }

    BOUNDS: ClassVar[dict] = dict(embed_dim=">0", num_mixture_tokens=">0", heads=">0", temperature=">0",
                                  max_logit_scale=">=0")

    def validate(self) -> None:
        self.coerce_parts(vision=ViTConfig, text=TextConfig)
        check_choice(self.loss, ("sigmoid", "infonce"), "loss")
        if self.vision.cls_token or self.vision.pool != "none" or self.vision.final_norm_on != "tokens":
            raise ValueError("Llip's vision tower reads out its mixture tokens: use cls_token=False, pool='none', "
                             "final_norm_on='tokens'")
        if self.num_mixture_tokens < 1:
            raise ValueError(f"num_mixture_tokens must be >= 1, got {self.num_mixture_tokens}")
        if self.embed_dim % self.heads:
            raise ValueError(f"embed_dim={self.embed_dim} is not divisible by heads={self.heads}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.init_logit_scale is None:
            self.init_logit_scale = math.log(10.0) if self.loss == "sigmoid" else math.log(1 / 0.07)


@dataclass
class LlipOutput:
    loss: torch.Tensor | None
    logits_per_image: torch.Tensor          # (B_img, B_txt): t * cos(z_ij, y_j) [+ b]
    logits_per_text: torch.Tensor           # (B_txt, B_img)
    mixture_tokens: torch.Tensor            # (B_img, K, vision.dim): the image features
    text_embeds: torch.Tensor               # (B_txt, embed_dim), L2-normalised


class Llip(nn.Module):
    """Llip: the image embedding is a text-conditioned mixture of K visual tokens.

    Explained in notebook 02, §Llip. ``encode_image`` returns the mixture tokens ``(B, K, dim)``;
    :meth:`contextualize` turns them and a set of text embeddings into per-pair image embeddings;
    :meth:`similarity` gives the ``(B_img, B_txt)`` cosine matrix that zero-shot classification and
    retrieval use.
    """

    def __init__(self, cfg: LlipConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else LlipConfig()
        self.cfg = cfg
        d = cfg.vision.dim
        self.vision = ViT(cfg.vision)
        self.mixture_tokens = nn.Parameter(torch.randn(cfg.num_mixture_tokens, d) * d**-0.5)
        self.text = TextTransformer(cfg.text)
        self.text_projection = nn.Linear(cfg.text.dim, cfg.embed_dim, bias=False)
        nn.init.normal_(self.text_projection.weight, std=cfg.text.dim**-0.5)
        # Query from the text embedding, keys/values from the mixture tokens, output in embed_dim.
        self.mixer = Attention(cfg.embed_dim, cfg.heads, kv_dim=d)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.init_logit_bias))) if cfg.loss == "sigmoid" else None

    # ------------------------------------------------------------------ towers

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> the K visual mixture tokens ``(B, K, vision.dim)``."""
        vit, k = self.vision, self.cfg.num_mixture_tokens
        check_images(pixel_values, channels=vit.cfg.channels, size=vit.cfg.image_size, name="pixel_values",
                     device=vit.patch_embed.weight.device)
        x = vit.embed(pixel_values, extra=repeat(self.mixture_tokens, "k d -> b k d", b=pixel_values.shape[0]))
        x, _ = vit.transformer(x)
        x = vit.norm(x) if vit.norm is not None else x
        return x[:, -k:]

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        """Token ids ``(B, L)`` -> text embeddings ``(B, embed_dim)`` (targets and queries)."""
        y = self.text_projection(self.text(input_ids, attention_mask).pooled)
        return F.normalize(y, dim=-1) if normalize else y

    # ------------------------------------------------------------------ text-conditioned pooling

    def contextualize(self, mixture_tokens: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Image embedding of every image for every caption: ``(B_img, B_txt, embed_dim)``, unnormalised.

        ``z_ij = out( sum_k softmax_k(q(y_j) . k(s_ik) / (tau sqrt(d))) v(s_ik) )`` per head, with
        ``s_ik`` the mixture tokens of image ``i`` and ``y_j`` the (normalised) text embedding of
        caption ``j``. All pairs in one ``scaled_dot_product_attention`` call: the captions form the
        query sequence, broadcast over the images.
        """
        if mixture_tokens.ndim != 3 or mixture_tokens.shape[1:] != (self.cfg.num_mixture_tokens, self.cfg.vision.dim):
            raise ValueError(f"mixture_tokens must be (B_img, {self.cfg.num_mixture_tokens}, {self.cfg.vision.dim}), "
                             f"got {tuple(mixture_tokens.shape)}")
        if text_embeds.ndim != 2 or text_embeds.shape[1] != self.cfg.embed_dim:
            raise ValueError(f"text_embeds must be (B_txt, {self.cfg.embed_dim}), got {tuple(text_embeds.shape)}")
        m, h = self.mixer, self.cfg.heads
        q = rearrange(m.q(F.normalize(text_embeds, dim=-1)), "t (h d) -> h t d", h=h)
        k = rearrange(m.k(mixture_tokens), "i n (h d) -> i h n d", h=h)
        v = rearrange(m.v(mixture_tokens), "i n (h d) -> i h n d", h=h)
        q = q.unsqueeze(0).expand(k.shape[0], -1, -1, -1)  # (B_img, h, B_txt, d): a view, no copy
        scale = 1.0 / (self.cfg.temperature * math.sqrt(q.shape[-1]))
        z = F.scaled_dot_product_attention(q, k, v, scale=scale)  # (B_img, h, B_txt, d)
        return m.out(rearrange(z, "i h t d -> i t (h d)"))

    def attention(self, mixture_tokens: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """The weights of :meth:`contextualize`'s attention, ``(B_img, heads, B_txt, K)``: how much caption
        ``j`` draws on each of image ``i``'s mixture tokens (written out; ``contextualize`` fuses it)."""
        m, h = self.mixer, self.cfg.heads
        q = rearrange(m.q(F.normalize(text_embeds, dim=-1)), "t (h d) -> h t d", h=h)
        k = rearrange(m.k(mixture_tokens), "i n (h d) -> i h n d", h=h)
        scores = torch.einsum("htd,ihnd->ihtn", q, k) / (self.cfg.temperature * math.sqrt(q.shape[-1]))
        return scores.softmax(dim=-1)

    def similarity(self, mixture_tokens: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Cosine ``(B_img, B_txt)`` between each image's caption-conditioned embedding and the caption."""
        z = F.normalize(self.contextualize(mixture_tokens, text_embeds), dim=-1)
        return torch.einsum("itd,td->it", z, F.normalize(text_embeds, dim=-1).to(z.dtype))

    def logits(self, mixture_tokens: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        logits = self.logit_scale.exp() * self.similarity(mixture_tokens, text_embeds)
        return logits + self.logit_bias if self.logit_bias is not None else logits

    # ------------------------------------------------------------------ training

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        return_loss: bool = True,
    ) -> LlipOutput:
        pixel_values, input_ids, attention_mask = check_pair_batch(self, pixel_values, input_ids, attention_mask)
        mix = self.encode_image(pixel_values)
        text = self.encode_text(input_ids, attention_mask)
        logits = self.logits(mix, text)
        loss = self._loss(mix, text, logits) if return_loss else None
        return LlipOutput(loss, logits, logits.t(), mix, text)

    def _loss(self, mix: torch.Tensor, text: torch.Tensor, local_logits: torch.Tensor) -> torch.Tensor:
        """Loss over the global batch; same rank convention as :mod:`vlm_primer.contrastive.losses`."""
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if world == 1:
            return siglip_loss(local_logits) if self.cfg.loss == "sigmoid" else clip_loss(local_logits)
        rank, b = dist.get_rank(), mix.shape[0]
        labels = torch.arange(b, device=mix.device) + rank * b
        all_text = all_gather_with_grad(text)
        rows = self.logits(mix, all_text)  # local images x all captions
        if self.cfg.loss == "sigmoid":
            positive = labels[:, None] == torch.arange(all_text.shape[0], device=mix.device)[None, :]
            return siglip_loss(rows, positive)
        cols = self.logits(all_gather_with_grad(mix), text).t()  # local captions x all images
        return 0.5 * (F.cross_entropy(rows, labels) + F.cross_entropy(cols, labels))

    @torch.no_grad()
    def post_step(self) -> None:
        """Clamp ``logit_scale`` to ``[0, max_logit_scale]``."""
        self.logit_scale.clamp_(0.0, self.cfg.max_logit_scale)
