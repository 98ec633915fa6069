"""BLIP-2: a Q-Former between a frozen image encoder and a frozen LM, trained in two stages.

**Stage 2** (:class:`Blip2`): the Q-Former's query outputs, through one linear layer, become
``num_queries`` soft visual tokens spliced into the LM's input at the ``<image>`` placeholders (as
``transformers``' ``Blip2ForConditionalGeneration`` does; it is LLaVA's input layout with a learned
bottleneck as the connector, so :class:`Blip2` reuses :class:`~vlm_primer.backbones.Llava`'s splicing,
loss and generation).

**Stage 1** (:class:`Blip2Stage1`): the Q-Former learns to read the frozen image encoder through three
objectives at once. Explained in notebook 05b, §Stage 1 (Li et al. 2023, "BLIP-2", §3.2; the losses follow LAVIS'
``blip2_qformer.py``). On a batch of (image features, caption) pairs:

* **ITC**: the queries alone give ``num_queries`` image embeddings, the caption alone a text embedding
  (its first token); an image-text score is the **best** query's cosine similarity over a learned
  temperature, and a symmetric cross-entropy pulls matching pairs together (uni-modal mask);
* **ITM**: for each image a hard negative caption and for each caption a hard negative image are drawn
  in proportion to their ITC scores; queries and caption run together (bi-directional mask) and a
  two-way head on the mean query output says match / no match;
* **ITG**: the caption is generated from the queries (multimodal causal mask) by a BERT-style LM head
  tied to the Q-Former's word embeddings. BLIP-2 swaps the first token for a ``[DEC]`` token; here the
  first token stays ``<bos>``: the mask already tells the tasks apart.

Known deviations of :class:`Blip2Stage1` from LAVIS, kept because the zoo's stage-1 Q-Formers were trained with them
(they go with the next rebuild of those models): the ITM negatives are drawn from the softmax of the raw cosines,
where LAVIS divides them by the temperature first (so ours are close to uniform, far less *hard*); ITC has no
label smoothing (LAVIS: 0.1, as ITG here). Both stages also freeze the tower's final LayerNorm with the tower,
where LAVIS' ``ln_vision`` stays trainable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vlm_primer.backbones.llava import IMAGE_TOKEN_ID, Llava, check_image_token
from vlm_primer.backbones.qformer import QFormer, QFormerConfig
from vlm_primer.config import PresetConfig
from vlm_primer.contrastive.losses import clip_loss
from vlm_primer.generative.losses import hard_negatives
from vlm_primer.nn import BertLMHead, DecoderConfig, DecoderLM, ViT, ViTConfig, causal_lm_loss
from vlm_primer.validate import check_int, check_mask, check_tokens, value_checks_enabled

__all__ = ["Blip2", "Blip2Config", "Blip2Stage1", "InstructBlip", "InstructBlipConfig", "QFormerLMHead", "itg_captions",
           "hard_negatives"]

# transformers' Blip2VisionModel (EVA-CLIP's layout): no ln_pre, LayerNorm on every output token.
_EVA_TOWER = dict(pre_norm=False, final_norm_on="tokens", pool="cls", cls_token=True, patch_bias=True, eps=1e-6)


@dataclass
class Blip2Config(PresetConfig):
    """BLIP-2's three parts (``vision``, ``qformer``, ``text``: configs or dicts of fields) and the LM's image
    placeholder id; each image takes ``qformer.num_queries`` placeholders."""

    vision: ViTConfig = field(default_factory=lambda: ViTConfig(**Blip2Config.PRESETS["tiny"]["vision"]))
    qformer: QFormerConfig = field(default_factory=lambda: QFormerConfig(**Blip2Config.PRESETS["tiny"]["qformer"]))
    text: DecoderConfig = field(default_factory=lambda: DecoderConfig(**Blip2Config.PRESETS["tiny"]["text"]))
    image_token_id: int = IMAGE_TOKEN_ID

    PRESETS: ClassVar[dict] = {
        "tiny": dict(vision=dict(image_size=48, patch_size=6, dim=64, depth=2, heads=4, **_EVA_TOWER),
                     qformer=dict(QFormerConfig.PRESETS["tiny"], text_input=False),
                     text=dict(DecoderConfig.PRESETS["llama_tiny"], vocab_size=814, context_length=256,
                               bos_token_id=2, eos_token_id=3, pad_token_id=0)),
        # The paper's BLIP-2 ViT-g + OPT-2.7B shapes would need OPT; ours keeps Llama-2-7B as LLaVA's base.
        "base": dict(vision=dict(image_size=224, patch_size=14, dim=1408, depth=39, heads=16, mlp_dim=6144,
                                 **_EVA_TOWER),
                     qformer=dict(text_input=False),
                     text=dict(DecoderConfig.PRESETS["llama_7b"], vocab_size=32001), image_token_id=32000),
    }
    BOUNDS: ClassVar[dict] = dict(image_token_id=">=0")

    def validate(self) -> None:
        self.coerce_parts(vision=ViTConfig, qformer=QFormerConfig, text=DecoderConfig)
        if self.qformer.vision_dim != self.vision.dim:
            raise ValueError(f"the Q-Former reads {self.qformer.vision_dim}-wide features but the tower is "
                             f"{self.vision.dim} wide")
        check_image_token(self)

    @property
    def tokens_per_image(self) -> int:
        return self.qformer.num_queries


class Blip2(Llava):
    """BLIP-2 for generation: tower -> Q-Former queries -> ``language_projection`` -> soft visual tokens in a
    decoder LM. Explained in notebook 05b, §Stage 2. Inputs, loss and ``generate`` as :class:`Llava`'s."""

    CONFIG = Blip2Config

    def __init__(self, cfg: Blip2Config) -> None:
        nn.Module.__init__(self)
        self.cfg = cfg
        self.vision_tower = ViT(cfg.vision)
        self.qformer = QFormer(cfg.qformer)
        self.language_projection = nn.Linear(cfg.qformer.dim, cfg.text.dim)
        self.language_model = DecoderLM(cfg.text)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images -> ``(N_img, num_queries, text_dim)``: the queries read the tower's last hidden state."""
        return self.language_projection(self.qformer(self.vision_tower(pixel_values).last_hidden_state))

    def set_stage(self, stage: int, train_vision: bool = False, train_language: bool = False,
                  train_qformer: bool = True) -> int:
        """BLIP-2 freezes the tower and the LM in both stages; stage 2 trains the Q-Former and the projection
        (stage 1 is :class:`Blip2Stage1`'s). ``train_qformer=False`` freezes the Q-Former too, so that only the
        projection learns: MiniGPT-4's recipe (notebook 05b, §Frozen and MiniGPT-4). Returns the number of trainable
        parameters."""
        if stage != 2:
            raise ValueError("Blip2 is stage 2 (generation); stage 1 trains the Q-Former with Blip2Stage1")
        self.vision_tower.requires_grad_(train_vision)
        self.qformer.requires_grad_(train_qformer)
        if not self.IMAGE_INPUTS:  # BLIP-2's queries read no text: the Q-Former's text parts stay as stage 1 left them
            for p in self.qformer.text_parameters():
                p.requires_grad_(False)
        self.language_projection.requires_grad_(True)
        self.language_model.requires_grad_(train_language)
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


