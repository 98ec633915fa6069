"""LLaVA: a pretrained vision tower, a connector and a decoder LM, with image tokens spliced into the text.

Explained in notebook 05, §The architecture (survey §2.5 and §3.5.1; Liu et al. 2023, 2024).

* The vision tower runs with ``output_hidden_states``; the features come from block ``select_layer``
  (LLaVA takes the penultimate, ``-2``) and ``select_feature="patch"`` drops the CLS token.
* A connector (:mod:`vlm_primer.backbones.connectors`) maps them to ``tokens_per_image`` vectors of the
  language model's width.
* ``input_ids`` hold ``tokens_per_image`` copies of ``image_token_id`` for each image
  (:meth:`Llava.expand_image_tokens` turns one ``<image>`` into them); their embeddings are replaced,
  in order, by the images' tokens (``transformers``' ``LlavaForConditionalGeneration`` does the same).
* Training stages (:meth:`Llava.set_stage`): stage 1 trains the connector only (alignment on
  captions); stage 2 trains the connector and the language model (instruction tuning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from vlm_primer.backbones.connectors import CONNECTORS, QUERY_CONNECTORS, build_connector
from vlm_primer.config import PresetConfig
from vlm_primer.nn import DecoderConfig, DecoderLM, DecoderOutput, ViT, ViTConfig, causal_lm_items
from vlm_primer.validate import check_choice, check_images, check_int, check_tokens, value_checks_enabled

__all__ = ["IMAGE_TOKEN_ID", "Llava", "LlavaConfig", "expand_image_tokens"]

IMAGE_TOKEN_ID = 5  # <image> in the project's tokenizer (vlm_primer.text.special)
_CLIP_TOWER = dict(pre_norm=True, final_norm_on="pooled", pool="cls", cls_token=True, patch_bias=False, eps=1e-5)


def check_image_token(cfg: Any) -> None:
    """The image placeholder ``cfg.image_token_id`` must be a token of the LM's vocabulary (``cfg.text``): the
    check LLaVA's, BLIP-2's and Flamingo's configs share."""
    if cfg.image_token_id >= cfg.text.vocab_size:
        raise ValueError(f"{type(cfg).__name__}.image_token_id={cfg.image_token_id} is not in the vocabulary of "
                         f"{cfg.text.vocab_size} tokens")


