"""Flamingo: a frozen LM reads images through gated cross-attention layers inserted between its blocks.

Explained in notebook 05b, §Flamingo (Alayrac et al. 2022, §2; survey §2.5). Where LLaVA and BLIP-2 put image
tokens *into* the LM's input, Flamingo leaves the input as text (with an ``<image>`` marker where each image
was) and lets the text look at the images from inside:

* a vision tower encodes each image; a :class:`~vlm_primer.backbones.resamplers.PerceiverResampler` turns its
  tokens into ``num_latents`` visual tokens;
* before every ``cross_every``-th LM block sits a :class:`GatedCrossAttentionLayer`: text queries attend to the
  visual tokens, then a feed-forward layer, each added through a ``tanh(alpha)`` gate that starts at 0, so at
  initialisation the model *is* the frozen LM, exactly;
* **media masking** (:func:`media_mask`): each text token sees only the latest image before it (none before the
  first image, none after an end-of-text until the next image), which is what makes interleaved sequences and
  few-shot prompts ``<image> caption <eos> <image> caption <eos> <image>`` work.

Weight for weight the same as ``transformers``' ``IdeficsForVisionText2Text`` (IDEFICS, the open
reproduction of Flamingo; :mod:`vlm_primer.interop.idefics`). As in IDEFICS, the gated layers sit before blocks
``0, n, 2n, ...`` (OpenFlamingo puts them before ``n-1, 2n-1, ...``; the count is the same). Unlike OpenFlamingo and
IDEFICS, :meth:`Flamingo.set_stage` leaves the token embeddings frozen with the LM, ``<image>`` and ``<eos>``
included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from einops import rearrange
from torch import nn

from vlm_primer.backbones.llava import _CLIP_TOWER, IMAGE_TOKEN_ID, check_image_token, with_context
from vlm_primer.backbones.resamplers import PerceiverResampler
from vlm_primer.config import PresetConfig
from vlm_primer.nn import (MLP, Attention, DecoderConfig, DecoderLM, DecoderOutput, RMSNorm, ViT, ViTConfig,
                           causal_lm_items)
from vlm_primer.validate import check_choice, check_images, check_tokens

__all__ = ["Flamingo", "FlamingoConfig", "GatedCrossAttentionLayer", "media_mask"]


@dataclass
class FlamingoConfig(PresetConfig):
    """Flamingo's parts: ``vision`` (a CLIP-layout tower), ``text`` (a Llama-style LM) and the new layers:
    the perceiver (``perceiver_*``, ``num_latents``; ``use_perceiver=False`` feeds the tower's tokens directly)
    and a gated cross-attention layer before LM blocks ``0, cross_every, 2 cross_every, ...``; ``alpha_type``:
    one gate per layer (``float``) or one per channel (``vector``)."""

    vision: ViTConfig = field(default_factory=lambda: ViTConfig(**FlamingoConfig.PRESETS["tiny"]["vision"]))
    text: DecoderConfig = field(default_factory=lambda: DecoderConfig(**FlamingoConfig.PRESETS["tiny"]["text"]))
    use_perceiver: bool = True
    num_latents: int = 64
    perceiver_depth: int = 6
    perceiver_heads: int = 16
    perceiver_dim_head: int = 96
    perceiver_qk_norm: bool = False
    cross_every: int = 4
    xattn_qk_norm: bool = False
    alpha_type: str = "float"
    image_token_id: int = IMAGE_TOKEN_ID

    PRESETS: ClassVar[dict] = {
        # Shapes World: the zoo's 48 px CLIP tower and Llama-style LM, 8 visual tokens per image.
        "tiny": dict(vision=dict(image_size=48, patch_size=6, dim=64, depth=2, heads=4, **_CLIP_TOWER),
                     text=dict(DecoderConfig.PRESETS["llama_tiny"], vocab_size=814, context_length=256,
                               bos_token_id=2, eos_token_id=3, pad_token_id=0),
                     num_latents=8, perceiver_depth=2, perceiver_heads=4, perceiver_dim_head=16, cross_every=2),
        # IDEFICS-9B's shapes: CLIP ViT-H/14, a Llama-7B LM, 64 latents, a gated layer before every 4th block.
        "base": dict(vision=dict(image_size=224, patch_size=14, dim=1280, depth=32, heads=16, mlp_dim=5120,
                                 **_CLIP_TOWER),
                     text=dict(DecoderConfig.PRESETS["llama_7b"], vocab_size=32001), image_token_id=32000),
    }
    BOUNDS: ClassVar[dict] = dict(num_latents=">0", perceiver_depth=">0", perceiver_heads=">0",
                                  perceiver_dim_head=">0", cross_every=">0", image_token_id=">=0")

    def validate(self) -> None:
        self.coerce_parts(vision=ViTConfig, text=DecoderConfig)
        check_choice(self.alpha_type, ("float", "vector"), "FlamingoConfig.alpha_type")
        if self.text.depth % self.cross_every:
            raise ValueError(f"FlamingoConfig.cross_every={self.cross_every} must divide the LM's depth "
                             f"({self.text.depth}): one gated layer before every cross_every-th block")
        check_image_token(self)

    @property
    def visual_tokens(self) -> int:
        """Visual tokens each image gives the cross-attention."""
        return self.num_latents if self.use_perceiver else self.vision.num_patches + int(self.vision.cls_token)


def media_mask(input_ids: Any, image_token_id: int, num_images: int, eos_token_id: int | None = None) -> torch.Tensor:
    """Which image each token may look at, ``(B, T, num_images)`` bool, at most one True per row: the latest
    ``<image>`` at or before the token (the ``i``-th ``<image>`` of a row is image ``i``); none before the first
    image, none after an ``eos_token_id`` until the next ``<image>``, none for images past ``num_images``.
    The semantics of ``transformers``' IDEFICS processor (``image_attention_mask_for_packed_input_ids``)."""
    ids = torch.as_tensor(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {tuple(ids.shape)}")
    pos = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    is_image = ids == image_token_id
    index = is_image.long().cumsum(1) - 1                                  # latest image so far, -1 before any
    last_image = torch.where(is_image, pos, -1).cummax(1).values
    if eos_token_id is not None:                                           # an eos strictly before the token,
        eos_before = torch.where(ids == eos_token_id, pos, -1).cummax(1).values  # after the latest image
        eos_before = torch.cat([torch.full_like(eos_before[:, :1], -1), eos_before[:, :-1]], dim=1)
        index = index.masked_fill(eos_before > last_image, -1)
    return (index[..., None] == torch.arange(num_images, device=ids.device)) & (index[..., None] >= 0)


def _rows(mask: torch.Tensor, length: int) -> torch.Tensor:
    """The media mask's rows for the last ``length`` tokens; tokens past its end (generated ones) keep the
    last row's image."""
    have = mask.shape[1]
    if have >= length:
        return mask[:, have - length:]
    return torch.cat([mask, mask[:, -1:].expand(-1, length - have, -1)], dim=1)


class GatedCrossAttentionLayer(nn.Module):
    """Flamingo's GATED XATTN-DENSE layer: ``x += tanh(alpha_xattn) * xattn(RMSNorm(x), media)`` (rows of tokens
    that see no image are zero), then ``x += tanh(alpha_mlp) * SwiGLU(RMSNorm(x))``. Both alphas start at 0."""

    def __init__(self, cfg: FlamingoConfig) -> None:
        super().__init__()
        t = cfg.text
        self.ln_xattn = RMSNorm(t.dim, t.eps)
        self.xattn = Attention(t.dim, t.heads, t.dim_head, kv_dim=cfg.vision.dim, qkv_bias=False, out_bias=False,
                               qk_norm="rmsnorm" if cfg.xattn_qk_norm else None, qk_eps=t.eps)
        self.ln_mlp = RMSNorm(t.dim, t.eps)
        self.mlp = MLP(t.dim, t.mlp_dim or int(t.dim * t.mlp_ratio), act="swiglu", bias=False)
        shape = (1,) if cfg.alpha_type == "float" else (1, 1, t.dim)
        self.alpha_xattn = nn.Parameter(torch.zeros(shape))
        self.alpha_mlp = nn.Parameter(torch.zeros(shape))
        self.drop = nn.Dropout(t.dropout)

    def forward(self, x: torch.Tensor, media: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        """``media`` ``(B, M, vision_dim)``: every image's visual tokens; ``mask`` ``(B, T', M)`` bool: which of
        them each token sees (see :func:`_rows` for ``T' != T``). Without media only the feed-forward acts."""
        if media is not None:
            mask = _rows(mask, x.shape[1])
            h = self.xattn(self.ln_xattn(x), context=media, attn_mask=mask)
            h = self.drop(h).masked_fill(~mask.any(-1, keepdim=True), 0.0)
            x = x + torch.tanh(self.alpha_xattn) * h
        return x + torch.tanh(self.alpha_mlp) * self.drop(self.mlp(self.ln_mlp(x)))


class Flamingo(nn.Module):
    """Vision tower -> perceiver -> gated cross-attention into a decoder LM. Explained in notebook 05b,
    §Flamingo. ``pixel_values`` ``(B, N, 3, H, W)``: the ``N`` images of each sequence, in the order of their
    ``<image>`` markers; ``image_attention_mask`` ``(B, T, N)`` defaults to :func:`media_mask` of the ids."""

    def __init__(self, cfg: FlamingoConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision_tower = ViT(cfg.vision)
        self.perceiver = (PerceiverResampler(cfg.vision.dim, cfg.perceiver_depth, cfg.num_latents,
                                             cfg.perceiver_heads, cfg.perceiver_dim_head, cfg.perceiver_qk_norm)
                          if cfg.use_perceiver else None)
        self.language_model = DecoderLM(cfg.text)
        for i in range(0, cfg.text.depth, cfg.cross_every):
            self.language_model.transformer.inserted[str(i)] = GatedCrossAttentionLayer(cfg)

    @classmethod
    def from_parts(cls, vision_tower: ViT, language_model: DecoderLM, *, context_length: int | None = None,
                   **cfg_fields: Any) -> "Flamingo":
        """A Flamingo around pretrained parts (the zoo's tower and ``lm-tiny``); perceiver and gated layers are
        new, the gates at 0. ``context_length`` lengthens a RoPE LM's context."""
        model = cls(FlamingoConfig(vision=vision_tower.cfg, text=with_context(language_model.cfg, context_length),
                                   **cfg_fields))
        model.vision_tower.load_state_dict(vision_tower.state_dict())
        missing, unexpected = model.language_model.load_state_dict(language_model.state_dict(), strict=False)
        if unexpected or any(".inserted." not in k for k in missing):
            raise ValueError(f"the language model's weights do not fit: missing {missing}, unexpected {unexpected}")
        return model

    @property
    def tokens_per_image(self) -> int:
        """Positions each image takes in the LM's input: its one ``<image>`` marker (the visual tokens enter
        through the cross-attention, not the input)."""
        return 1

    @property
    def gated_layers(self) -> list[GatedCrossAttentionLayer]:
        return list(self.language_model.transformer.inserted.values())

    def media(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images ``(B, N, 3, H, W)`` -> their visual tokens side by side, ``(B, N * visual_tokens, dim)``."""
        if pixel_values.ndim == 4:
            pixel_values = pixel_values[:, None]
        if pixel_values.ndim != 5:
            raise ValueError(f"pixel_values must be (B, N, 3, H, W) (N images per sequence), got "
                             f"{tuple(pixel_values.shape)}")
        b = pixel_values.shape[0]
        frames = pixel_values.flatten(0, 1)
        check_images(frames, channels=self.cfg.vision.channels, size=self.cfg.vision.image_size,
                     name="pixel_values", device=self.vision_tower.patch_embed.weight.device)
        tokens = self.vision_tower(frames).last_hidden_state
        if self.perceiver is not None:
            tokens = self.perceiver(tokens)
        return rearrange(tokens, "(b n) s d -> b (n s) d", b=b)

    def _inputs(self, input_ids: Any, pixel_values: Any, image_attention_mask: Any) -> dict[str, Any]:
        """The LM's ``context`` (visual tokens) and ``context_mask`` (which of them each token sees)."""
        if pixel_values is None:
            return {}
        media = self.media(torch.as_tensor(pixel_values))
        n = media.shape[1] // self.cfg.visual_tokens
        if image_attention_mask is None:
            image_attention_mask = media_mask(input_ids, self.cfg.image_token_id, n, self.cfg.text.eos_token_id)
        mask = torch.as_tensor(image_attention_mask, device=media.device).bool()
        t = torch.as_tensor(input_ids).shape[1]
        if mask.ndim != 3 or mask.shape[0] != media.shape[0] or mask.shape[2] != n or mask.shape[1] > t:
            raise ValueError(f"image_attention_mask must be (B, T, N) = ({media.shape[0]}, {t}, {n}) (one column per "
                             f"image), got {tuple(mask.shape)}")
        return dict(context=media, context_mask=mask.repeat_interleave(self.cfg.visual_tokens, dim=2))

    def forward(self, input_ids: Any, pixel_values: Any = None, image_attention_mask: Any = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **kwargs: Any) -> DecoderOutput:
        """Logits over the text (and with ``labels`` the next-token loss); images enter only through the gated
        layers. Without ``pixel_values`` only the gated feed-forwards act (exactly the LM while the gates are 0)."""
        ids = check_tokens(input_ids, vocab_size=self.cfg.text.vocab_size,
                           device=self.language_model.tok_emb.weight.device)
        return self.language_model(ids, attention_mask=attention_mask, labels=labels,
                                   **self._inputs(ids, pixel_values, image_attention_mask), **kwargs)

    def loss_items(self, batch: dict[str, Any]) -> int:
        """The text targets the loss of ``batch`` averages over (:func:`~vlm_primer.nn.causal_lm_items`), for the
        ``Trainer``'s gradient accumulation."""
        return causal_lm_items(batch.get("labels"))

    @torch.no_grad()
    def generate(self, input_ids: Any, pixel_values: Any = None, max_new_tokens: int = 20, *,
                 image_attention_mask: Any = None, image_sizes: Any = None, **kwargs: Any) -> torch.Tensor:
        """The new token ids ``(B, T)`` after the prompt, as :meth:`Llava.generate` (greedy by default; see
        ``DecoderLM.generate``). The images are encoded once; new tokens look at the image the prompt's last
        token looks at."""
        if image_sizes is not None:
            raise ValueError("image_sizes is for LLaVA-NeXT's tiled images; Flamingo takes square images")
        ids = check_tokens(input_ids, vocab_size=self.cfg.text.vocab_size,
                           device=self.language_model.tok_emb.weight.device)
        out = self.language_model.generate(ids, max_new_tokens,
                                           **self._inputs(ids, pixel_values, image_attention_mask), **kwargs)
        return out[:, ids.shape[1]:]

    def set_stage(self, stage: int = 2, train_vision: bool = False, train_language: bool = False) -> int:
        """Flamingo's one training stage (``stage`` 2, named as LLaVA's for the shared training loop): tower and LM
        frozen, the perceiver and the gated layers learn. Returns the number of trainable parameters."""
        if stage != 2:
            raise ValueError(f"Flamingo trains in one stage (2: perceiver and gated layers), got stage {stage!r}")
        self.vision_tower.requires_grad_(train_vision)
        self.language_model.requires_grad_(train_language)
        for layer in self.gated_layers:
            layer.requires_grad_(True)
        if self.perceiver is not None:
            self.perceiver.requires_grad_(True)
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
