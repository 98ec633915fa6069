"""MaskVLM (Kwon et al. 2023, "Masked Vision and Language Modeling for Multi-modal Representation Learning").

Explained in notebook 03, §MaskVLM. FLAVA predicts the *codes* of a separately pre-trained image tokenizer (DALL-E's
dVAE); MaskVLM masks raw pixels and words and reconstructs **each modality from the other**:

* an image encoder (a ViT whose masked patches become a learned mask token, as in FLAVA) and a text encoder
  (FLAVA's BERT-like one) encode the masked and the unmasked inputs;
* an **image cross-modality encoder** (blocks with cross-attention) reads the *masked image* and attends to the
  *unmasked caption*; a small decoder predicts the pixels of the masked patches (MSE, as MAE);
* a **text cross-modality encoder** reads the *masked caption* and attends to the *unmasked image*; BERT's head
  (tied to the word embeddings) predicts the masked words;
* the unimodal [CLS] tokens are aligned by CLIP's contrastive loss (ITC) and the text cross-modality encoder's
  [CLS] feeds an image-text matching head (ITM) on matched and mismatched pairs.

The loss is ``MIM + MLM + ITC + ITM`` (equal weights, as the paper). Where ours is smaller than the paper: the
paper initialises the encoders from pre-trained ViT-B/16 and RoBERTa and draws ITM negatives from the contrastive
similarities; here everything starts from scratch and the negatives are random other captions
(:func:`~vlm_primer.masking.flava.mismatch_pairs`), and the ``base`` preset's text side has BERT's vocabulary and
ids (30,522 words, ``[MASK]`` 103), not RoBERTa's, so RoBERTa's weights do not load into it. ``transformers`` has
no MaskVLM, so there is no parity test: its pieces (ViT, text encoder, blocks with cross-attention, BERT's head)
are each proven elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.contrastive.losses import clip_loss
from vlm_primer.masking.flava import FLAVA_TEXT, FLAVA_VIT, mismatch_pairs, vit_with_mask_token
from vlm_primer.masking.masks import IGNORE_INDEX, bert_mask_tokens, patchify
from vlm_primer.nn import BertLMHead, TextConfig, TextTransformer, Transformer, ViT, ViTConfig, init_weights
from vlm_primer.validate import check_images, check_mask, check_same_batch, check_tokens

__all__ = ["MaskVLM", "MaskVLMConfig", "MaskVLMOutput"]


@dataclass
class MaskVLMConfig(PresetConfig):
    """The two encoders, the depth of each cross-modality encoder and of the image decoder, the masking rates and
    the contrastive embedding."""

    image: ViTConfig = field(default_factory=lambda: ViTConfig(**MaskVLMConfig.PRESETS["tiny"]["image"]))
    text: TextConfig = field(default_factory=lambda: TextConfig(**MaskVLMConfig.PRESETS["tiny"]["text"]))
    cross_depth: int = 2
    decoder_depth: int = 1
    embed_dim: int = 64
    image_mask_ratio: float = 0.6        # the paper masks 60 % of the patches
    text_mask_prob: float = 0.3          # and 30 % of the words
    norm_pix_loss: bool = False
    init_logit_scale: float = math.log(1 / 0.07)
    mask_token_id: int = 4
    special_token_ids: tuple[int, ...] = (0, 1, 2, 3)

    PRESETS: ClassVar[dict] = {
        "tiny": dict(image=dict(image_size=48, patch_size=6, dim=64, depth=2, heads=4, **FLAVA_VIT),
                     text=dict(vocab_size=814, context_length=32, dim=64, depth=2, heads=4, eos_token_id=3,
                               pad_token_id=0, **FLAVA_TEXT)),
        # ViT-B/16 and a BERT-base-sized text encoder, 3 cross-modality layers each, as the paper
        "base": dict(image=dict(ViTConfig.PRESETS["base"], **FLAVA_VIT),
                     text=dict(vocab_size=30522, context_length=512, dim=768, depth=12, heads=12, eos_token_id=102,
                               pad_token_id=0, **FLAVA_TEXT),
                     cross_depth=3, decoder_depth=2, embed_dim=256, mask_token_id=103,
                     special_token_ids=(0, 100, 101, 102)),
    }
    BOUNDS: ClassVar[dict] = dict(cross_depth=">0", decoder_depth=">0", embed_dim=">0", image_mask_ratio="[0, 1)",
                                  text_mask_prob="[0, 1]", mask_token_id=">=0")

    def validate(self) -> None:
        self.coerce_parts(image=ViTConfig, text=TextConfig)
        self.image.check_whole_patches("MaskVLM")
        if not self.image.cls_token or self.text.causal or self.text.pool != "cls":
            raise ValueError("MaskVLM reads [CLS] tokens: the ViT needs cls_token=True and the text encoder must be "
                             "bidirectional with pool='cls'")
        if self.mask_token_id >= self.text.vocab_size:
            raise ValueError(f"mask_token_id={self.mask_token_id} is outside the vocabulary [0, {self.text.vocab_size})")


@dataclass
class MaskVLMOutput:
    loss: torch.Tensor
    mim: torch.Tensor               # MSE on the masked patches, reconstructed with the caption's help
    mlm: torch.Tensor               # cross-entropy on the masked words, predicted with the image's help
    itc: torch.Tensor
    itm: torch.Tensor
    pixels: torch.Tensor            # (B, N, p*p*C) predicted pixels of every patch
    patch_mask: torch.Tensor        # (B, N) bool, True = hidden
    mlm_logits: torch.Tensor        # (B, L, vocab)
    mlm_labels: torch.Tensor        # (B, L), IGNORE_INDEX where nothing was masked
    itm_logits: torch.Tensor        # (B, 2) on the pairs ``itm_labels`` describes (1 = match)
    itm_labels: torch.Tensor


class MaskVLM(nn.Module):
    """MaskVLM: joint masked vision and language modelling. Explained in notebook 03, §MaskVLM."""

    def __init__(self, cfg: MaskVLMConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else MaskVLMConfig()
        self.cfg = cfg
        icfg, tcfg = cfg.image, cfg.text
        self.image = ViT(icfg)
        self.mask_token = nn.Parameter(torch.randn(icfg.dim) * 0.02)
        self.text = TextTransformer(tcfg)
        self.image_cross = Transformer(cfg.cross_depth, icfg.dim, icfg.heads, icfg.mlp_ratio, cross_attn=True,
                                       context_dim=tcfg.dim, act=icfg.act, eps=icfg.eps)
        self.text_cross = Transformer(cfg.cross_depth, tcfg.dim, tcfg.heads, tcfg.mlp_ratio, cross_attn=True,
                                      context_dim=icfg.dim, act=tcfg.act, eps=tcfg.eps)
        self.image_decoder = Transformer(cfg.decoder_depth, icfg.dim, icfg.heads, icfg.mlp_ratio, act=icfg.act,
                                         eps=icfg.eps)
        self.decoder_norm = nn.LayerNorm(icfg.dim, eps=icfg.eps)
        self.decoder_pred = nn.Linear(icfg.dim, icfg.patch_size**2 * icfg.channels)
        self.mlm_head = BertLMHead(self.text.tok_emb, tcfg.act, tcfg.eps)
        self.itm_head = nn.Linear(tcfg.dim, 2)
        self.image_proj = nn.Linear(icfg.dim, cfg.embed_dim)
        self.text_proj = nn.Linear(tcfg.dim, cfg.embed_dim)
        for module in (self.image_cross, self.text_cross, self.image_decoder, self.decoder_pred, self.mlm_head.dense,
                       self.itm_head, self.image_proj, self.text_proj):
            module.apply(init_weights)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))

    # ------------------------------------------------------------------ encoders

    def encode_image_tokens(self, pixel_values: torch.Tensor, masked: torch.Tensor | None = None) -> torch.Tensor:
        """The image encoder's normalised tokens ``(B, 1 + N, dim)``; patches where ``masked`` is true are hidden."""
        return self.image.norm(vit_with_mask_token(self.image, self.mask_token, pixel_values, masked))

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Contrastive image embeddings ``(B, embed_dim)``, L2-normalised."""
        return F.normalize(self.image_proj(self.encode_image_tokens(pixel_values)[:, 0]), dim=-1)

    def encode_text(self, input_ids: Any, attention_mask: Any = None) -> torch.Tensor:
        """Contrastive caption embeddings ``(B, embed_dim)``, L2-normalised."""
        return F.normalize(self.text_proj(self.text(input_ids, attention_mask).pooled), dim=-1)

    def itm_scores(self, pixel_values: torch.Tensor, input_ids: Any, attention_mask: Any = None) -> torch.Tensor:
        """P(match) of each (image ``i``, caption ``i``) pair ``(B,)`` from the text cross-modality encoder."""
        image = self.encode_image_tokens(pixel_values)
        text = self.text(input_ids, attention_mask)
        shape = tuple(text.last_hidden_state.shape[:2])
        mask = None if attention_mask is None else check_mask(attention_mask, shape=shape, device=image.device)
        h, _ = self.text_cross(text.last_hidden_state, context=image, key_padding_mask=mask)
        return self.itm_head(h[:, 0]).softmax(-1)[:, 1]

    # ------------------------------------------------------------------ pre-training

    def forward(self, pixel_values: torch.Tensor, input_ids: Any, attention_mask: Any = None, *,
                generator: torch.Generator | None = None, patch_mask: torch.Tensor | None = None) -> MaskVLMOutput:
        """One pre-training step on pairs (image ``i`` with caption ``i``): masks ``image_mask_ratio`` of the
        patches (or ``patch_mask`` ``(B, N)``) and ``text_mask_prob`` of the words (BERT's 80/10/10), then the four
        losses. ``generator`` makes the masks and the ITM negatives reproducible."""
        cfg, device = self.cfg, self.logit_scale.device
        check_images(pixel_values, channels=cfg.image.channels, size=cfg.image.image_size, name="pixel_values",
                     device=device)
        ids = check_tokens(input_ids, max_len=cfg.text.context_length, vocab_size=cfg.text.vocab_size, device=device)
        batch = check_same_batch(pixel_values=pixel_values, input_ids=ids)
        if batch < 2:
            raise ValueError("MaskVLM's contrastive and matching losses need a batch of at least 2 pairs")
        mask = None if attention_mask is None else check_mask(attention_mask, shape=tuple(ids.shape), device=device)
        n = cfg.image.num_patches
        if patch_mask is None:
            noise = torch.rand(batch, n, generator=generator).to(device)
            patch_mask = noise.argsort(1).argsort(1) >= int(n * (1 - cfg.image_mask_ratio))
        elif patch_mask.shape != (batch, n) or patch_mask.dtype != torch.bool:
            raise ValueError(f"patch_mask must be a bool tensor ({batch}, {n}), got {patch_mask.dtype} "
                             f"{tuple(patch_mask.shape)}")
        ids_masked, mlm_labels = bert_mask_tokens(ids, mask_token_id=cfg.mask_token_id,
                                                  vocab_size=cfg.text.vocab_size, prob=cfg.text_mask_prob,
                                                  special_ids=cfg.special_token_ids, generator=generator)
        if mask is not None:
            mlm_labels = mlm_labels.masked_fill(~mask, IGNORE_INDEX)

        image = self.encode_image_tokens(pixel_values)                # unmasked
        image_m = self.encode_image_tokens(pixel_values, patch_mask.to(device))
        text = self.text(ids, mask).last_hidden_state
        text_m = self.text(ids_masked, mask).last_hidden_state

        # MIM: the masked image, attending to the whole caption, predicts its hidden pixels
        h, _ = self.image_cross(image_m, context=text, context_mask=mask)
        h, _ = self.image_decoder(h)
        pixels = self.decoder_pred(self.decoder_norm(h))[:, 1:]
        target = patchify(pixel_values.to(pixels.dtype), cfg.image.patch_size)
        if cfg.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
        hidden = patch_mask.to(device)  # the mean over the hidden patches (0 if none), with no value read back
        mim = ((pixels - target).pow(2).mean(-1) * hidden).sum() / hidden.sum().clamp(min=1)

        # MLM: the masked caption, attending to the whole image, predicts its hidden words
        h, _ = self.text_cross(text_m, context=image, key_padding_mask=mask)
        mlm_logits = self.mlm_head(h)
        n_picked = (mlm_labels != IGNORE_INDEX).sum()  # the mean over the picked words (0 if none)
        mlm = F.cross_entropy(mlm_logits.flatten(0, 1), mlm_labels.flatten(), ignore_index=IGNORE_INDEX,
                              reduction="sum") / n_picked.clamp(min=1)

        # ITC on the unimodal [CLS] tokens; ITM on true and mismatched pairs
        img_emb = F.normalize(self.image_proj(image[:, 0]), dim=-1)
        txt_emb = F.normalize(self.text_proj(text[:, 0]), dim=-1)
        itc = clip_loss(self.logit_scale.exp() * img_emb @ txt_emb.t())
        index, itm_labels = mismatch_pairs(batch, generator=generator)
        index, itm_labels = index.to(device), itm_labels.to(device)
        h, _ = self.text_cross(text[index], context=image, key_padding_mask=None if mask is None else mask[index])
        itm_logits = self.itm_head(h[:, 0])
        itm = F.cross_entropy(itm_logits, itm_labels)
        return MaskVLMOutput(loss=mim + mlm + itc + itm, mim=mim, mlm=mlm, itc=itc, itm=itm, pixels=pixels,
                             patch_mask=patch_mask, mlm_logits=mlm_logits, mlm_labels=mlm_labels,
                             itm_logits=itm_logits, itm_labels=itm_labels)

    @torch.no_grad()
    def post_step(self) -> None:
        """Clamp ``logit_scale`` to ``[0, log 100]`` (the inverse temperature at most 100), as CLIP."""
        self.logit_scale.clamp_(0.0, math.log(100))