@dataclass
class LlavaConfig(PresetConfig):
    """LLaVA's three parts and how they are joined. ``vision``/``text`` accept configs or dicts of fields."""

    vision: ViTConfig = field(default_factory=lambda: ViTConfig(**LlavaConfig.PRESETS["tiny"]["vision"]))
    text: DecoderConfig = field(default_factory=lambda: DecoderConfig(**LlavaConfig.PRESETS["tiny"]["text"]))
    connector: str = "mlp"            # linear (LLaVA-1.0) | mlp (LLaVA-1.5) | pixel_shuffle (Idefics3, nanoVLM)
                                      # | qformer (BLIP-2) | perceiver (Flamingo) | resampler (Qwen-VL)
    connector_act: str = "gelu"
    shuffle_factor: int = 2           # pixel_shuffle only: f x f patches -> one token
    num_queries: int = 32             # qformer | perceiver | resampler: image tokens, whatever the image
    connector_depth: int = 2          # qformer layers | perceiver blocks
    connector_heads: int = 4
    select_layer: int = -2            # which hidden state of the vision tower (-1 = last block's output)
    select_feature: str = "patch"     # patch: drop CLS (LLaVA's "default") | cls_patch: keep it ("full")
    image_token_id: int = IMAGE_TOKEN_ID

    PRESETS: ClassVar[dict] = {
        # Shapes World: the zoo's 48 px CLIP tower and its Llama-style language model (chapter 05).
        "tiny": dict(vision=dict(image_size=48, patch_size=6, dim=64, depth=2, heads=4, **_CLIP_TOWER),
                     text=dict(DecoderConfig.PRESETS["llama_tiny"], vocab_size=814, context_length=256,
                               bos_token_id=2, eos_token_id=3, pad_token_id=0)),
        # The paper's LLaVA-1.5-7B shapes: CLIP ViT-L/14 at 336 px, Vicuna-7B (Llama-2 shapes).
        "base": dict(vision=dict(image_size=336, patch_size=14, dim=1024, depth=24, heads=16, act="quick_gelu",
                                 **_CLIP_TOWER),
                     # llava-hf/llava-1.5-7b-hf: Vicuna's 32,000 tokens + <image> and padding = 32,064
                     text=dict(DecoderConfig.PRESETS["llama_7b"], vocab_size=32064), image_token_id=32000),
    }
    BOUNDS: ClassVar[dict] = dict(shuffle_factor=">0", num_queries=">0", connector_depth=">0", connector_heads=">0",
                                  image_token_id=">=0")

    def validate(self) -> None:
        self.coerce_parts(vision=ViTConfig, text=DecoderConfig)
        check_choice(self.connector, CONNECTORS, "LlavaConfig.connector")
        check_choice(self.select_feature, ("patch", "cls_patch"), "LlavaConfig.select_feature")
        if not -(self.vision.depth + 1) <= self.select_layer <= self.vision.depth:
            raise ValueError(f"LlavaConfig.select_layer={self.select_layer} is outside the tower's "
                             f"{self.vision.depth + 1} hidden states")
        check_image_token(self)
        if self.connector == "resampler" and (self.select_feature != "patch"
                                              or math.isqrt(self.num_queries) ** 2 != self.num_queries):
            raise ValueError("the Qwen-VL resampler puts 2-D positions on a square grid: it needs "
                             f"select_feature='patch' and a square num_queries, got {self.num_queries}")
        if self.connector in QUERY_CONNECTORS:
            width = self.vision.dim if self.connector == "perceiver" else self.text.dim
            if width % self.connector_heads:
                raise ValueError(f"LlavaConfig.connector_heads={self.connector_heads} must divide the "
                                 f"{self.connector} connector's width {width}")
        if self.connector == "pixel_shuffle" and (self.select_feature != "patch"
                                                   or self.vision.grid % self.shuffle_factor):
            raise ValueError(f"pixel_shuffle needs select_feature='patch' and a grid ({self.vision.grid}) "
                             f"divisible by shuffle_factor={self.shuffle_factor}")

    @property
    def tokens_per_image(self) -> int:
        if self.connector in QUERY_CONNECTORS:
            return self.num_queries
        n = self.vision.num_patches + int(self.select_feature == "cls_patch" and self.vision.cls_token)
        return n // self.shuffle_factor**2 if self.connector == "pixel_shuffle" else n


def expand_image_tokens(ids: Sequence[int], image_id: int, counts: int | Sequence[int],
                        target: Sequence[bool] | None = None) -> tuple[list[int], list[bool] | None]:
    """``ids`` with the ``i``-th ``image_id`` repeated ``counts[i]`` times (an int: the same for every image),
    and the parallel ``target`` mask expanded alike, False on every image position (None stays None)."""
    n = sum(t == image_id for t in ids)
    counts = [counts] * n if isinstance(counts, int) else list(counts)
    if len(counts) != n:
        raise ValueError(f"ids hold {n} image placeholders but {len(counts)} token counts were given")
    counts = [check_int(k, "each image's token count") for k in counts]
    marks = [False] * len(ids) if target is None else target
    out_ids: list[int] = []
    out_target: list[bool] = []
    it = iter(counts)
    for t, m in zip(ids, marks):
        k = next(it) if t == image_id else 1
        out_ids += [t] * k
        out_target += [m and t != image_id] * k
    return out_ids, None if target is None else out_target


def with_context(text: DecoderConfig, context_length: int | None) -> DecoderConfig:
    """``text`` with ``context_length`` (None: unchanged): a RoPE language model takes a longer context without new
    weights (image tokens need room); one with learned positions cannot, and says so."""
    if context_length is None:
        return text
    if text.pos_emb != "rope" and context_length != text.context_length:
        raise ValueError(f"only a RoPE language model can change its context ({text.context_length} -> "
                         f"{context_length}) without new weights: its learned position table has "
                         f"{text.context_length} rows")
    return text.replace(context_length=context_length)


