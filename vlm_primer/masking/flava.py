"""FLAVA (Singh et al. 2022, "FLAVA: A Foundational Language And Vision Alignment Model"; survey §2.3).

One model for images, text and pairs, built from **three encoders**:

* an **image encoder**, a ViT (:class:`~vlm_primer.nn.ViT`) whose masked patches are replaced by a learned
  ``mask_token`` (BEiT-style: the masked image keeps its length, unlike MAE's);
* a **text encoder**, BERT-like: :class:`~vlm_primer.nn.TextTransformer` with token types and a LayerNorm on the
  embeddings, bidirectional, the same text encoder as masked language modelling's. Explained in notebook 03, §MLM.
* a **multimodal encoder** over both: each unimodal encoder's last hidden states (before their final LayerNorm)
  go through a linear map (``image_to_mm``, ``text_to_mm``), are concatenated behind a CLS token of its own and
  read by more pre-LN transformer blocks (early fusion on top of late fusion).

And **five objectives**, one weighted sum (every weight 1.0 by default, as in ``transformers``' ``FlavaConfig``):

* unimodal **MIM** (masked image modelling): on an image-only batch, predict the image tokenizer's codebook id of
  every masked patch (FLAVA uses DALL-E's dVAE, 8192 codes; here the model just takes ``mim_labels``);
* unimodal **MLM** (masked language modelling): on a text-only batch, predict the masked words;
* multimodal **MMM** (masked multimodal modelling): on a batch of pairs, predict both the masked patches' codes
  (``mmm_image``) and the masked words (``mmm_text``) from the multimodal encoder;
* **ITM** (image-text matching): a two-way head on the multimodal CLS token, match or not;
* **global contrastive**: CLIP's symmetric InfoNCE between the projected, L2-normalised CLS tokens of the
  *unmasked* image and text encoders, with a learned temperature.

Which losses run depends on what the batch holds, exactly as in ``transformers``' ``FlavaForPreTraining``: images
only -> MIM; text only -> MLM; pairs -> ITM, MMM and the contrastive loss (*not* MIM and MLM). With ``itm_labels``
(1 = the caption belongs to the image, 0 = a mismatched pair) the MMM and contrastive losses keep only the positive
pairs (all pairs if there is none), so the model never learns to reconstruct or align a wrong caption.

Where ours differs from ``transformers`` (``tests/test_parity_flava.py`` checks every number that is the same):

* the per-objective losses in :class:`FlavaOutput` are *unweighted*; ``loss`` is their weighted sum
  (``transformers``' ``loss_info`` holds them already multiplied by their weights; its ``loss`` is the same sum);
* logits are returned only where a loss reads them, at the labelled positions, shape ``(n, vocab)``;
  without labels a head is not run (``transformers`` then runs it over every position). The heads are modules,
  so ``model.mlm_head(out.text_masked_hidden)`` gives the full map;
* ``multimodal_masked_hidden``, ``logits_per_image`` and ``logits_per_text`` cover every pair of the batch;
  ``positive`` says which pairs the multimodal and contrastive losses used (``transformers`` returns those rows
  only);
* ``itm_labels`` pick the positive pairs whenever they are given (``transformers`` does so only while
  ``itm_weight > 0``);
* a masked-prediction loss with no labelled position is 0 (``transformers`` returns NaN, the mean of nothing);
* inputs are never modified (``transformers`` writes -100 into the caller's ``mim_labels`` in place);
* the log inverse temperature ``logit_scale`` is clamped to ``[0, log 100]`` by :meth:`Flava.post_step` after each
  optimizer step, like our CLIP (``transformers`` clamps to ``[0, 4.6052]`` inside ``forward`` while training);
* the MMM heads are as wide as the multimodal encoder and use its activation and LayerNorm epsilon
  (``transformers`` builds them from the image and text configs, which must then have the same width);
* when nothing is masked (no ``bool_masked_pos``, no ``input_ids_masked``) the unmasked encodings are reused
  instead of being computed a second time; the unmasked multimodal encoder is never run (``transformers``' default,
  ``skip_unmasked_multimodal_encoder=True``);
* not supported: ``position_ids``, ``image_attention_mask``, positional-encoding interpolation; the image
  tokenizer itself (``transformers``' ``FlavaImageCodebook``, DALL-E's dVAE) is a separate model: pass
  ``mim_labels``. Dropout (0 in FLAVA) sits only inside the transformer blocks.

Explained in notebook 03, §FLAVA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.contrastive.losses import all_gather_with_grad
from vlm_primer.masking.masks import IGNORE_INDEX, bert_mask_tokens, block_mask
from vlm_primer.nn import BertLMHead, TextConfig, TextTransformer, Transformer, ViT, ViTConfig, init_weights
from vlm_primer.validate import (as_tensor, check_images, check_labels, check_mask, check_mlp_width,
                                 check_same_batch, check_tokens)

__all__ = ["FLAVA_TEXT", "FLAVA_VIT", "LOSSES", "Flava", "FlavaConfig", "FlavaEncoderOutput", "FlavaMultimodalConfig",
           "FlavaOutput", "ITMHead", "MultimodalEncoder", "Pooler", "contrastive_logits",
           "global_contrastive_loss", "masked_prediction", "mismatch_pairs", "positive_pairs", "vit_with_mask_token"]

# FLAVA's image encoder (timm's ViT layout, as transformers' FlavaImageModel): CLS token, learned positions, no
# ln_pre, a LayerNorm on every output token.
FLAVA_VIT = dict(cls_token=True, pool="cls", pos_emb="learned", pre_norm=False, final_norm=True,
                 final_norm_on="tokens", patch_bias=True, eps=1e-12)
# FLAVA's text encoder: BERT's embeddings (word + token type + position, then LayerNorm), bidirectional pre-LN
# blocks, a final LayerNorm; [CLS] first.
FLAVA_TEXT = dict(causal=False, pool="cls", type_vocab_size=2, embed_norm=True, eps=1e-12)
LOSSES = ("mim", "mlm", "mmm_image", "mmm_text", "itm", "global_contrastive")
# The project's tokenizer (vlm_primer.text): <pad>=0, <unk>=1, <bos>=2 plays [CLS], <eos>=3, <mask>=4.
_SHAPES_TEXT = dict(vocab_size=814, eos_token_id=3, pad_token_id=0)


@dataclass
class FlavaMultimodalConfig(PresetConfig):
    """The multimodal encoder's shape (``transformers``' ``FlavaMultimodalConfig``)."""

    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    mlp_dim: int | None = None
    act: str = "gelu"
    eps: float = 1e-12
    qkv_bias: bool = True
    dropout: float = 0.0

    PRESETS: ClassVar[dict] = {"tiny": dict(dim=64, depth=2, heads=4), "small": dict(dim=256, depth=4, heads=4),
                               "base": dict(dim=768, depth=6, heads=12)}
    BOUNDS: ClassVar[dict] = dict(dim=">0", depth=">0", heads=">0", mlp_ratio="(0, 64]", mlp_dim=">0", eps=">0",
                                  dropout="[0, 1)")

    def validate(self) -> None:
        check_mlp_width(self)
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")


@dataclass
class FlavaConfig(PresetConfig):
    """FLAVA's three encoders (configs or dicts of their fields), the image tokenizer's vocabulary, the contrastive
    embedding, the loss weights, and what the masking helpers use (:meth:`Flava.mask_text`,
    :meth:`Flava.mask_patches`)."""

    image: ViTConfig = field(default_factory=lambda: ViTConfig(**FlavaConfig.PRESETS["tiny"]["image"]))
    text: TextConfig = field(default_factory=lambda: TextConfig(**FlavaConfig.PRESETS["tiny"]["text"]))
    multimodal: FlavaMultimodalConfig = field(default_factory=lambda: FlavaMultimodalConfig.from_preset("tiny"))
    codebook_size: int = 64              # the image tokenizer's vocabulary (DALL-E's dVAE: 8192)
    embed_dim: int = 64                  # the contrastive embedding (transformers' projection_dim)
    init_logit_scale: float = math.log(1 / 0.07)
    max_logit_scale: float = math.log(100)
    mim_weight: float = 1.0
    mlm_weight: float = 1.0
    global_contrastive_weight: float = 1.0
    itm_weight: float = 1.0
    mmm_image_weight: float = 1.0
    mmm_text_weight: float = 1.0
    mask_token_id: int = 4               # <mask> (BERT's [MASK] is 103)
    special_token_ids: tuple[int, ...] = (0, 1, 2, 3)  # never masked: <pad> <unk> <bos> <eos>
    mlm_prob: float = 0.15               # BERT's share of masked words
    mim_ratio: float = 0.4               # share of masked patches: 79 of 196 (FLAVA's processor: 75, BEiT's blocks)

    PRESETS: ClassVar[dict] = {
        # Shapes World at 48 px: 6 px patches (an 8 x 8 grid), the project's 814-token vocabulary, 64 image codes
        "tiny": dict(image=dict(image_size=48, patch_size=6, dim=64, depth=3, heads=4, **FLAVA_VIT),
                     text=dict(context_length=32, dim=64, depth=2, heads=4, **_SHAPES_TEXT, **FLAVA_TEXT),
                     multimodal=FlavaMultimodalConfig.PRESETS["tiny"], codebook_size=64, embed_dim=64),
        "small": dict(image=dict(image_size=64, patch_size=8, dim=256, depth=6, heads=4, **FLAVA_VIT),
                      text=dict(context_length=64, dim=256, depth=6, heads=4, **_SHAPES_TEXT, **FLAVA_TEXT),
                      multimodal=FlavaMultimodalConfig.PRESETS["small"], codebook_size=256, embed_dim=256),
        # The paper's FLAVA (transformers' FlavaConfig defaults): ViT-B/16, BERT-base text, a 6-layer multimodal
        # encoder, DALL-E's 8192 codes, BERT's uncased vocabulary ([PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102).
        "base": dict(image=dict(ViTConfig.PRESETS["base"], **FLAVA_VIT),
                     text=dict(vocab_size=30522, context_length=512, dim=768, depth=12, heads=12, eos_token_id=102,
                               pad_token_id=0, **FLAVA_TEXT),
                     multimodal=FlavaMultimodalConfig.PRESETS["base"], codebook_size=8192, embed_dim=768,
                     mask_token_id=103, special_token_ids=(0, 100, 101, 102)),
    }
    BOUNDS: ClassVar[dict] = dict(codebook_size=">0", embed_dim=">0", max_logit_scale=">=0", mim_weight=">=0",
                                  mlm_weight=">=0", global_contrastive_weight=">=0", itm_weight=">=0",
                                  mmm_image_weight=">=0", mmm_text_weight=">=0", mask_token_id=">=0",
                                  mlm_prob="[0, 1]", mim_ratio="[0, 1)")

    def validate(self) -> None:
        self.coerce_parts(image=ViTConfig, text=TextConfig, multimodal=FlavaMultimodalConfig)
        if not self.image.cls_token or self.image.final_norm_on != "tokens" or not self.image.final_norm:
            raise ValueError("FLAVA's image encoder needs cls_token=True and a final LayerNorm on every token "
                             "(final_norm=True, final_norm_on='tokens'): the contrastive loss reads its CLS token")
        if self.text.causal:
            raise ValueError("FLAVA's text encoder is bidirectional (text.causal=False): masked words are "
                             "predicted from both sides")
        if self.mask_token_id >= self.text.vocab_size:
            raise ValueError(f"mask_token_id={self.mask_token_id} is outside the text vocabulary "
                             f"[0, {self.text.vocab_size})")
        if not self.init_logit_scale <= self.max_logit_scale:
            raise ValueError(f"init_logit_scale={self.init_logit_scale} must be <= max_logit_scale="
                             f"{self.max_logit_scale}")


# --------------------------------------------------------------------------- small modules


@dataclass
class FlavaEncoderOutput:
    last_hidden_state: torch.Tensor   # (B, T, dim) after the final LayerNorm (transformers' *_embeddings)
    pooled: torch.Tensor              # (B, dim) BERT's pooler on the first token
    pre_norm: torch.Tensor            # (B, T, dim) the last block's output before the final LayerNorm


class Pooler(nn.Module):
    """BERT's pooler: ``tanh(dense(first token))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class ITMHead(nn.Module):
    """Image-text matching: a pooler on the multimodal CLS token, then two logits (0 = no match, 1 = match)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pooler = Pooler(dim)
        self.classifier = nn.Linear(dim, 2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooler(hidden))


class MultimodalEncoder(nn.Module):
    """Early fusion: ``[CLS_mm, image_to_mm(image states), text_to_mm(text states)]`` through pre-LN blocks, then a
    LayerNorm (and a pooler, unused by the losses). Padded text positions are masked as attention keys."""

    def __init__(self, cfg: FlavaMultimodalConfig, image_dim: int, text_dim: int) -> None:
        super().__init__()
        self.image_to_mm = nn.Linear(image_dim, cfg.dim)
        self.text_to_mm = nn.Linear(text_dim, cfg.dim)
        self.cls = nn.Parameter(torch.randn(cfg.dim) * 0.02)
        self.transformer = Transformer(cfg.depth, cfg.dim, cfg.heads, cfg.mlp_ratio, act=cfg.act, eps=cfg.eps,
                                       qkv_bias=cfg.qkv_bias, mlp_dim=cfg.mlp_dim, dropout=cfg.dropout)
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.pooler = Pooler(cfg.dim)

    def forward(self, image_states: torch.Tensor, text_states: torch.Tensor,
                text_mask: torch.Tensor | None = None) -> FlavaEncoderOutput:
        """``image_states`` ``(B, 1 + N, image_dim)``, ``text_states`` ``(B, L, text_dim)``, ``text_mask`` ``(B, L)``
        bool (True = real token) -> ``(B, 1 + 1 + N + L, dim)``: CLS_mm, image CLS, patches, text."""
        x = torch.cat([self.image_to_mm(image_states), self.text_to_mm(text_states)], dim=1)
        x = torch.cat([repeat(self.cls, "d -> b 1 d", b=x.shape[0]), x], dim=1)
        mask = None
        if text_mask is not None:  # CLS_mm and the image tokens are always real
            ones = torch.ones(x.shape[0], 1 + image_states.shape[1], dtype=torch.bool, device=x.device)
            mask = torch.cat([ones, text_mask.bool()], dim=1)
        h, _ = self.transformer(x, key_padding_mask=mask)
        out = self.norm(h)
        return FlavaEncoderOutput(last_hidden_state=out, pooled=self.pooler(out), pre_norm=h)


# --------------------------------------------------------------------------- losses, each small


def masked_prediction(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """MIM, MLM and both MMM losses: run ``head`` on the positions of ``hidden`` ``(B, T, D)`` whose ``labels``
    ``(B, T)`` are not :data:`IGNORE_INDEX`; returns ``(logits (n, vocab), cross-entropy)``, the loss 0 when
    nothing is labelled."""
    picked = labels != IGNORE_INDEX
    logits = head(hidden[picked])
    targets = labels[picked]
    loss = F.cross_entropy(logits, targets) if len(targets) else logits.sum() * 0.0
    return logits, loss


def positive_pairs(itm_labels: torch.Tensor) -> torch.Tensor:
    """The pairs MMM and the contrastive loss learn from: those labelled 1, or every pair if none is."""
    positive = itm_labels != 0
    return positive | ~positive.any()


def contrastive_logits(image_embeds: torch.Tensor, text_embeds: torch.Tensor, scale: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits_per_image, logits_per_text, labels)`` for L2-normalised ``(B, D)`` embeddings and the inverse
    temperature ``scale`` (``exp(logit_scale)``). Under ``torch.distributed`` each rank scores its rows against
    every rank's columns (gathered with gradient, :func:`~vlm_primer.contrastive.losses.all_gather_with_grad`),
    ``(B, W*B)``."""
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    all_images, all_texts = all_gather_with_grad(image_embeds), all_gather_with_grad(text_embeds)
    labels = torch.arange(len(image_embeds), device=image_embeds.device) + rank * len(image_embeds)
    return scale * image_embeds @ all_texts.t(), scale * text_embeds @ all_images.t(), labels


