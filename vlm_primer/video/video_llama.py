"""Video-LLaMA's vision branch: BLIP-2 on every frame, a temporal position per frame, a video Q-Former over them all.

Explained in notebook 08, §Video-LLaMA (Zhang et al. 2023, "Video-LLaMA", §2.1; the layout follows the released
``video_llama.py``). A clip of ``T`` frames ``(B, T, 3, H, W)``:

1. every frame goes through BLIP-2's **frozen** image encoder and **frozen** image Q-Former: ``num_queries`` tokens
   per frame (:meth:`VideoLlama.frame_tokens`, exactly what a :class:`~vlm_primer.backbones.Blip2` computes);
2. a learned **temporal position embedding**, one vector per frame index, is added to all of frame ``t``'s tokens,
   and the ``T * num_queries`` tokens are concatenated (:meth:`VideoLlama.add_frame_positions`). Without it the next
   step could not tell the frames apart: cross-attention reads a *set*, so shuffled frames would give the same video;
3. a **video Q-Former** (a second :class:`~vlm_primer.backbones.QFormer`: 2 layers, cross-attention in every layer,
   ``video_qformer.num_queries`` learned queries, trained from scratch) reads that set;
4. one linear layer maps its outputs to the LLM's width, and they go **before the text** as a soft prompt
   (:meth:`VideoLlama.video_tokens`). The LLM is frozen: only the temporal embedding, the video Q-Former and the
   projection learn (:meth:`VideoLlama.trainable_parameters`), on captions, with the LM loss on the text.

A whole clip costs the LLM ``video_qformer.num_queries`` tokens (32 in the paper, what one image costs BLIP-2),
however many frames it has up to ``num_frames``, the size of the temporal table (``max_frame_pos`` 32 in the
released code): §The cost of frames compares this with keeping every frame's tokens (Video-LLaVA). The audio branch
(ImageBind + an audio Q-Former) is left out, and the video tokens come before the whole text, its ``<bos>``
included (the released code puts ``<bos>`` first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

import torch
from einops import rearrange
from torch import nn

from vlm_primer.backbones.blip2 import Blip2, Blip2Config
from vlm_primer.backbones.qformer import QFormer, QFormerConfig
from vlm_primer.config import PresetConfig
from vlm_primer.nn import DecoderConfig, DecoderLM, ViT, ViTConfig, causal_lm_items
from vlm_primer.validate import check_images, check_labels, check_mask, check_tokens

__all__ = ["VideoLlama", "VideoLlamaConfig", "VideoLlamaOutput", "video_qformer_config"]


def video_qformer_config(qformer: QFormerConfig, **overrides: Any) -> QFormerConfig:
    """Video-LLaMA's video Q-Former for an image Q-Former ``qformer``: the same width and heads, 2 layers,
    cross-attention in every layer, reading the image Q-Former's outputs, no text input; ``overrides`` on top."""
    fields = dict(qformer.to_dict(), depth=2, cross_attention_freq=1, vision_dim=qformer.dim, text_input=False,
                  stage1_heads=False)
    return QFormerConfig(**{**fields, **overrides})


def _parts(preset: str) -> dict:
    return {k: Blip2Config.PRESETS[preset][k] for k in ("vision", "qformer", "text")}


@dataclass
class VideoLlamaConfig(PresetConfig):
    """BLIP-2's parts (``vision``, ``qformer``, ``text``), the ``video_qformer`` and ``num_frames``: how many
    temporal positions there are, the most frames a clip may have (configs or dicts of fields)."""

    vision: ViTConfig = field(default_factory=lambda: ViTConfig(**VideoLlamaConfig.PRESETS["tiny"]["vision"]))
    qformer: QFormerConfig = field(default_factory=lambda: QFormerConfig(**VideoLlamaConfig.PRESETS["tiny"]["qformer"]))
    text: DecoderConfig = field(default_factory=lambda: DecoderConfig(**VideoLlamaConfig.PRESETS["tiny"]["text"]))
    video_qformer: QFormerConfig = field(default_factory=lambda: QFormerConfig(
        **VideoLlamaConfig.PRESETS["tiny"]["video_qformer"]))
    num_frames: int = 8

    PRESETS: ClassVar[dict] = {
        # blip2-tiny's shapes (64 wide, 8 queries per frame, lm-tiny), 8 video queries over up to 8 frames.
        "tiny": dict(_parts("tiny"), video_qformer=dict(QFormerConfig.PRESETS["tiny"], depth=2, cross_attention_freq=1,
                                                        text_input=False, stage1_heads=False), num_frames=8),
        # The paper's: EVA-CLIP ViT-g/14 + BLIP-2's Q-Former (32 queries, 768 wide), a 2-layer video Q-Former of 32
        # queries, LLaMA/Vicuna-7B. Clips are 8 frames; the released code allots max_frame_pos = 32 positions.
        "base": dict(_parts("base"), text=DecoderConfig.PRESETS["llama_7b"],
                     video_qformer=dict(depth=2, cross_attention_freq=1, vision_dim=768, text_input=False,
                                        stage1_heads=False),
                     num_frames=32),
    }
    BOUNDS: ClassVar[dict] = dict(num_frames="[1, 1024]")

    def validate(self) -> None:
        self.coerce_parts(vision=ViTConfig, qformer=QFormerConfig, text=DecoderConfig, video_qformer=QFormerConfig)
        if self.qformer.vision_dim != self.vision.dim:
            raise ValueError(f"the image Q-Former reads {self.qformer.vision_dim}-wide features but the tower is "
                             f"{self.vision.dim} wide")
        if self.video_qformer.vision_dim != self.qformer.dim:
            raise ValueError(f"the video Q-Former reads {self.video_qformer.vision_dim}-wide tokens but the image "
                             f"Q-Former gives {self.qformer.dim}-wide ones: set video_qformer.vision_dim="
                             f"{self.qformer.dim}")
        if self.video_qformer.text_input:
            raise ValueError("the video Q-Former reads frame tokens only: video_qformer.text_input must be False")
        if self.video_qformer.num_queries >= self.text.context_length:
            raise ValueError(f"{self.video_qformer.num_queries} video tokens leave no room for text in the language "
                             f"model's context of {self.text.context_length}")

    @property
    def tokens_per_frame(self) -> int:
        return self.qformer.num_queries

    @property
    def tokens_per_video(self) -> int:
        return self.video_qformer.num_queries


