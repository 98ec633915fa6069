"""BLIP: a ViT and a MED trained with three losses at once, so one model matches (ITC, ITM) and describes (LM).

Explained in notebook 04, §BLIP (Li et al. 2022, "BLIP: Bootstrapping Language-Image Pre-training", §3). On a
batch of (image, caption) pairs, with the caption's first token swapped for each task's:

* **ITC**: the image's ``[CLS]`` and the text encoder's ``[CLS]`` through two projections, CLIP's contrastive loss
  over a learned temperature; optionally against soft targets from momentum encoders (``distill``: ALBEF's
  momentum distillation, momentum 0.995, ``alpha`` 0.4). Simplified: no feature queue, the student is scored
  against its own in-batch features (ALBEF and BLIP score it against the momentum features plus a queue, and
  draw ITM negatives from those scores), and ``alpha`` is constant (BLIP ramps it up over the first epoch);
* **ITM**: the image-grounded encoder reads ``[Encode]`` + caption with cross-attention to the image, a two-way
  head on ``[Encode]`` says match / no match; for each image one hard negative caption and for each caption one
  hard negative image, drawn in proportion to their ITC scores;
* **LM**: the decoder reads ``[Decode]`` + caption causally, cross-attending to the image, and predicts each next
  token (cross-entropy with label smoothing 0.1).

:meth:`Blip.generate` (:class:`~vlm_primer.generative.captioner.Captioner`) writes captions (greedy, beam search, nucleus sampling; :mod:`vlm_primer.nn.decoding`),
:meth:`Blip.itm_scores` and :meth:`Blip.similarity` score pairs: what CapFilt's captioner and filter need
(:mod:`vlm_primer.generative.capfilt`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.generative.captioner import Captioner
from vlm_primer.generative.losses import hard_negatives, itc_loss, momentum_update
from vlm_primer.generative.med import MED, MEDConfig
from vlm_primer.nn import ViT, ViTConfig, causal_lm_loss
from vlm_primer.validate import check_caption_pairs, check_tokens

__all__ = ["BLIP_VIT", "Blip", "BlipConfig", "CaptionStepper"]

# BLIP's ViT (timm's layout, as transformers' BlipVisionModel): CLS token, no ln_pre, LayerNorm on every token.
BLIP_VIT = dict(pre_norm=False, final_norm_on="tokens", pool="cls", cls_token=True, patch_bias=True, eps=1e-6)


@dataclass
class BlipConfig(PresetConfig):
    """BLIP's parts (``vision``, ``text``: configs or dicts of fields), the ITC embedding width and temperature,
    the LM's label smoothing, and momentum distillation (``distill``, ``momentum``, ``alpha``). ``heads=False``
    leaves out the ITC projections, the ITM head and the temperature: a captioner only (``transformers``'
    ``BlipForConditionalGeneration``)."""

    vision: ViTConfig = field(default_factory=lambda: ViTConfig(**BlipConfig.PRESETS["tiny"]["vision"]))
    text: MEDConfig = field(default_factory=lambda: MEDConfig(**BlipConfig.PRESETS["tiny"]["text"]))
    embed_dim: int = 256
    temperature: float = 0.07
    label_smoothing: float = 0.1
    distill: bool = False
    momentum: float = 0.995
    alpha: float = 0.4
    heads: bool = True

    PRESETS: ClassVar[dict] = {
        "tiny": dict(vision=dict(ViTConfig.PRESETS["tiny"], **BLIP_VIT), text=MEDConfig.PRESETS["tiny"], embed_dim=32),
        # BLIP's ViT-B/16 at 224 px (pre-training) and BERT-base; the paper trains ITC with distillation.
        "base": dict(vision=dict(ViTConfig.PRESETS["base"], **BLIP_VIT), text=MEDConfig.PRESETS["base"],
                     distill=True),
    }
    BOUNDS: ClassVar[dict] = dict(embed_dim=">0", temperature="(0, 1]", label_smoothing="[0, 1)",
                                  momentum="[0, 1]", alpha="[0, 1]")

    def validate(self) -> None:
        self.coerce_parts(vision=ViTConfig, text=MEDConfig)
        if self.text.vision_dim != self.vision.dim:
            raise ValueError(f"the MED cross-attends to {self.text.vision_dim}-wide features but the ViT is "
                             f"{self.vision.dim} wide")
        if not self.vision.cls_token:
            raise ValueError("BLIP's ITC reads the image's [CLS] token: the ViT needs cls_token=True")
        if self.distill and not self.heads:
            raise ValueError("distill needs the ITC heads (heads=True)")


class CaptionStepper:
    """The decoder as a step function for :mod:`vlm_primer.nn.decoding`: it keeps the KV cache (the image's
    cross-attention keys and values are computed at the first step only)."""

    def __init__(self, text: MED, image: torch.Tensor) -> None:
        self.text, self.image, self.cache = text, image, text.new_cache()

    def __call__(self, new_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.text(new_ids, image=self.image, mode="decoder", cache=self.cache)
        return self.text.logits(hidden[:, -1])

    def reorder(self, index: torch.Tensor) -> None:
        for c in self.cache:
            c.reorder(index)
        self.image = self.image.index_select(0, index)


class Blip(Captioner, nn.Module):
    """BLIP: ``vision`` (ViT), ``text`` (:class:`~vlm_primer.generative.med.MED`), the ITC projections
    ``vision_proj`` / ``text_proj``, the ``itm_head`` and the ITC ``temperature``; with ``distill`` also frozen
    momentum copies of the encoders and projections (``momentum``)."""

    def __init__(self, cfg: BlipConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision = ViT(cfg.vision)
        self.text = MED(cfg.text)
        self.momentum = None
        if not cfg.heads:
            return
        self.vision_proj = nn.Linear(cfg.vision.dim, cfg.embed_dim)
        self.text_proj = nn.Linear(cfg.text.dim, cfg.embed_dim)
        self.itm_head = nn.Linear(cfg.text.dim, 2)
        for m in (self.vision_proj, self.text_proj, self.itm_head):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        self.temperature = nn.Parameter(torch.tensor(float(cfg.temperature)))
        if cfg.distill:
            self.momentum = nn.ModuleDict({name: copy.deepcopy(getattr(self, name)).requires_grad_(False)
                                           for name in ("vision", "text", "vision_proj", "text_proj")})

    # ---------------------------------------------------------------- the parts, for evaluation and CapFilt

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images -> the ViT's output tokens ``(B, 1 + N, dim)`` (what the MED cross-attends to)."""
        return self.vision(pixel_values).last_hidden_state

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images -> ITC embeddings ``(B, embed_dim)``, L2-normalised (the zero-shot and retrieval tools of
        :mod:`vlm_primer.evaluation` use it)."""
        return F.normalize(self.vision_proj(self.image_features(pixel_values)[:, 0]), dim=-1)

    def encode_text(self, input_ids: Any, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Captions (first token ``[CLS]``) -> ITC embeddings ``(B, embed_dim)``, L2-normalised."""
        self._need_heads("encode_text")
        hidden = self.text(self._with_first(input_ids, self.cfg.text.cls_token_id), attention_mask, mode="text")
        return F.normalize(self.text_proj(hidden[:, 0]), dim=-1)

    def similarity(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """ITC scores ``(B_img, B_txt)``: cosine similarities."""
        return image_embeds @ text_embeds.to(image_embeds.dtype).t()

    def itm_logits(self, image: torch.Tensor, input_ids: Any, attention_mask: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """Match / no-match logits ``(B, 2)`` of pairs: ``image`` the ViT's tokens (:meth:`image_features`), the
        caption read by the image-grounded encoder after ``[Encode]``."""
        self._need_heads("ITM")
        ids = self._with_first(input_ids, self.cfg.text.enc_token_id)
        return self.itm_head(self.text(ids, attention_mask, image, mode="grounded")[:, 0])

    @torch.no_grad()
    def itm_scores(self, pixel_values: torch.Tensor, input_ids: Any,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The probability ``(B,)`` that each caption matches its image (ITM): CapFilt's filter score."""
        return self.itm_logits(self.image_features(pixel_values), input_ids, attention_mask).softmax(-1)[:, 1]

    def _need_heads(self, what: str) -> None:
        if not self.cfg.heads:
            raise ValueError(f"{what} needs the ITC/ITM heads: this BLIP is a captioner only (heads=False)")

    def _with_first(self, input_ids: Any, token: int) -> torch.Tensor:
        ids = check_tokens(input_ids, vocab_size=self.cfg.text.vocab_size, device=self.text.word_emb.weight.device)
        ids = ids.clone()
        ids[:, 0] = token
        return ids

    # ---------------------------------------------------------------- pre-training

    def forward(self, pixel_values: torch.Tensor, input_ids: Any, attention_mask: torch.Tensor | None = None,
                same: torch.Tensor | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The three losses on a batch of pairs: ``input_ids`` ``(B, L)`` each ``<bos>`` caption ``<eos>`` (the first
        token is replaced by each task's); ``same`` ``(B, B)`` marks pairs whose captions are identical (never hard
        negatives of each other). Returns ``loss`` (the sum), ``itc``, ``itm``, ``lm`` (detached) and ``sim``."""
        cfg, tcfg = self.cfg, self.cfg.text
        self._need_heads("pre-training")
        ids, mask = check_caption_pairs(input_ids, attention_mask, images=len(pixel_values), vocab_size=tcfg.vocab_size,
                                        device=self.temperature.device, model="BLIP")
        image = self.image_features(pixel_values)
        # ITC
        image_emb = F.normalize(self.vision_proj(image[:, 0]), dim=-1)
        text_emb = self.encode_text(ids, mask)
        temp = self.temperature.clamp(1e-3, 0.5)
        logits = self.similarity(image_emb, text_emb) / temp
        teacher = None
        if self.momentum is not None:
            teacher = self._momentum_logits(pixel_values, ids, mask, temp)
        itc = itc_loss(logits, teacher, cfg.alpha)
        # ITM: one hard negative caption per image, one hard negative image per caption
        neg_text = hard_negatives(logits, same, generator)
        neg_image = hard_negatives(logits.t(), None if same is None else same.t(), generator)
        images = torch.cat([image, image, image.index_select(0, neg_image)])   # index_select: deterministic backward
        texts, masks = torch.cat([ids, ids[neg_text], ids]), torch.cat([mask, mask[neg_text], mask])
        itm_logits = self.itm_logits(images, texts, masks)
        labels = torch.cat([torch.ones(len(ids)), torch.zeros(2 * len(ids))]).long().to(itm_logits.device)
        itm = F.cross_entropy(itm_logits, labels)
        # LM: [Decode] + caption, each token from the image and the tokens before it
        lm = self.lm_loss(image, ids, mask)
        return {"loss": itc + itm + lm, "itc": itc.detach(), "itm": itm.detach(), "lm": lm.detach(),
                "sim": logits.detach()}

    def lm_loss(self, image: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The captioning (LM) loss: ``[Decode]`` + caption, each token predicted from the ``image`` tokens
        ``(B, N, dim)`` it cross-attends to and the tokens before it, with ``cfg.label_smoothing``. ``ids`` and
        ``mask`` ``(B, L)`` are checked pairs (:func:`check_caption_pairs`); the first token is replaced."""
        dec = ids.clone()
        dec[:, 0] = self.cfg.text.dec_token_id
        hidden = self.text(dec, mask, image, mode="decoder")
        return causal_lm_loss(self.text.logits(hidden), dec.masked_fill(mask == 0, -100),
                              label_smoothing=self.cfg.label_smoothing)

    @torch.no_grad()
    def _momentum_logits(self, pixel_values: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                         temp: torch.Tensor) -> torch.Tensor:
        m = self.momentum
        if self.training:
            momentum_update(((getattr(self, k), m[k]) for k in m), self.cfg.momentum)
        image = m["vision"](pixel_values).last_hidden_state[:, 0]
        text = m["text"](self._with_first(ids, self.cfg.text.cls_token_id), mask, mode="text")[:, 0]
        return F.normalize(m["vision_proj"](image), dim=-1) @ F.normalize(m["text_proj"](text), dim=-1).t() / temp

    # ---------------------------------------------------------------- captioning (Captioner)

    def caption_ids(self) -> tuple[list[int], int, int, int]:
        t = self.cfg.text
        return [t.dec_token_id], t.sep_token_id, t.pad_token_id, t.max_positions

    def stepper(self, image: torch.Tensor) -> CaptionStepper:
        return CaptionStepper(self.text, image)