def global_contrastive_loss(logits_per_image: torch.Tensor, logits_per_text: torch.Tensor, labels: torch.Tensor,
                            keep: torch.Tensor | None = None) -> torch.Tensor:
    """FLAVA's global contrastive loss: the mean of the image->text and text->image cross-entropies over the rows
    ``keep`` (default all). With all rows on one process it is CLIP's
    :func:`~vlm_primer.contrastive.clip_loss` (notebook 02, §InfoNCE); mismatched pairs drop out as rows (their
    captions stay as negatives in the columns)."""
    if keep is not None:
        logits_per_image, logits_per_text, labels = logits_per_image[keep], logits_per_text[keep], labels[keep]
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def mismatch_pairs(batch_size: int, prob: float = 0.5, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Negatives for ITM: ``(index, itm_labels)``; row ``i`` keeps its caption (``index[i] = i``, label 1) or, with
    probability ``prob``, takes another row's caption (label 0). Use as ``input_ids[index]``. Rows whose captions
    happen to be identical still count as negatives: filter them if the data repeat captions."""
    if not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"mismatch_pairs needs a batch of at least 2 pairs, got batch_size={batch_size!r}")
    if not 0 <= prob <= 1:
        raise ValueError(f"prob must lie in [0, 1], got {prob!r}")
    swap = torch.rand(batch_size, generator=generator) < prob
    shift = torch.randint(1, batch_size, (batch_size,), generator=generator)  # another row, never the same one
    index = torch.where(swap, (torch.arange(batch_size) + shift) % batch_size, torch.arange(batch_size))
    return index, (~swap).long()


# --------------------------------------------------------------------------- the model


@dataclass
class FlavaOutput:
    """What :meth:`Flava.forward` computed (``None`` where the batch did not call for it)."""

    loss: torch.Tensor | None                        # the weighted sum of the losses below
    mim: torch.Tensor | None                         # unweighted losses
    mlm: torch.Tensor | None
    mmm_image: torch.Tensor | None
    mmm_text: torch.Tensor | None
    itm: torch.Tensor | None
    global_contrastive: torch.Tensor | None
    image_hidden: torch.Tensor | None                # (B, 1 + N, d) unmasked image encoder, after its LayerNorm
    text_hidden: torch.Tensor | None                 # (B, L, d) unmasked text encoder
    image_masked_hidden: torch.Tensor | None         # the same with the masked patches / words
    text_masked_hidden: torch.Tensor | None
    multimodal_masked_hidden: torch.Tensor | None    # (B, 2 + N + L, d_mm), every pair
    image_embeds: torch.Tensor | None                # (B, embed_dim) L2-normalised, for the contrastive loss
    text_embeds: torch.Tensor | None
    mim_logits: torch.Tensor | None                  # (n, codebook_size) at the masked patches
    mlm_logits: torch.Tensor | None                  # (n, vocab_size) at the labelled words
    mmm_image_logits: torch.Tensor | None
    mmm_text_logits: torch.Tensor | None
    itm_logits: torch.Tensor | None                  # (B, 2), every pair
    logits_per_image: torch.Tensor | None            # (B, B) scale * cosine, every pair
    logits_per_text: torch.Tensor | None
    positive: torch.Tensor | None                    # (B,) bool: the pairs MMM and the contrastive loss used


def vit_with_mask_token(vit: ViT, mask_token: torch.Tensor, pixel_values: torch.Tensor,
                        masked: torch.Tensor | None = None) -> torch.Tensor:
    """BEiT-style masked image modelling's encoder: patch-embed, replace the patches where ``masked`` ``(B, N)`` is
    true by ``mask_token``, prepend [CLS], add positions, run ``vit``'s blocks. Returns the last block's output
    ``(B, 1 + N, dim)`` before the final LayerNorm (the image keeps its length, unlike MAE's). Shared by FLAVA and
    MaskVLM."""
    x = rearrange(vit.patch_embed(pixel_values.to(mask_token.dtype)), "b d h w -> b (h w) d")
    if masked is not None:
        x = torch.where(masked[..., None], mask_token.to(x.dtype), x)
    x = torch.cat([repeat(vit.cls, "d -> b 1 d", b=len(x)), x], dim=1) + vit.pos_emb.to(x.dtype)
    return vit.transformer(x)[0]


def _masked_lm_head(vocab: int, dim: int, act: str, eps: float) -> BertLMHead:
    """BERT's prediction head with an output table of its own: FLAVA does not tie its heads to any embedding."""
    return BertLMHead(nn.Embedding(vocab, dim), act=act, eps=eps)


class Flava(nn.Module):
    """FLAVA: image, text and multimodal encoders with MIM, MLM, MMM, ITM and global contrastive heads.

    Explained in notebook 03, §FLAVA. ``encode_image`` / ``encode_text`` give the contrastive embeddings (so the
    zero-shot and retrieval tools of :mod:`vlm_primer.evaluation` work); ``image_features``, ``text_features`` and
    ``multimodal_features`` give each encoder's token states for probing.
    """

    def __init__(self, cfg: FlavaConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else FlavaConfig()
        self.cfg = cfg
        icfg, tcfg, mcfg = cfg.image, cfg.text, cfg.multimodal
        self.image = ViT(icfg)
        self.mask_token = nn.Parameter(torch.randn(icfg.dim) * 0.02)
        self.image_pooler = Pooler(icfg.dim)
        self.text = TextTransformer(tcfg)
        self.text_pooler = Pooler(tcfg.dim)
        self.multimodal = MultimodalEncoder(mcfg, icfg.dim, tcfg.dim)
        self.image_projection = nn.Linear(icfg.dim, cfg.embed_dim)
        self.text_projection = nn.Linear(tcfg.dim, cfg.embed_dim)
        self.mim_head = _masked_lm_head(cfg.codebook_size, icfg.dim, icfg.act, icfg.eps)
        self.mlm_head = _masked_lm_head(tcfg.vocab_size, tcfg.dim, tcfg.act, tcfg.eps)
        self.mmm_image_head = _masked_lm_head(cfg.codebook_size, mcfg.dim, mcfg.act, mcfg.eps)
        self.mmm_text_head = _masked_lm_head(tcfg.vocab_size, mcfg.dim, mcfg.act, mcfg.eps)
        self.itm_head = ITMHead(mcfg.dim)
        for module in (self.image_pooler, self.text_pooler, self.multimodal, self.image_projection,
                       self.text_projection, self.mim_head, self.mlm_head, self.mmm_image_head, self.mmm_text_head,
                       self.itm_head):
            module.apply(init_weights)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))

    # ---------------------------------------------------------------- the three encoders

    def image_features(self, pixel_values: torch.Tensor, bool_masked_pos: Any = None) -> FlavaEncoderOutput:
        """Images ``(B, C, H, W)`` -> the image encoder's tokens ``(B, 1 + N, dim)`` (CLS first). Patches where
        ``bool_masked_pos`` ``(B, N)`` (or ``(B, grid, grid)``) is true are replaced by ``mask_token`` before the
        positions are added."""
        cfg = self.cfg.image
        check_images(pixel_values, channels=cfg.channels, size=cfg.image_size, name="pixel_values",
                     device=self.mask_token.device)
        masked = None if bool_masked_pos is None else self._check_patch_mask(bool_masked_pos, len(pixel_values))
        h = vit_with_mask_token(self.image, self.mask_token, pixel_values, masked)
        out = self.image.norm(h)
        return FlavaEncoderOutput(last_hidden_state=out, pooled=self.image_pooler(out), pre_norm=h)

    def text_features(self, input_ids: Any, attention_mask: Any = None,
                      token_type_ids: Any = None) -> FlavaEncoderOutput:
        """Token ids ``(B, L)`` (``[CLS]``/``<bos>`` first) -> the text encoder's tokens ``(B, L, dim)``."""
        out = self.text(input_ids, attention_mask, output_hidden_states=True, token_type_ids=token_type_ids)
        return FlavaEncoderOutput(last_hidden_state=out.last_hidden_state,
                                  pooled=self.text_pooler(out.last_hidden_state), pre_norm=out.hidden_states[-1])

    def multimodal_features(self, image: FlavaEncoderOutput, text: FlavaEncoderOutput,
                            attention_mask: Any = None) -> FlavaEncoderOutput:
        """The multimodal encoder over the outputs of :meth:`image_features` and :meth:`text_features` (it reads
        their states before the final LayerNorm); ``attention_mask`` is the text's."""
        check_same_batch(image=image.pre_norm, text=text.pre_norm)
        if attention_mask is not None:
            attention_mask = check_mask(attention_mask, shape=tuple(text.pre_norm.shape[:2]),
                                        device=text.pre_norm.device)
        return self.multimodal(image.pre_norm, text.pre_norm, attention_mask)

    # ---------------------------------------------------------------- contrastive embeddings

    def _project(self, projection: nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
        return F.normalize(projection(hidden[:, 0]), dim=-1)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images -> contrastive embeddings ``(B, embed_dim)``, L2-normalised (the projected CLS token)."""
        return self._project(self.image_projection, self.image_features(pixel_values).last_hidden_state)

    def encode_text(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None) -> torch.Tensor:
        """Captions -> contrastive embeddings ``(B, embed_dim)``, L2-normalised (the projected ``[CLS]`` token)."""
        hidden = self.text_features(input_ids, attention_mask, token_type_ids).last_hidden_state
        return self._project(self.text_projection, hidden)

    @torch.no_grad()
    def itm_scores(self, pixel_values: torch.Tensor, input_ids: Any, attention_mask: Any = None) -> torch.Tensor:
        """P(match) of each (image ``i``, caption ``i``) pair ``(B,)``: the ITM head on the multimodal encoder."""
        image, text = self.image_features(pixel_values), self.text_features(input_ids, attention_mask)
        mm = self.multimodal_features(image, text, attention_mask)
        return self.itm_head(mm.last_hidden_state).softmax(-1)[:, 1]

    # ---------------------------------------------------------------- masking helpers

    def mask_text(self, input_ids: Any, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT's 80/10/10 corruption of ``cfg.mlm_prob`` of the words: ``(input_ids_masked, mlm_labels)``
        (:func:`~vlm_primer.masking.bert_mask_tokens`). Explained in notebook 03, §MLM."""
        cfg = self.cfg
        return bert_mask_tokens(input_ids, mask_token_id=cfg.mask_token_id, vocab_size=cfg.text.vocab_size,
                                prob=cfg.mlm_prob, special_ids=cfg.special_token_ids, generator=generator)

    def mask_patches(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """BEiT's blockwise mask hiding ``cfg.mim_ratio`` of the patches: ``bool_masked_pos`` ``(batch, N)``."""
        return block_mask(batch, self.cfg.image.grid, self.cfg.mim_ratio, generator=generator)

    # ---------------------------------------------------------------- pre-training

    def forward(self, pixel_values: torch.Tensor | None = None, input_ids: Any = None, attention_mask: Any = None,
                *, input_ids_masked: Any = None, bool_masked_pos: Any = None, mim_labels: Any = None,
                mlm_labels: Any = None, itm_labels: Any = None, token_type_ids: Any = None) -> FlavaOutput:
        """FLAVA's pre-training step on images, text, or pairs (image ``i`` with caption ``i``).

        ``input_ids`` ``(B, L)`` are the unmasked captions (the contrastive loss reads them), ``input_ids_masked``
        the corrupted ones with ``mlm_labels`` (:meth:`mask_text`); ``bool_masked_pos`` ``(B, N)`` the hidden
        patches with ``mim_labels`` ``(B, N)``, the image tokenizer's code of every patch (only the masked ones are
        predicted); ``itm_labels`` ``(B,)`` 1 for a true pair, 0 for a mismatched one (:func:`mismatch_pairs`).
        Which losses run depends on what is given: see the module docstring.
        """
        cfg = self.cfg
        batch = self._check_inputs(pixel_values, input_ids, input_ids_masked, bool_masked_pos, mlm_labels, itm_labels)
        device = self.logit_scale.device
        if bool_masked_pos is not None:
            bool_masked_pos = self._check_patch_mask(bool_masked_pos, batch)
        mask = None
        text_ids = input_ids if input_ids is not None else input_ids_masked
        if text_ids is not None:
            text_ids = check_tokens(text_ids, max_len=cfg.text.context_length, device=device)
            if attention_mask is not None:
                mask = check_mask(attention_mask, shape=tuple(text_ids.shape), device=device)

        # unmasked encoders (the contrastive loss); masked ones (MIM, MLM, and the multimodal encoder)
        image = self.image_features(pixel_values) if pixel_values is not None else None
        text = self.text_features(input_ids, mask, token_type_ids) if input_ids is not None else None
        image_m = image if bool_masked_pos is None else self.image_features(pixel_values, bool_masked_pos)
        text_m = text if input_ids_masked is None else self.text_features(input_ids_masked, mask, token_type_ids)
        mm = None if image_m is None or text_m is None else self.multimodal(image_m.pre_norm, text_m.pre_norm, mask)

        if mim_labels is not None:  # labels only where the patch is hidden
            mim_labels = self._check_mim_labels(mim_labels, bool_masked_pos, batch)
        if mlm_labels is not None:
            mlm_labels = check_labels(mlm_labels, shape=tuple(text_ids.shape), vocab_size=cfg.text.vocab_size,
                                      name="mlm_labels", device=device)
        losses: dict[str, torch.Tensor] = {}
        logits: dict[str, torch.Tensor] = {}
        positive = itm_logits = None
        if mm is None:  # a unimodal batch: MIM on images, MLM on text
            if image_m is not None and mim_labels is not None and cfg.mim_weight > 0:
                logits["mim"], losses["mim"] = masked_prediction(self.mim_head, image_m.last_hidden_state[:, 1:],
                                                                 mim_labels)
            if text_m is not None and mlm_labels is not None and cfg.mlm_weight > 0:
                logits["mlm"], losses["mlm"] = masked_prediction(self.mlm_head, text_m.last_hidden_state, mlm_labels)
        else:  # pairs: ITM on every pair, MMM on the positive ones
            hidden = mm.last_hidden_state
            if cfg.itm_weight > 0:
                itm_logits = self.itm_head(hidden)
            if itm_labels is not None:
                itm_labels = as_tensor(itm_labels, "itm_labels", "a (B,) tensor of 0/1").to(device).long()
                if itm_logits is not None:
                    losses["itm"] = F.cross_entropy(itm_logits, itm_labels)
                positive = positive_pairs(itm_labels)
            keep = positive if positive is not None else slice(None)
            n_patches, n_words = image_m.last_hidden_state.shape[1] - 1, text_m.last_hidden_state.shape[1]
            if mim_labels is not None and cfg.mmm_image_weight > 0:  # [CLS_mm, CLS_img, patches..., words...]
                logits["mmm_image"], losses["mmm_image"] = masked_prediction(
                    self.mmm_image_head, hidden[keep][:, 2:2 + n_patches], mim_labels[keep])
            if mlm_labels is not None and cfg.mmm_text_weight > 0:
                logits["mmm_text"], losses["mmm_text"] = masked_prediction(
                    self.mmm_text_head, hidden[keep][:, -n_words:], mlm_labels[keep])

        image_embeds = text_embeds = logits_per_image = logits_per_text = None
        if image is not None and text is not None and cfg.global_contrastive_weight > 0:
            image_embeds = self._project(self.image_projection, image.last_hidden_state)
            text_embeds = self._project(self.text_projection, text.last_hidden_state)
            logits_per_image, logits_per_text, labels = contrastive_logits(image_embeds, text_embeds,
                                                                           self.logit_scale.exp())
            losses["global_contrastive"] = global_contrastive_loss(logits_per_image, logits_per_text, labels,
                                                                   positive)

        total = sum(getattr(cfg, f"{name}_weight") * loss for name, loss in losses.items()) if losses else None
        return FlavaOutput(
            loss=total, **{name: losses.get(name) for name in LOSSES},
            image_hidden=_last(image), text_hidden=_last(text), image_masked_hidden=_last(image_m),
            text_masked_hidden=_last(text_m), multimodal_masked_hidden=_last(mm),
            image_embeds=image_embeds, text_embeds=text_embeds,
            **{f"{name}_logits": logits.get(name) for name in ("mim", "mlm", "mmm_image", "mmm_text")},
            itm_logits=itm_logits, logits_per_image=logits_per_image, logits_per_text=logits_per_text,
            positive=positive)

    @torch.no_grad()
    def post_step(self) -> None:
        """Clamp ``logit_scale`` to ``[0, max_logit_scale]`` (temperature at most 100), as in CLIP and FLAVA."""
        self.logit_scale.clamp_(0.0, self.cfg.max_logit_scale)

    # ---------------------------------------------------------------- input checks

    def _check_inputs(self, pixel_values: Any, input_ids: Any, input_ids_masked: Any, bool_masked_pos: Any,
                      mlm_labels: Any, itm_labels: Any) -> int:
        if pixel_values is None and input_ids is None and input_ids_masked is None:
            raise ValueError("FLAVA needs pixel_values, input_ids (or input_ids_masked), or both")
        if bool_masked_pos is not None and pixel_values is None:
            raise ValueError("bool_masked_pos masks image patches: it needs pixel_values")
        if mlm_labels is not None and input_ids is None and input_ids_masked is None:
            raise ValueError("mlm_labels label words: they need input_ids_masked (or input_ids)")
        if input_ids is not None and input_ids_masked is not None:
            shapes = tuple(as_tensor(input_ids, "input_ids", "a (B, L) tensor").shape), \
                tuple(as_tensor(input_ids_masked, "input_ids_masked", "a (B, L) tensor").shape)
            if shapes[0] != shapes[1]:
                raise ValueError(f"input_ids_masked {shapes[1]} must have the shape of input_ids {shapes[0]}")
        ids = input_ids if input_ids is not None else input_ids_masked
        sizes = {}
        if pixel_values is not None:
            check_images(pixel_values, channels=self.cfg.image.channels, size=self.cfg.image.image_size,
                         name="pixel_values")
            sizes["pixel_values"] = len(pixel_values)
        if ids is not None:
            sizes["input_ids"] = len(as_tensor(ids, "input_ids", "a (B, L) tensor of token ids"))
        if len(set(sizes.values())) > 1:
            raise ValueError("mismatched batch sizes: " + ", ".join(f"{k}={v}" for k, v in sizes.items()))
        batch = next(iter(sizes.values()))
        if itm_labels is not None:
            if len(sizes) < 2:
                raise ValueError("itm_labels say which (image, caption) pairs match: pass pixel_values and input_ids")
            labels = as_tensor(itm_labels, "itm_labels", "a (B,) tensor of 0/1")
            if tuple(labels.shape) != (batch,):
                raise ValueError(f"itm_labels must have shape (B,) = ({batch},), got {tuple(labels.shape)}")
            integers = not (labels.is_floating_point() or labels.dtype == torch.bool)
            if not integers or not bool(((labels == 0) | (labels == 1)).all()):
                raise ValueError(f"itm_labels must hold integers 0 (mismatched) or 1 (matching), got {labels.tolist()}")
        return batch

    def _check_patch_mask(self, bool_masked_pos: Any, batch: int) -> torch.Tensor:
        n, grid = self.cfg.image.num_patches, self.cfg.image.grid
        masked = as_tensor(bool_masked_pos, "bool_masked_pos", f"a (B, {n}) tensor of 0/1 (1 = masked patch)")
        if masked.ndim == 3 and tuple(masked.shape[1:]) == (grid, grid):
            masked = masked.flatten(1)
        if tuple(masked.shape) != (batch, n):
            raise ValueError(f"bool_masked_pos must have shape (B, N) = ({batch}, {n}) (or (B, {grid}, {grid})), "
                             f"got {tuple(masked.shape)}")
        if masked.dtype != torch.bool and not bool(((masked == 0) | (masked == 1)).all()):
            raise ValueError("bool_masked_pos must hold only 0 and 1 (1 = masked patch)")
        return masked.to(self.mask_token.device).bool()

    def _check_mim_labels(self, mim_labels: Any, bool_masked_pos: torch.Tensor | None, batch: int) -> torch.Tensor:
        if bool_masked_pos is None:
            raise ValueError("mim_labels need bool_masked_pos: only the masked patches are predicted")
        n = self.cfg.image.num_patches
        labels = as_tensor(mim_labels, "mim_labels", f"a (B, {n}) tensor of codebook ids")
        if labels.ndim == 3:
            labels = labels.flatten(1)
        labels = check_labels(labels, shape=(batch, n), vocab_size=self.cfg.codebook_size, name="mim_labels",
                              device=self.mask_token.device)
        return labels.masked_fill(~bool_masked_pos, IGNORE_INDEX)


def _last(out: FlavaEncoderOutput | None) -> torch.Tensor | None:
    return out.last_hidden_state if out is not None else None