@dataclass
class VideoLlamaOutput:
    logits: torch.Tensor                      # (B, video tokens + L, vocab): the soft prompt, then the text
    loss: torch.Tensor | None = None          # next-token cross-entropy on the labelled text positions
    video_tokens: torch.Tensor | None = None  # (B, video tokens, text dim): the soft prompt


class VideoLlama(nn.Module):
    """Frozen BLIP-2 frame encoder -> temporal positions -> video Q-Former -> linear -> soft prompt of a frozen LM.
    Explained in notebook 08, §Video-LLaMA."""

    def __init__(self, cfg: VideoLlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision_tower = ViT(cfg.vision)                                    # frozen
        self.qformer = QFormer(cfg.qformer)                                    # frozen (BLIP-2's)
        self.temporal_emb = nn.Embedding(cfg.num_frames, cfg.qformer.dim)      # trained (N(0, 1) as nn.Embedding's)
        self.video_qformer = QFormer(cfg.video_qformer)                        # trained
        self.language_projection = nn.Linear(cfg.video_qformer.dim, cfg.text.dim)  # trained
        self.language_model = DecoderLM(cfg.text)                              # frozen
        for frozen in (self.vision_tower, self.qformer, self.language_model):
            frozen.requires_grad_(False)

    @classmethod
    def from_blip2(cls, blip2: Blip2, *, num_frames: int = 8, video_qformer: QFormerConfig | dict | None = None,
                   copy_projection: bool = True) -> "VideoLlama":
        """A Video-LLaMA whose tower, image Q-Former and LM are copies of ``blip2``'s (e.g. ``zoo.load("blip2-tiny")``).
        ``video_qformer``: its config, or fields over :func:`video_qformer_config`; the video Q-Former is new.
        ``copy_projection`` starts the projection from BLIP-2's (the released code starts it from MiniGPT-4's)."""
        if not isinstance(blip2, Blip2):
            raise TypeError(f"blip2 must be a Blip2 (e.g. vlm_primer.zoo.load('blip2-tiny')), got "
                            f"{type(blip2).__name__}")
        vq = video_qformer if isinstance(video_qformer, QFormerConfig) else \
            video_qformer_config(blip2.cfg.qformer, **(video_qformer or {}))
        cfg = VideoLlamaConfig(vision=blip2.cfg.vision, qformer=blip2.cfg.qformer, text=blip2.cfg.text,
                               video_qformer=vq, num_frames=num_frames)
        model = cls(cfg).to(blip2.language_projection.weight.device)
        for name in ("vision_tower", "qformer", "language_model"):
            getattr(model, name).load_state_dict(getattr(blip2, name).state_dict())
        if copy_projection:
            if vq.dim != blip2.cfg.qformer.dim:
                raise ValueError(f"copy_projection needs a video Q-Former as wide as BLIP-2's Q-Former "
                                 f"({blip2.cfg.qformer.dim}), got {vq.dim}")
            model.language_projection.load_state_dict(blip2.language_projection.state_dict())
        return model.train(blip2.training)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The temporal embedding, the video Q-Former and the projection: what Video-LLaMA trains."""
        return (p for p in self.parameters() if p.requires_grad)

    def train(self, mode: bool = True) -> "VideoLlama":
        super().train(mode)
        self.vision_tower.eval()  # the frozen image encoders always run in eval mode, as in BLIP-2
        self.qformer.eval()
        return self

    # ------------------------------------------------------------------ the video branch

    def check_frames(self, frames: Any) -> torch.Tensor:
        """``frames`` must be a float tensor ``(B, T, channels, image_size, image_size)``, ``1 <= T <= num_frames``."""
        cfg = self.cfg
        shape = f"(B, T, {cfg.vision.channels}, {cfg.vision.image_size}, {cfg.vision.image_size})"
        if not isinstance(frames, torch.Tensor):
            raise TypeError(f"frames must be a torch.Tensor {shape}, got {type(frames).__name__}")
        if frames.ndim != 5:
            raise ValueError(f"frames must have shape {shape} (a batch of clips), got shape {tuple(frames.shape)}")
        if not 1 <= frames.shape[1] <= cfg.num_frames:
            raise ValueError(f"frames: {frames.shape[1]} frames per clip, but the model has temporal embeddings for "
                             f"1 to num_frames={cfg.num_frames}: sample fewer frames")
        check_images(frames.flatten(0, 1), channels=cfg.vision.channels, size=cfg.vision.image_size,
                     name="frames (each frame)", device=self.temporal_emb.weight.device)
        return frames

    def frame_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, T, 3, H, W)`` -> the image Q-Former's tokens of every frame ``(B, T, num_queries, dim)``, no
        temporal position yet: what BLIP-2's tower and Q-Former give each frame on its own."""
        frames = self.check_frames(frames)
        pixels = rearrange(frames, "b t c h w -> (b t) c h w").to(self.temporal_emb.weight.dtype)
        tokens = self.qformer(self.vision_tower(pixels).last_hidden_state)
        return rearrange(tokens, "(b t) q d -> b t q d", b=frames.shape[0])

    def add_frame_positions(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T, Q, D)`` -> ``(B, T * Q, D)``: frame ``t``'s tokens plus ``temporal_emb[t]``, frames concatenated."""
        positions = self.temporal_emb.weight[:frame_tokens.shape[1]]
        return rearrange(frame_tokens + positions[:, None], "b t q d -> b (t q) d")

    def video_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, T, 3, H, W)`` -> the soft prompt ``(B, video_qformer.num_queries, text_dim)``."""
        return self.language_projection(self.video_qformer(self.add_frame_positions(self.frame_tokens(frames))))

    # ------------------------------------------------------------------ the language model

    def embed(self, frames: torch.Tensor, input_ids: Any, attention_mask: Any = None
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``[video tokens; text embeddings]``, the attention mask over both (None: no padding) and the video tokens."""
        cfg = self.cfg
        frames = self.check_frames(frames)
        ids = check_tokens(input_ids, vocab_size=cfg.text.vocab_size, device=self.temporal_emb.weight.device)
        if len(ids) != len(frames):
            raise ValueError(f"{len(frames)} clips but {len(ids)} texts: one text per clip")
        nv = cfg.tokens_per_video
        if nv + ids.shape[1] > cfg.text.context_length:
            raise ValueError(f"input_ids: {nv} video tokens + {ids.shape[1]} text tokens = {nv + ids.shape[1]}, longer "
                             f"than the language model's context of {cfg.text.context_length}")
        mask = None
        if attention_mask is not None:
            mask = check_mask(attention_mask, shape=tuple(ids.shape), device=ids.device)
            mask = torch.cat([mask.new_ones(len(ids), nv), mask], dim=1)
        video = self.video_tokens(frames)
        embeds = torch.cat([video, self.language_model.tok_emb(ids).to(video.dtype)], dim=1)
        return embeds, mask, video

    def forward(self, frames: torch.Tensor, input_ids: Any, attention_mask: Any = None,
                labels: Any = None) -> VideoLlamaOutput:
        """Logits over ``[video tokens; text]``; with ``labels`` ``(B, L)`` aligned with ``input_ids`` (-100 on the
        prompt, so only the caption or answer is learned) also the next-token loss. The video positions are never
        targets."""
        embeds, mask, video = self.embed(frames, input_ids, attention_mask)
        if labels is not None:
            text = embeds.shape[1] - video.shape[1]
            labels = check_labels(labels, shape=(len(embeds), text), vocab_size=self.cfg.text.vocab_size,
                                  device=embeds.device)
            labels = torch.cat([labels.new_full((len(labels), video.shape[1]), -100), labels], dim=1)
        out = self.language_model(inputs_embeds=embeds, attention_mask=mask, labels=labels)
        return VideoLlamaOutput(logits=out.logits, loss=out.loss, video_tokens=video)

    def loss_items(self, batch: dict[str, Any]) -> int:
        """The text targets the loss of ``batch`` averages over, for the ``Trainer``'s gradient accumulation: every
        label that is not -100, the first text position's included (the last video token predicts it)."""
        return causal_lm_items(batch.get("labels"), first_is_target=True)

    @torch.no_grad()
    def generate(self, frames: torch.Tensor, input_ids: Any, max_new_tokens: int = 20, *,
                 attention_mask: Any = None, **sampling: Any) -> torch.Tensor:
        """The new token ids ``(B, T)`` after ``[video tokens; prompt]``: greedy by default, KV-cached
        (``sampling``: what :meth:`~vlm_primer.nn.DecoderLM.generate` takes, e.g. ``eos_token_id``, ``use_cache``)."""
        was_training = self.training
        self.eval()
        try:
            embeds, mask, _ = self.embed(frames, input_ids, attention_mask)
            return self.language_model.generate(inputs_embeds=embeds, attention_mask=mask,
                                                max_new_tokens=max_new_tokens, **sampling)
        finally:
            self.train(was_training)