class Llava(nn.Module):
    """Vision tower + connector + decoder LM (LLaVA-1.0/1.5). Explained in notebook 05, §The architecture."""

    CONFIG: ClassVar[type] = LlavaConfig
    # keyword inputs that forward/generate hand to image_features (InstructBLIP's instruction for its Q-Former)
    IMAGE_INPUTS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: LlavaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision_tower = ViT(cfg.vision)
        self.connector = build_connector(cfg.connector, cfg.vision.dim, cfg.text.dim, factor=cfg.shuffle_factor,
                                         act=cfg.connector_act, num_queries=cfg.num_queries,
                                         depth=cfg.connector_depth, heads=cfg.connector_heads)
        self.language_model = DecoderLM(cfg.text)

    @classmethod
    def from_parts(cls, vision_tower: ViT, language_model: DecoderLM, *, context_length: int | None = None,
                   **cfg_fields: Any) -> "Llava":
        """A LLaVA around pretrained parts (e.g. the zoo's ``clip-tiny-pairs`` tower and ``lm-tiny``);
        the connector is new. ``context_length`` lengthens a RoPE language model's context (the image
        tokens need room; the weights do not change). Subclasses build their own :attr:`CONFIG`."""
        text = with_context(language_model.cfg, context_length)
        model = cls(cls.CONFIG(vision=vision_tower.cfg, text=text, **cfg_fields))
        model.vision_tower.load_state_dict(vision_tower.state_dict())
        model.language_model.load_state_dict(language_model.state_dict())
        return model

    @property
    def tokens_per_image(self) -> int:
        return self.cfg.tokens_per_image

    # ------------------------------------------------------------------ inputs

    def expand_image_tokens(self, ids: Sequence[int], counts: int | Sequence[int] | None = None) -> list[int]:
        """Token ids with the ``i``-th ``image_token_id`` repeated ``counts[i]`` times (default
        ``tokens_per_image`` for every image): the model's input layout."""
        counts = self.tokens_per_image if counts is None else counts
        return expand_image_tokens(ids, self.cfg.image_token_id, counts)[0]

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images ``(N_img, 3, H, W)`` -> image tokens ``(N_img, tokens_per_image, text_dim)``."""
        hidden = self.vision_tower(pixel_values, output_hidden_states=True).hidden_states[self.cfg.select_layer]
        if self.cfg.select_feature == "patch" and self.cfg.vision.cls_token:
            hidden = hidden[:, 1:]
        return self.connector(hidden)

    def embed(self, input_ids: Any, pixel_values: torch.Tensor | None = None, image_sizes: Any = None,
              **image_inputs: Any) -> torch.Tensor:
        """Text embeddings with the image placeholders replaced by the images' tokens, in order
        (``image_inputs``: what :attr:`IMAGE_INPUTS` names, for ``image_features``)."""
        cfg = self.cfg
        if image_sizes is not None:
            raise ValueError("image_sizes is for LLaVA-NeXT's tiled images (LlavaNext); Llava takes square images")
        ids = check_tokens(input_ids, vocab_size=cfg.text.vocab_size, device=self.language_model.tok_emb.weight.device)
        if pixel_values is not None:
            check_images(pixel_values, channels=cfg.vision.channels, size=cfg.vision.image_size, name="pixel_values",
                         device=ids.device)
        counts = [] if pixel_values is None else [self.tokens_per_image] * pixel_values.shape[0]
        self.check_placeholders(ids, counts)
        features = None if pixel_values is None else self.image_features(pixel_values, **image_inputs).flatten(0, 1)
        return self.splice(ids, features)

    def check_placeholders(self, ids: torch.Tensor, counts: Sequence[int]) -> None:
        """The placeholders of ``ids`` must number ``sum(counts)`` (image ``i`` gives ``counts[i]`` tokens; counted
        while value checks are on, as reading the count is a synchronisation on a GPU), and the spliced sequence
        must fit the language model's context."""
        cfg = self.cfg
        is_image = ids == cfg.image_token_id
        slots, need = (int(is_image.sum()), sum(counts)) if value_checks_enabled() else (0, 0)
        if slots and not counts:
            raise ValueError(f"input_ids hold {slots} image placeholders (id {cfg.image_token_id}) but no "
                             "pixel_values were given")
        if slots != need:
            have = f"{slots} image placeholders" if slots else "no image placeholder"
            raise ValueError(
                f"input_ids hold {have} (id {cfg.image_token_id}), but {len(counts)} image(s) of "
                f"{'/'.join(map(str, sorted(set(counts))))} tokens need {need}: put one <image> per image in the "
                "prompt and expand each with expand_image_tokens")
        if ids.shape[1] > cfg.text.context_length:
            row = int(is_image.sum(1).argmax())
            n_img = int(is_image[row].sum())
            raise ValueError(f"input_ids: after splicing, the sequence is {ids.shape[1]} tokens ({n_img} image "
                             f"tokens + {ids.shape[1] - n_img} text tokens), longer than the language model's context of "
                             f"{cfg.text.context_length}")

    def splice(self, ids: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings of ``ids`` whose placeholders are replaced, in order, by ``features`` ``(T, dim)``."""
        embeds = self.language_model.tok_emb(ids)
        if features is None:
            return embeds
        return embeds.masked_scatter((ids == self.cfg.image_token_id)[..., None], features.to(embeds.dtype))

    # ------------------------------------------------------------------ running

    def forward(self, input_ids: Any, pixel_values: Any = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, image_sizes: Any = None, **kwargs: Any) -> DecoderOutput:
        """Logits over the whole spliced sequence; with ``labels`` ``(B, L)`` (-100 on the image and
        prompt positions, so only answers are learned) also the next-token loss."""
        if labels is not None and value_checks_enabled() and isinstance(labels, torch.Tensor):
            ids = torch.as_tensor(input_ids, device=labels.device)
            if ids.shape == labels.shape and bool((labels[ids == self.cfg.image_token_id] != -100).any()):
                raise ValueError("labels must be -100 on the image positions: an image token is not a target")
        image_inputs = {k: kwargs.pop(k) for k in self.IMAGE_INPUTS if k in kwargs}
        embeds = self.embed(input_ids, pixel_values, image_sizes, **image_inputs)
        return self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **kwargs)

    def loss_items(self, batch: dict[str, Any]) -> int:
        """The answer tokens the loss of ``batch`` averages over (:func:`~vlm_primer.nn.causal_lm_items`), for the
        ``Trainer``'s gradient accumulation."""
        return causal_lm_items(batch.get("labels"))

    @torch.no_grad()
    def generate(self, input_ids: Any, pixel_values: Any = None, max_new_tokens: int = 20, *,
                 image_sizes: Any = None, **kwargs: Any) -> torch.Tensor:
        """The new token ids ``(B, T)`` after the prompt (greedy by default; see ``DecoderLM.generate``)."""
        image_inputs = {k: kwargs.pop(k) for k in self.IMAGE_INPUTS if k in kwargs}
        embeds = self.embed(input_ids, pixel_values, image_sizes, **image_inputs)
        return self.language_model.generate(inputs_embeds=embeds, max_new_tokens=max_new_tokens, **kwargs)

    # ------------------------------------------------------------------ training stages

    def set_stage(self, stage: int, train_vision: bool = False, train_language: bool = True) -> int:
        """Freeze for LLaVA's stage 1 (connector only) or stage 2 (connector + LM, optionally the tower;
        ``train_language=False`` keeps the LM frozen too, the ablation of notebook 05).

        Returns the number of trainable parameters.
        """
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 (alignment) or 2 (instruction tuning), got {stage!r}")
        self.vision_tower.requires_grad_(stage == 2 and train_vision)
        self.connector.requires_grad_(True)
        self.language_model.requires_grad_(stage == 2 and train_language)
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
