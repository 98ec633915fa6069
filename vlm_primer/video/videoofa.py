"""VideoOFA-style video stage (Chen et al. 2023, "VideoOFA: Two-Stage Pre-Training for Video-to-Text Generation").

Explained in notebook 08, §Frame order: MERLOT and VideoOFA. VideoOFA's recipe is two stages: an image-text generative
model first, then an intermediate **video stage** that teaches it video skills before fine-tuning. Here the image
model is chapter 04's BLIP (:class:`~vlm_primer.generative.Blip`), chosen because its decoder cross-attends to a
sequence of image tokens of any length, so a video is just a longer sequence. :class:`VideoCaptioner` *wraps* the
captioner (its weights are the captioner's own tensors, nothing is copied) and adds only a temporal embedding per
frame and a frame-order head:

* **video tokens**: every frame through BLIP's ViT alone, plus the temporal embedding of its slot, all frames'
  tokens concatenated: ``(B, T * (1 + N), dim)``. The temporal table starts at zero, so a one-frame video is
  exactly the image the captioner was trained on;
* **video captioning**: BLIP's decoder loss on the video tokens (``[Decode]`` + caption, label smoothing);
* **video-text matching**: BLIP's ITM head on its image-grounded encoder over the video tokens, each video
  against its caption and one caption of another video of the batch (a small two-way head when the captioner was
  built without heads);
* **frame-order modelling** (FOM): the frames are shuffled (``shuffle_fraction`` of them,
  :func:`~vlm_primer.video.order.shuffle_frames`), each frame's ``[CLS]`` plus the temporal embedding of the slot
  it now sits in goes through :class:`~vlm_primer.video.order.FramePositionHead`, which names each frame's original
  index (cross-entropy).

Simplifications: VideoOFA builds on OFA and phrases every task as text generation; here matching and frame order have
classification heads, and matching uses random in-batch negatives rather than hard ones. The order head reads the
frames' ViT ``[CLS]`` tokens directly, so the frame-order loss trains the ViT, the temporal table and the head, not
the captioner's cross-modal layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.generative.blip import BLIP_VIT, Blip, BlipConfig
from vlm_primer.generative.captioner import Captioner
from vlm_primer.generative.losses import hard_negatives
from vlm_primer.generative.med import MEDConfig
from vlm_primer.nn import ViTConfig
from vlm_primer.validate import check_caption_pairs
from vlm_primer.video.order import (FramePositionHead, check_frames, flatten_frames, gather_frames, order_loss,
                                    position_targets, shuffle_frames)

__all__ = ["VideoCaptioner", "VideoCaptionerConfig", "VideoCaptionerOutput"]

_TINY_BLIP = dict(vision=dict(ViTConfig.PRESETS["tiny"], **BLIP_VIT, image_size=32), text=MEDConfig.PRESETS["tiny"],
                  embed_dim=32)


@dataclass
class VideoCaptionerConfig(PresetConfig):
    """The wrapped captioner's config (``captioner``: a :class:`~vlm_primer.generative.BlipConfig` or a dict of its
    fields), the most frames a video may have, the shuffled fraction for FOM, the FOM head's depth and the weights
    of the three losses."""

    captioner: BlipConfig = field(default_factory=lambda: BlipConfig(**_TINY_BLIP))
    max_frames: int = 8
    shuffle_fraction: float = 1.0
    order_depth: int = 1
    caption_weight: float = 1.0
    match_weight: float = 1.0
    order_weight: float = 1.0

    PRESETS: ClassVar[dict] = {
        # BLIP-tiny's shapes at 32 px (17 tokens a frame), up to 8 frames
        "tiny": dict(captioner=_TINY_BLIP, max_frames=8),
        # BLIP-base (ViT-B/16 at 224 px, BERT-base MED) over up to 16 frames
        "base": dict(captioner=BlipConfig.PRESETS["base"], max_frames=16),
    }
    BOUNDS: ClassVar[dict] = dict(max_frames="[1, 1024]", shuffle_fraction="[0, 1]", order_depth=">0",
                                  caption_weight=">=0", match_weight=">=0", order_weight=">=0")

    def validate(self) -> None:
        self.coerce_parts(captioner=BlipConfig)


@dataclass
class VideoCaptionerOutput:
    loss: torch.Tensor                   # the weighted sum of the losses computed
    caption_loss: torch.Tensor           # BLIP's decoder loss on the (ordered) video
    match_loss: torch.Tensor | None      # None for a batch of one video (no other caption to mismatch with)
    order_loss: torch.Tensor | None      # None with shuffle=False
    match_logits: torch.Tensor | None    # (2B, 2): B matching pairs, then B mismatched ones
    order_logits: torch.Tensor | None    # (B, T, T): scores of each slot's original index
    order_labels: torch.Tensor | None    # (B, T): original index of each shuffled slot, -100 elsewhere
    perm: torch.Tensor | None            # (B, T): slot t holds original frame perm[b, t]


class VideoCaptioner(Captioner, nn.Module):
    """A BLIP captioner adapted to video. ``captioner`` is the wrapped :class:`~vlm_primer.generative.Blip` (given or
    built from ``cfg.captioner``); ``time_emb`` ``(max_frames, dim)`` the temporal embeddings; ``order_head`` the FOM
    head; ``match_head`` only when the captioner has no ITM head. :meth:`generate` and :meth:`captions`
    (:class:`~vlm_primer.generative.captioner.Captioner`) caption videos ``(B, T, 3, H, W)``."""

    def __init__(self, cfg: VideoCaptionerConfig | None = None, captioner: Blip | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else VideoCaptionerConfig()
        if captioner is None:
            captioner = Blip(cfg.captioner)
        elif not isinstance(captioner, Blip):
            raise TypeError(f"captioner must be a Blip (its decoder cross-attends to any number of image tokens), "
                            f"got {type(captioner).__name__}")
        else:
            cfg = cfg.replace(captioner=captioner.cfg)   # the wrapped model's shapes are the truth
        self.cfg, self.captioner = cfg, captioner
        v = captioner.cfg.vision
        self.time_emb = nn.Parameter(torch.zeros(cfg.max_frames, v.dim))
        self.order_head = FramePositionHead(v.dim, cfg.max_frames, heads=v.heads, depth=cfg.order_depth)
        self.match_head = None if captioner.cfg.heads else nn.Linear(captioner.cfg.text.dim, 2)

    # ---------------------------------------------------------------- video tokens

    def frame_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """Checked clips ``(B, T, 3, H, W)`` -> every frame's ViT tokens ``(B, T, 1 + N, dim)``, each frame alone."""
        v = self.captioner.cfg.vision
        check_frames(frames, channels=v.channels, size=v.image_size, max_frames=self.cfg.max_frames,
                     device=self.time_emb.device)
        tokens = self.captioner.image_features(flatten_frames(frames))
        return rearrange(tokens, "(b t) n d -> b t n d", b=frames.shape[0])

    def video_tokens(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        """Frame tokens ``(B, T, N, dim)`` in slot order -> ``(B, T * N, dim)``, slot ``t``'s temporal embedding
        added to each of its tokens."""
        t = frame_tokens.shape[1]
        return rearrange(frame_tokens + self.time_emb[:t, None], "b t n d -> b (t n) d")

    def image_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Videos -> the tokens the captioner's decoder cross-attends to (what :meth:`generate` reads)."""
        return self.video_tokens(self.frame_tokens(frames))

    def match_logits(self, video: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """Match / no-match logits ``(B, 2)`` of (video tokens, caption) pairs."""
        blip = self.captioner
        if self.match_head is None:
            return blip.itm_logits(video, input_ids, attention_mask)
        ids = input_ids.clone()
        ids[:, 0] = blip.cfg.text.enc_token_id
        return self.match_head(blip.text(ids, attention_mask, video, mode="grounded")[:, 0])

    # ---------------------------------------------------------------- the video stage

    def forward(self, frames: torch.Tensor, input_ids: Any, attention_mask: Any = None, *, shuffle: bool = True,
                same: torch.Tensor | None = None, generator: torch.Generator | None = None) -> VideoCaptionerOutput:
        """Videos ``(B, T, 3, H, W)`` with their captions ``input_ids`` ``(B, L)`` (``<bos>`` caption ``<eos>``; the
        first token is replaced by each task's); ``same`` ``(B, B)`` marks videos whose captions are equal (never
        mismatched with each other; by default, equal rows of ``input_ids``)."""
        cfg, blip = self.cfg, self.captioner
        tokens = self.frame_tokens(frames)
        b, t = tokens.shape[:2]
        if hasattr(input_ids, "__len__") and len(input_ids) != b:
            raise ValueError(f"mismatched batch sizes: frames={b}, input_ids={len(input_ids)} (one caption per video)")
        ids, mask = check_caption_pairs(input_ids, attention_mask, images=b, vocab_size=blip.cfg.text.vocab_size,
                                        device=self.time_emb.device, max_len=blip.cfg.text.max_positions,
                                        model="VideoCaptioner")
        video = self.video_tokens(tokens)
        # video captioning: BLIP's decoder loss on the ordered video
        caption = blip.lm_loss(video, ids, mask)
        losses = {"caption": caption}
        # frame-order modelling: each shuffled frame's original index
        order_logits = order_labels = perm = None
        if shuffle:
            perm, shuffled = (x.to(ids.device) for x in shuffle_frames(b, t, cfg.shuffle_fraction, generator))
            order_logits = self.order_head(gather_frames(tokens[:, :, 0], perm) + self.time_emb[:t])
            order_labels = position_targets(perm, shuffled)
            losses["order"] = order_loss(order_logits, order_labels)
        # video-text matching: each video with its caption and with another video's
        match_logits = None
        if b > 1:
            same = (ids[:, None] == ids[None]).all(-1) if same is None else same
            neg = hard_negatives(torch.zeros(b, b, device=ids.device), same, generator)
            match_logits = self.match_logits(torch.cat([video, video]), torch.cat([ids, ids[neg]]),
                                             torch.cat([mask, mask[neg]]))
            labels = torch.cat([torch.ones(b), torch.zeros(b)]).long().to(match_logits.device)
            losses["match"] = F.cross_entropy(match_logits, labels)
        weights = {"caption": cfg.caption_weight, "match": cfg.match_weight, "order": cfg.order_weight}
        loss = sum(weights[k] * value for k, value in losses.items())
        return VideoCaptionerOutput(loss, caption, losses.get("match"), losses.get("order"), match_logits,
                                    order_logits, order_labels, perm)

    # ---------------------------------------------------------------- captioning (Captioner), through the captioner

    def caption_ids(self) -> tuple[list[int], int, int, int]:
        return self.captioner.caption_ids()

    def stepper(self, image: torch.Tensor):
        return self.captioner.stepper(image)