@dataclass
class InstructBlipConfig(Blip2Config):
    """InstructBLIP's parts: BLIP-2's, with a Q-Former that reads text (the instruction) and has no stage-1 heads."""

    qformer: QFormerConfig = field(default_factory=lambda: QFormerConfig(
        **InstructBlipConfig.PRESETS["tiny"]["qformer"]))

    PRESETS: ClassVar[dict] = {name: dict(preset, qformer=dict(preset["qformer"], text_input=True, stage1_heads=False))
                               for name, preset in Blip2Config.PRESETS.items()}

    def validate(self) -> None:
        super().validate()
        if not self.qformer.text_input:
            raise ValueError("InstructBLIP's Q-Former reads the instruction: it needs qformer.text_input=True")


class InstructBlip(Blip2):
    """InstructBLIP (Dai et al. 2023): BLIP-2 whose Q-Former also reads the instruction, so the queries extract
    what the question asks about. Explained in notebook 05b, §InstructBLIP. ``forward`` and ``generate`` take
    ``qformer_input_ids`` (the instruction in the Q-Former's vocabulary, one row per image) and
    ``qformer_attention_mask`` beside :class:`Blip2`'s inputs."""

    CONFIG = InstructBlipConfig
    IMAGE_INPUTS = ("qformer_input_ids", "qformer_attention_mask")

    def image_features(self, pixel_values: torch.Tensor, qformer_input_ids: Any = None,
                       qformer_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Images and their instructions -> ``(N_img, num_queries, text_dim)``: queries and instruction share the
        Q-Former's self-attention (every position sees every other); only the queries' outputs go on."""
        if qformer_input_ids is None:
            raise ValueError("InstructBLIP's Q-Former reads the instruction: pass qformer_input_ids (one row per image)")
        image = self.vision_tower(pixel_values).last_hidden_state
        hidden = self.qformer(image, qformer_input_ids, qformer_attention_mask, mask="bidirectional")
        return self.language_projection(hidden[:, :self.cfg.qformer.num_queries])


class QFormerLMHead(BertLMHead):
    """BERT's prediction head on the Q-Former, tied to its word embeddings (:class:`~vlm_primer.nn.BertLMHead`)."""

    def __init__(self, qformer: QFormer) -> None:
        super().__init__(qformer.word_emb, qformer.cfg.act, qformer.cfg.eps)


class Blip2Stage1(nn.Module):
    """The three stage-1 losses of a :class:`QFormer` (its heads included) plus the ITG head and the ITC
    temperature. ``forward(image, input_ids, attention_mask, same=None)`` returns ``loss`` (the sum) and
    ``itc``, ``itm``, ``itg`` (each detached) and the ITC similarity matrix ``sim``."""

    def __init__(self, qformer: QFormer, temperature: float = 0.07, label_smoothing: float = 0.1,
                 vision_tower: ViT | None = None) -> None:
        super().__init__()
        if not (qformer.cfg.text_input and qformer.cfg.stage1_heads):
            raise ValueError("stage 1 needs a Q-Former with text_input=True and stage1_heads=True")
        if vision_tower is not None and vision_tower.cfg.dim != qformer.cfg.vision_dim:
            raise ValueError(f"the Q-Former reads {qformer.cfg.vision_dim}-wide features but the tower is "
                             f"{vision_tower.cfg.dim} wide")
        self.vision_tower = vision_tower.requires_grad_(False) if vision_tower is not None else None
        self.qformer = qformer
        self.lm_head = QFormerLMHead(qformer)
        self.temperature = nn.Parameter(torch.tensor(float(temperature)))
        self.label_smoothing = label_smoothing

    @property
    def cfg(self) -> QFormerConfig:
        """The Q-Former's config (what the zoo's card stores for ``qformer-tiny``)."""
        return self.qformer.cfg

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images -> the queries' ITC embeddings ``(B, num_queries, embed_dim)``, L2-normalised (needs the
        ``vision_tower``; with :meth:`encode_text` and :meth:`similarity` the zero-shot tools of
        :mod:`vlm_primer.evaluation` work on a stage-1 Q-Former)."""
        if self.vision_tower is None:
            raise ValueError("encode_image needs the frozen tower: build Blip2Stage1(qformer, vision_tower=...)")
        with torch.no_grad():
            image = self.vision_tower.eval()(pixel_values).last_hidden_state
        return F.normalize(self.qformer.vision_proj(self.qformer(image)), dim=-1)

    def encode_text(self, input_ids: Any, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Captions -> their ITC embedding ``(B, embed_dim)`` (the first token's output, text alone), L2-normalised."""
        text = self.qformer(input_ids=input_ids, attention_mask=attention_mask, queries=False)
        return F.normalize(self.qformer.text_proj(text[:, 0]), dim=-1)

    def similarity(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """ITC scores ``(B_img, B_txt)``: the **best** query's cosine similarity with the caption."""
        return torch.einsum("iqd,td->iqt", image_embeds, text_embeds.to(image_embeds.dtype)).amax(1)

    def forward(self, image: torch.Tensor | None = None, input_ids: Any = None,
                attention_mask: torch.Tensor | None = None, same: torch.Tensor | None = None,
                generator: torch.Generator | None = None, *, pixel_values: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """``image``: the frozen tower's features ``(B, N, vision_dim)``; or ``pixel_values`` when a
        ``vision_tower`` was given (it runs frozen, as BLIP-2's image encoder does)."""
        q = self.qformer
        cfg = q.cfg
        if pixel_values is not None:
            if self.vision_tower is None or image is not None:
                raise ValueError("pass image features, or pixel_values to a Blip2Stage1 built with a vision_tower")
            with torch.no_grad():
                image = self.vision_tower.eval()(pixel_values).last_hidden_state
        if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[-1] != cfg.vision_dim \
                or not image.is_floating_point() or image.shape[1] == 0:
            raise ValueError(f"image must be float features (B, N, {cfg.vision_dim}) of the frozen tower, got "
                             f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}")
        ids = check_tokens(input_ids, vocab_size=cfg.vocab_size, device=image.device)
        if ids.shape[1] > cfg.max_positions:
            raise ValueError(f"input_ids: {ids.shape[1]} tokens, more than the Q-Former's {cfg.max_positions} "
                             "positions")
        if len(image) != len(ids):
            raise ValueError(f"{len(image)} images but {len(ids)} texts: stage 1 takes matching pairs")
        mask = torch.ones_like(ids) if attention_mask is None else \
            check_mask(attention_mask, shape=tuple(ids.shape), device=image.device).long()
        if value_checks_enabled() and bool((mask.sum(1) < 2).any()):
            raise ValueError("input_ids: every caption needs at least 2 real tokens (ITG predicts each token "
                             "after the first)")
        nq = cfg.num_queries
        # ITC: queries and text apart
        sim = self.similarity(F.normalize(q.vision_proj(q(image)), dim=-1), self.encode_text(ids, mask))
        temp = self.temperature.clamp(1e-3, 0.5)
        itc = clip_loss(sim / temp)
        # ITM: one hard negative caption per image and one hard negative image per caption
        neg_text = hard_negatives(sim, same, generator)
        neg_image = hard_negatives(sim.t(), None if same is None else same.t(), generator)
        images = torch.cat([image, image, image[neg_image]])
        texts, masks = torch.cat([ids, ids[neg_text], ids]), torch.cat([mask, mask[neg_text], mask])
        joint = q(images, texts, masks, mask="bidirectional")
        logits = q.itm_head(joint[:, :nq]).mean(1)
        labels = torch.cat([torch.ones(len(ids)), torch.zeros(2 * len(ids))]).long().to(logits.device)
        itm = F.cross_entropy(logits, labels)
        # ITG: the caption from the queries, each token from the queries and the tokens before it
        hidden = q(image, ids, mask, mask="multimodal_causal")[:, nq:]
        itg = causal_lm_loss(self.lm_head(hidden), ids.masked_fill(mask == 0, -100),
                             label_smoothing=self.label_smoothing)
        return {"loss": itc + itm + itg, "itc": itc.detach(), "itm": itm.detach(), "itg": itg.detach(),
                "sim": sim.detach()}


@torch.no_grad()
def itg_captions(stage1: Blip2Stage1, image: torch.Tensor, bos_id: int, eos_id: int,
                 max_new_tokens: int = 16) -> torch.Tensor:
    """Greedy captions from a stage-1 Q-Former through its ITG head, for the frozen tower's features ``image``
    ``(B, N, vision_dim)``: the queries read the image, each new token sees the queries and the tokens before it
    (the multimodal causal mask). Returns the ids after ``<bos>`` ``(B, T)``, ``eos_id`` and what follows it left
    as generated. Notebook 05b, §Stage 1."""
    cfg = stage1.qformer.cfg
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[-1] != cfg.vision_dim:
        raise ValueError(f"image must be the tower's features (B, N, {cfg.vision_dim}), got "
                         f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}")
    check_int(max_new_tokens, "max_new_tokens")
    stage1.eval()
    ids = torch.full((len(image), 1), bos_id, dtype=torch.long, device=image.device)
    for _ in range(min(max_new_tokens, cfg.max_positions - 1)):  # no cache: the Q-Former is small
        hidden = stage1.qformer(image, ids, mask="multimodal_causal")[:, cfg.num_queries:]
        ids = torch.cat([ids, stage1.lm_head(hidden[:, -1:]).argmax(-1)], dim=1)
        if bool((ids == eos_id).any(1).all()):
            break
    return ids[:, 1:]
