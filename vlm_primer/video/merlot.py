"""MERLOT (Zellers et al. 2021, "MERLOT: Multimodal Neural Script Knowledge Models"), small and faithful.

Explained in notebook 08, §Frame order: MERLOT and VideoOFA. Each frame goes through an image encoder alone and
gives one vector (in the paper its ``[CLS]``); a joint encoder reads
``[frame vectors + time embeddings ; text tokens]``. Three objectives, summed:

* **frame-local-text contrastive**: frame ``t`` of clip ``b`` is matched with the text of the same time step
  (``local_ids[b, t]``); CLIP's symmetric InfoNCE (:class:`~vlm_primer.contrastive.losses.ClipLoss`) over all
  ``B*T`` frames and texts of the batch;
* **MLM** on the text in the joint encoder, which sees every frame (BERT's corruption,
  :meth:`Merlot.mask_text`);
* **temporal reordering**: a fraction of each clip's frames is shuffled (:func:`~vlm_primer.video.order.
  shuffle_frames`) and each of their time embeddings is replaced by an "unknown time" embedding of its own (the
  paper's ``[image_unk_0]``, ``[image_unk_1]``, ...; :meth:`Merlot.time_ids`), so the shuffled frames stay apart
  but their slots say nothing of their times; for every pair of shuffled frames a classifier on the two frames'
  joint-encoder states says which came first (:class:`~vlm_primer.video.order.PairwiseOrderHead`).

Simplifications, each a size choice: the frame encoder is a plain :class:`~vlm_primer.nn.ViT` (the paper's is a
ViT-ResNet hybrid; the ``tiny`` preset mean-pools its tokens instead of reading ``[CLS]``, see the preset), each
frame enters the joint encoder as its one pooled vector (the paper also feeds a pooled grid of patch features),
each local text goes through a small text encoder of its own, the three losses have fixed weights (``*_weight``),
and every clip shuffles the same fraction of its frames (the reference code shuffles none with probability 1/2 and
otherwise a uniformly drawn number, 2 to ``T``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.contrastive.losses import ClipLoss
from vlm_primer.masking.flava import masked_prediction
from vlm_primer.masking.masks import bert_mask_tokens
from vlm_primer.nn import (BertLMHead, TextConfig, TextTransformer, Transformer, ViT, ViTConfig, init_weights,
                           learned_positions)
from vlm_primer.validate import as_tensor, check_int, check_labels, check_mask, check_same_batch, check_tokens
from vlm_primer.video.order import (FrameShuffle, PairwiseOrderHead, check_frames, flatten_frames, gather_frames,
                                    order_loss, pairwise_order_targets, shuffle_frames)

__all__ = ["Merlot", "MerlotConfig", "MerlotOutput", "train_merlot"]

# Tiny frames: mean-pooled tokens and fixed 2-D sin-cos positions. With a [CLS] and learned positions a from-scratch
# ViT this small takes hundreds of steps to start localising objects, and frame order needs exactly that.
_TINY_FRAMES = dict(image_size=32, patch_size=8, dim=64, depth=1, heads=4, pool="mean", pos_emb="sincos")
_LOCAL_TEXT = dict(vocab_size=814, causal=False, pool="eos", eos_token_id=3, pad_token_id=0)


@dataclass
class MerlotConfig(PresetConfig):
    """The frame encoder (``vision``), the local-text encoder (``text``; its vocabulary is the joint encoder's too),
    the joint encoder's shape, the contrastive space, the shuffled fraction and BERT's masking ids."""

    vision: ViTConfig = field(default_factory=lambda: ViTConfig(**_TINY_FRAMES))
    text: TextConfig = field(default_factory=lambda: TextConfig(**MerlotConfig.PRESETS["tiny"]["text"]))
    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    context_length: int = 32        # tokens of the joint text
    max_frames: int = 8
    embed_dim: int = 64
    init_logit_scale: float = math.log(1 / 0.07)
    max_logit_scale: float = math.log(100)
    shuffle_fraction: float = 0.5
    mask_token_id: int = 4          # the project tokenizer's <mask>
    special_token_ids: tuple[int, ...] = (0, 1, 2, 3)
    mlm_prob: float = 0.15
    contrastive_weight: float = 1.0
    mlm_weight: float = 1.0
    order_weight: float = 1.0

    PRESETS: ClassVar[dict] = {
        # 32 px Shapes World clips of up to 8 frames: trains in seconds on a CPU
        "tiny": dict(vision=_TINY_FRAMES, text=dict(_LOCAL_TEXT, context_length=16, dim=64, depth=1, heads=4)),
        # The paper: 16 frames at 384x704 through a ResNet-ViT hybrid, a ViT-Base-sized joint encoder (768 wide,
        # 12 layers). Our ViT takes square frames: 384x384, 16 px patches.
        "base": dict(vision=dict(ViTConfig.PRESETS["base"], image_size=384),
                     text=dict(_LOCAL_TEXT, context_length=32, dim=768, depth=4, heads=12),
                     dim=768, depth=12, heads=12, context_length=512, max_frames=16, embed_dim=768),
    }
    BOUNDS: ClassVar[dict] = dict(dim=">0", depth=">0", heads=">0", mlp_ratio="(0, 64]", context_length=">0",
                                  max_frames="[1, 1024]", embed_dim=">0", max_logit_scale=">=0",
                                  shuffle_fraction="[0, 1]", mask_token_id=">=0", mlm_prob="[0, 1]",
                                  contrastive_weight=">=0", mlm_weight=">=0", order_weight=">=0")

    def validate(self) -> None:
        self.coerce_parts(vision=ViTConfig, text=TextConfig)
        if self.dim % self.heads:
            raise ValueError(f"MerlotConfig.dim={self.dim} must be divisible by heads={self.heads}")
        if self.vision.pool == "none":
            raise ValueError("MERLOT reads one vector per frame: vision.pool must not be 'none'")
        if self.mask_token_id >= self.text.vocab_size:
            raise ValueError(f"MerlotConfig.mask_token_id={self.mask_token_id} is outside the vocabulary "
                             f"[0, {self.text.vocab_size})")
        if not 0 <= self.init_logit_scale <= self.max_logit_scale:
            raise ValueError(f"init_logit_scale={self.init_logit_scale} must lie in [0, {self.max_logit_scale}]")


@dataclass
class MerlotOutput:
    loss: torch.Tensor | None                  # the weighted sum of the losses computed
    contrastive_loss: torch.Tensor | None      # frames vs local texts (None without local_ids)
    mlm_loss: torch.Tensor | None              # None without mlm_labels
    order_loss: torch.Tensor | None            # None with shuffle=False
    order_logits: torch.Tensor                 # (P, 2) one row per pair of shuffled frames
    order_labels: torch.Tensor                 # (P,) 1: the first frame of the pair is the earlier one
    frame_states: torch.Tensor                 # (B, T, dim) the joint encoder at the frames' slots
    text_states: torch.Tensor                  # (B, L, dim)
    shuffle: FrameShuffle                      # perm (B, T) and shuffled (B, T); the identity when shuffle=False
    frame_embeds: torch.Tensor | None = None   # (B*T, embed_dim) L2-normalised, in time order
    text_embeds: torch.Tensor | None = None    # (B*T, embed_dim) L2-normalised
    logit_scale: torch.Tensor | None = None    # exp(logit_scale): the inverse temperature of the contrastive loss


class Merlot(nn.Module):
    """MERLOT: ``frame_encoder`` (ViT), ``text_encoder`` (local texts), the joint encoder (``tok_emb``, ``pos_emb``,
    ``frame_in``, ``time_emb``: ``max_frames`` times, then ``max_frames`` "unknown times", ``joint``, ``norm``) and
    the heads."""

    def __init__(self, cfg: MerlotConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else MerlotConfig()
        self.cfg = cfg
        self.frame_encoder = ViT(cfg.vision)
        self.text_encoder = TextTransformer(cfg.text)
        self.frame_proj = nn.Linear(cfg.vision.dim, cfg.embed_dim, bias=False)
        self.text_proj = nn.Linear(cfg.text.dim, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.loss_fn = ClipLoss()
        self.tok_emb = nn.Embedding(cfg.text.vocab_size, cfg.dim)
        self.pos_emb = learned_positions(cfg.context_length, cfg.dim)
        self.frame_in = nn.Linear(cfg.vision.dim, cfg.dim)
        self.time_emb = nn.Embedding(2 * cfg.max_frames, cfg.dim)   # rows max_frames + k: [image_unk_k]
        self.joint = Transformer(cfg.depth, cfg.dim, cfg.heads, cfg.mlp_ratio)
        self.norm = nn.LayerNorm(cfg.dim)
        for m in (self.frame_proj, self.text_proj, self.tok_emb, self.time_emb, self.joint):
            m.apply(init_weights)
        # frame_in and the order head keep PyTorch's default init: with N(0, 0.02) in every layer on the way from
        # the frame encoder to the order logits, the order loss sits at log 2 for hundreds of steps.
        self.mlm_head = BertLMHead(self.tok_emb)
        self.order_head = PairwiseOrderHead(cfg.dim)

    # ---------------------------------------------------------------- the parts

    def frame_vectors(self, frames: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, T, 3, H, W)`` -> each frame's pooled vector ``(B, T, vision.dim)``, every frame alone."""
        pooled = self.frame_encoder(flatten_frames(frames)).pooled
        return rearrange(pooled, "(b t) d -> b t d", b=frames.shape[0])

    def encode_local_text(self, local_ids: torch.Tensor, local_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Local texts ``(B, T, Lt)`` -> L2-normalised embeddings ``(B*T, embed_dim)``."""
        flat = lambda x: None if x is None else rearrange(x, "b t l -> (b t) l")  # noqa: E731
        return F.normalize(self.text_proj(self.text_encoder(flat(local_ids), flat(local_mask)).pooled), dim=-1)

    def time_ids(self, unknown: torch.Tensor) -> torch.Tensor:
        """The rows of ``time_emb`` for slots ``(B, T)``: slot ``t`` reads time ``t``, or where ``unknown`` is true
        the unknown time ``max_frames + t`` (the paper's ``[image_unk_t]``). The reference code gives each shuffled
        frame a distinct unknown row, picked at random; here the frames were permuted uniformly among the shuffled
        slots before they got their slots' rows, which hides their times just as well (a frame from time 2 is as
        likely to sit in any shuffled slot)."""
        if unknown.ndim != 2 or not 1 <= unknown.shape[1] <= self.cfg.max_frames:
            raise ValueError(f"unknown must be (B, T) with 1 <= T <= max_frames={self.cfg.max_frames} (slot T would "
                             f"read an unknown-time row), got {tuple(unknown.shape)}")
        b, t = unknown.shape
        time = torch.arange(t, device=unknown.device).expand(b, t)
        return torch.where(unknown.bool(), time + self.cfg.max_frames, time)

    def joint_states(self, frame_vectors: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                     unknown: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The joint encoder over ``[frame_in(frame vectors) + time ; tokens + positions]`` -> ``(frame states
        (B, T, dim), text states (B, L, dim))``. Slot ``t`` gets time embedding ``t``, or its unknown-time embedding
        where ``unknown`` ``(B, T)`` is true (:meth:`time_ids`). Nothing else tells the slots apart."""
        b, t = frame_vectors.shape[:2]
        if unknown is None:
            unknown = torch.zeros(b, t, dtype=torch.bool, device=frame_vectors.device)
        x_frames = self.frame_in(frame_vectors) + self.time_emb(self.time_ids(unknown.to(frame_vectors.device)))
        x_text = self.tok_emb(input_ids) + self.pos_emb[: input_ids.shape[1]]
        keys = None
        if attention_mask is not None:
            keys = torch.cat([torch.ones(b, t, dtype=torch.bool, device=x_text.device), attention_mask.bool()], dim=1)
        h, _ = self.joint(torch.cat([x_frames, x_text], dim=1), key_padding_mask=keys)
        h = self.norm(h)
        return h[:, :t], h[:, t:]

    def mask_text(self, input_ids: Any, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT's corruption of ``mlm_prob`` of the words: ``(masked input_ids, mlm_labels)``."""
        cfg = self.cfg
        return bert_mask_tokens(input_ids, mask_token_id=cfg.mask_token_id, vocab_size=cfg.text.vocab_size,
                                prob=cfg.mlm_prob, special_ids=cfg.special_token_ids, generator=generator)

    # ---------------------------------------------------------------- pre-training

    def forward(self, frames: torch.Tensor, input_ids: Any, attention_mask: Any = None, *, local_ids: Any = None,
                local_mask: Any = None, mlm_labels: Any = None, shuffle: bool = True,
                generator: torch.Generator | None = None) -> MerlotOutput:
        """``frames`` ``(B, T, 3, H, W)``; ``input_ids`` ``(B, L)`` the clip's text (already masked when
        ``mlm_labels`` ``(B, L)`` are given, see :meth:`mask_text`); ``local_ids`` ``(B, T, Lt)`` the text at each
        frame's time step; ``shuffle``: shuffle ``shuffle_fraction`` of the frames and learn their order."""
        cfg, device = self.cfg, self.tok_emb.weight.device
        v = cfg.vision
        check_frames(frames, channels=v.channels, size=v.image_size, max_frames=cfg.max_frames, device=device)
        ids = check_tokens(input_ids, max_len=cfg.context_length, vocab_size=cfg.text.vocab_size, device=device)
        b, t = check_same_batch(frames=frames, input_ids=ids), frames.shape[1]
        mask = None if attention_mask is None else check_mask(attention_mask, shape=tuple(ids.shape), device=device)
        vectors = self.frame_vectors(frames)
        losses: dict[str, torch.Tensor] = {}
        frame_emb = text_emb = scale = None
        if local_ids is not None:
            local_ids, local_mask = self._check_local(local_ids, local_mask, b, t, device)
            frame_emb = F.normalize(self.frame_proj(rearrange(vectors, "b t d -> (b t) d")), dim=-1)
            text_emb = self.encode_local_text(local_ids, local_mask)
            scale = self.logit_scale.exp()
            losses["contrastive"] = self.loss_fn(frame_emb, text_emb, scale)
        sh = shuffle_frames(b, t, cfg.shuffle_fraction, generator) if shuffle else \
            FrameShuffle(torch.arange(t).repeat(b, 1), torch.zeros(b, t, dtype=torch.bool))
        sh = FrameShuffle(sh.perm.to(device), sh.shuffled.to(device))
        frame_states, text_states = self.joint_states(gather_frames(vectors, sh.perm), ids, mask, sh.shuffled)
        if mlm_labels is not None:
            labels = check_labels(mlm_labels, shape=tuple(ids.shape), vocab_size=cfg.text.vocab_size,
                                  name="mlm_labels", device=device)
            losses["mlm"] = masked_prediction(self.mlm_head, text_states, labels)[1]
        pairs = pairwise_order_targets(sh.perm, sh.shuffled)
        logits = self.order_head(frame_states, pairs)
        if shuffle:
            losses["order"] = order_loss(logits, pairs.labels)
        weights = {"contrastive": cfg.contrastive_weight, "mlm": cfg.mlm_weight, "order": cfg.order_weight}
        loss = sum(weights[k] * value for k, value in losses.items()) if losses else None
        return MerlotOutput(loss, losses.get("contrastive"), losses.get("mlm"), losses.get("order"), logits,
                            pairs.labels, frame_states, text_states, sh, frame_emb, text_emb, scale)

    @torch.no_grad()
    def post_step(self) -> None:
        """Clamp ``logit_scale`` to ``[0, max_logit_scale]``, as CLIP does."""
        self.logit_scale.clamp_(0.0, self.cfg.max_logit_scale)

    def _check_local(self, local_ids: Any, local_mask: Any, b: int, t: int, device: torch.device
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        ids = as_tensor(local_ids, "local_ids", "a (B, T, Lt) tensor of token ids, one text per frame")
        if ids.ndim != 3 or tuple(ids.shape[:2]) != (b, t):
            raise ValueError(f"local_ids must have shape (B, T, Lt) = ({b}, {t}, Lt): one text per frame, got "
                             f"{tuple(ids.shape)}")
        flat = check_tokens(rearrange(ids, "b t l -> (b t) l"), max_len=self.cfg.text.context_length,
                            vocab_size=self.cfg.text.vocab_size, name="local_ids", device=device)
        mask = None
        if local_mask is not None:
            lm = as_tensor(local_mask, "local_mask", "a (B, T, Lt) tensor of 0/1")
            if lm.ndim != 3:
                raise ValueError(f"local_mask must have the shape of local_ids {tuple(ids.shape)}, "
                                 f"got {tuple(lm.shape)}")
            mask = check_mask(rearrange(lm, "b t l -> (b t) l"), shape=tuple(flat.shape), name="local_mask",
                              like="local_ids", device=device)
            mask = rearrange(mask, "(b t) l -> b t l", b=b)
        return rearrange(flat, "(b t) l -> b t l", b=b), mask


def train_merlot(model: Merlot, frames: torch.Tensor, input_ids: Any, attention_mask: Any = None, *, steps: int = 300,
                 batch: int = 32, lr: float = 1e-3, warmup: int = 30, seed: int = 0) -> Merlot:
    """Train ``model`` on clips ``frames`` ``(N, T, 3, H, W)`` (standardised pixels) and their texts: ``steps``
    AdamW steps (no weight decay, linear warmup over ``warmup`` steps) on ``batch`` clips drawn with replacement.
    One generator seeded with ``seed`` draws the batches and the frames to shuffle, so a run is a function of its
    arguments. Returns the model in eval mode. Notebook 08, §Frame order, trains its reordering model with it."""
    for name, value in (("steps", steps), ("batch", batch), ("warmup", warmup)):
        check_int(value, name)
    if not isinstance(frames, torch.Tensor) or frames.ndim != 5 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty (N, T, 3, H, W) tensor of clips, got "
                         f"{getattr(frames, 'shape', type(frames).__name__)}")
    ids = as_tensor(input_ids, "input_ids", "a (N, L) tensor of token ids, one text per clip")
    mask = None if attention_mask is None else as_tensor(attention_mask, "attention_mask", "a (N, L) tensor of 0/1")
    if len(ids) != len(frames) or (mask is not None and len(mask) != len(frames)):
        raise ValueError(f"{len(frames)} clips but {len(ids)} texts"
                         + ("" if mask is None else f" and {len(mask)} masks") + ": one text per clip")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(frames), (batch,), generator=g)
        out = model(frames[idx], ids[idx], None if mask is None else mask[idx], generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        schedule.step()
    return model.eval()
