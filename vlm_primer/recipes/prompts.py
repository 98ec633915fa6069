"""Prompt and adapter tuning of a frozen CLIP (survey §3.7): CoOp, VPT and CLIP-Adapter.

Chapter 06b (survey §3.7) explains it. LoRA (:mod:`vlm_primer.recipes.peft`) adds trainable updates to the weights;
the methods here leave every CLIP weight frozen and learn a few new *inputs* or a small *head* instead:

* **CoOp** (Zhou et al. 2022, "Learning to Prompt for Vision-Language Models"): :class:`CoOp` replaces the
  hand-written words of a prompt ("a photo of a") by ``M`` learned vectors ``[V]_1 .. [V]_M`` in the text tower's
  word-embedding space, so class ``c`` is described by ``[V]_1 .. [V]_M <name_c> <eos>``. *Unified* context shares
  one set across classes (``M·d`` numbers), *class-specific* context learns one set per class (``C·M·d``).
  Initialised from the embeddings of "a photo of a", CoOp starts exactly at zero-shot CLIP with that prompt (with
  class-specific context every class starts from that phrase; CoOp's code then uses unified context). The class
  name always ends the prompt (CoOp also tries it in the middle and at the front).
* **VPT** (Jia et al. 2022, "Visual Prompt Tuning"): :class:`VPT` inserts ``P`` learned tokens into the image
  tower's sequence after the CLS token, ``[CLS, p_1 .. p_P, patches]``. *Shallow*: only at the input of the first
  block (``P·d``); *deep*: a fresh set at the input of every block, replacing what the previous block made of the
  last set (``L·P·d``). The image is still pooled where the tower pools it (the CLS token). The prompts enter
  after CLIP's ``ln_pre``, as VPT's plain ViT (which has none) sees them; CLIP-based code such as MaPLe's puts
  shallow prompts before ``ln_pre``.
* **CLIP-Adapter** (Gao et al. 2021): :class:`CLIPAdapter` puts a bottleneck MLP ``A`` (``d -> d/4 -> d``, ReLU
  after each layer, no bias, as in the paper's code) on the image embedding and blends it with the original:
  ``f' = α·A(f) + (1-α)·f`` (``α = 0.2`` for images in the paper); optionally a second one on the class (text)
  embeddings. ``2·d²/4`` numbers per adapter.

All three are compared with the frozen CLIP's zero-shot classifier: :func:`class_text_embeddings` builds it from
class names and a template, :func:`zero_shot_logits` scores images against it; each method returns the same
``(B, C)`` logits ``= exp(logit_scale) · cos(image, class)``, so one cross-entropy trains any of them.
:func:`~vlm_primer.recipes.peft.trainable_parameters` counts what is left to train.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import repeat
from torch import nn

from vlm_primer.contrastive.clip import CLIP
from vlm_primer.evaluation.zeroshot import build_classifier
from vlm_primer.nn.pooling import masked_mean
from vlm_primer.nn.text import pool_positions
from vlm_primer.nn.vit import ViTOutput
from vlm_primer.recipes.peft import trainable_parameters
from vlm_primer.text import Tokenizer
from vlm_primer.validate import check_finite, check_images, check_int

__all__ = ["CLIPAdapter", "CoOp", "VPT", "class_text_embeddings", "trainable_parameters", "zero_shot_logits"]


# --- checks and shared pieces ----------------------------------------------------------------------------------

def _frozen_clip(clip) -> CLIP:
    """``clip`` with every parameter frozen (the methods below train only what they add)."""
    if not isinstance(clip, CLIP):
        raise TypeError(f"clip must be a vlm_primer.contrastive.CLIP, got {type(clip).__name__}")
    for p in clip.parameters():
        p.requires_grad_(False)
    return clip


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def _check_ratio(value, name: str) -> float:
    check_finite(value, name)
    if isinstance(value, torch.Tensor) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1] (the residual ratio), got {value!r}")
    return float(value)


def _check_class_names(class_names) -> list[str]:
    if isinstance(class_names, str) or not isinstance(class_names, Sequence) or len(class_names) == 0:
        raise ValueError(f"class_names must be a non-empty list of strings, got {class_names!r}")
    for i, name in enumerate(class_names):
        if not isinstance(name, str):
            raise TypeError(f"class_names[{i}] must be a str, got {type(name).__name__}")
        if not name.strip():
            raise ValueError(f"class_names[{i}]={name!r} is blank: it tokenises to no word, a class needs a name")
    return list(class_names)


def _check_tokenizer(tokenizer) -> Tokenizer:
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"tokenizer must be a vlm_primer.text.Tokenizer, got {type(tokenizer).__name__}")
    return tokenizer


def _check_class_embeds(class_embeds, embed_dim: int, device: torch.device) -> torch.Tensor:
    if not isinstance(class_embeds, torch.Tensor) or not class_embeds.is_floating_point():
        raise TypeError(f"class_embeds must be a float tensor (C, {embed_dim}) from class_text_embeddings, "
                        f"got {type(class_embeds).__name__}")
    if class_embeds.ndim != 2 or class_embeds.shape[0] == 0 or class_embeds.shape[1] != embed_dim:
        raise ValueError(f"class_embeds must have shape (C, {embed_dim}) with C >= 1, got {tuple(class_embeds.shape)}")
    check_finite(class_embeds, "class_embeds")
    return class_embeds.to(device)


def _logits(logit_scale: torch.Tensor, image_embeds: torch.Tensor, class_embeds: torch.Tensor) -> torch.Tensor:
    """``exp(logit_scale) · cos(image, class)`` ``(B, C)``, the CLIP classifier every method here ends in."""
    return logit_scale.exp() * F.normalize(image_embeds, dim=-1) @ F.normalize(class_embeds, dim=-1).t()


# --- the frozen CLIP's zero-shot classifier --------------------------------------------------------------------

def class_text_embeddings(clip: CLIP, tokenizer: Tokenizer, class_names: Sequence[str],
                          template: str = "a photo of a {}") -> torch.Tensor:
    """The frozen CLIP's zero-shot classifier ``(C, embed_dim)``: ``template`` filled with each class name, encoded
    by the text tower, L2-normalised (chapter 02's :func:`~vlm_primer.evaluation.build_classifier` with one
    template). The hand-written baseline that CoOp learns to replace. Chapter 06b (survey §3.7) explains it."""
    if not isinstance(clip, CLIP):
        raise TypeError(f"clip must be a vlm_primer.contrastive.CLIP, got {type(clip).__name__}")
    class_names = _check_class_names(class_names)
    if not isinstance(template, str):
        raise TypeError(f"template must be a str such as 'a photo of a {{}}', got {type(template).__name__}")
    if "{}" not in template:
        raise ValueError(f"template must be a string with a '{{}}' slot for the class name, got {template!r}")
    return build_classifier(clip, _check_tokenizer(tokenizer), class_names, [template])


def zero_shot_logits(clip: CLIP, pixel_values: torch.Tensor, class_embeds: torch.Tensor) -> torch.Tensor:
    """Class logits ``(B, C)`` of the frozen CLIP: ``exp(logit_scale) · cos(image, class_embeds)``, with
    ``class_embeds`` from :func:`class_text_embeddings`. The baseline the three methods are compared with.
    Chapter 06b (survey §3.7) explains it."""
    if not isinstance(clip, CLIP):
        raise TypeError(f"clip must be a vlm_primer.contrastive.CLIP, got {type(clip).__name__}")
    class_embeds = _check_class_embeds(class_embeds, clip.cfg.embed_dim, clip.logit_scale.device)
    return _logits(clip.logit_scale, clip.encode_image(pixel_values), class_embeds)


# --- CoOp: learned context words in the text tower -------------------------------------------------------------

class CoOp(nn.Module):
    """Context Optimization (Zhou et al. 2022): learned prompt vectors in front of each class name; CLIP frozen.

    Class ``c``'s text is ``[V]_1 .. [V]_M <name_c> <eos>``: the ``M = n_ctx`` context vectors take the place of
    word embeddings, then the tower adds its positions and runs its own blocks, final norm and pooling (at
    ``<eos>``, which now sits at ``M + len(name_c)``). ``class_specific=False`` learns one context shared by all
    classes ``(M, d)``, ``True`` one per class ``(C, M, d)``. ``init`` (a phrase such as ``"a photo of a"``) starts
    the context at that phrase's word embeddings, so the fresh model equals zero-shot CLIP with the prompt
    ``"{init} {name}"``; ``init=None`` draws it from ``N(0, 0.02²)`` as the paper does. ``n_ctx`` defaults to the
    number of tokens of ``init`` (4 for "a photo of a"), or 4 without ``init``. :meth:`forward` returns class logits
    ``(B, C)``, :meth:`class_embeddings` the normalised class text embeddings ``(C, embed_dim)``.
    Chapter 06b (survey §3.7) explains it.
    """

    def __init__(self, clip: CLIP, class_names: Sequence[str], tokenizer: Tokenizer, n_ctx: int | None = None,
                 class_specific: bool = False, init: str | None = "a photo of a") -> None:
        super().__init__()
        self.clip = _frozen_clip(clip)
        self.class_names = _check_class_names(class_names)
        tokenizer = _check_tokenizer(tokenizer)
        self.class_specific = _check_bool(class_specific, "class_specific")
        if init is not None and not isinstance(init, str):
            raise TypeError(f"init must be a phrase (str) or None, got {type(init).__name__}")
        init_ids = tokenizer.encode(init, add_eos=False) if init is not None else []
        if init is not None and not init_ids:
            raise ValueError(f"init={init!r} tokenises to nothing: give a phrase such as 'a photo of a', or None")
        n_ctx = (len(init_ids) or 4) if n_ctx is None else check_int(n_ctx, "n_ctx", 1)
        if init is not None and n_ctx != len(init_ids):
            raise ValueError(f"n_ctx={n_ctx} but init={init!r} is {len(init_ids)} tokens: pass n_ctx={len(init_ids)} "
                             "or init=None")
        self.n_ctx = n_ctx
        text, cfg = clip.text, clip.cfg.text
        # The token ids the tower sees: placeholders (the init phrase, else <unk>) where the context goes, the name,
        # <eos>, padding. Only the pooling position (and nothing else) is read from the placeholders.
        placeholder = init_ids or [tokenizer.unk_id] * n_ctx
        rows = []
        for i, name in enumerate(self.class_names):
            row = placeholder + tokenizer.encode(name, add_eos=False) + [tokenizer.eos_id]
            if len(row) > cfg.context_length:
                raise ValueError(f"class_names[{i}]={name!r} needs {len(row)} tokens with n_ctx={n_ctx} context "
                                 f"vectors and <eos>, more than the text tower's context_length={cfg.context_length}")
            rows.append(row)
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), True
        if int(ids.max()) >= cfg.vocab_size:
            raise ValueError(f"tokenizer gives ids up to {int(ids.max())}, outside the text tower's vocab_size="
                             f"{cfg.vocab_size}")
        device = text.tok_emb.weight.device
        self.register_buffer("input_ids", ids.to(device), persistent=False)
        self.register_buffer("attention_mask", mask.to(device), persistent=False)
        index = pool_positions(ids, mask, cfg.pool, cfg.eos_token_id)  # where the tower pools each row (None: mean)
        self.register_buffer("pool_index", index.to(device) if index is not None else None, persistent=False)
        shape = (len(rows), n_ctx, cfg.dim) if class_specific else (n_ctx, cfg.dim)
        if init is not None:
            ctx = text.tok_emb.weight[torch.tensor(init_ids, device=device)].detach().clone().expand(shape)
        else:
            ctx = torch.randn(shape, device=device, dtype=text.tok_emb.weight.dtype) * 0.02
        self.ctx = nn.Parameter(ctx.contiguous())

    def class_embeddings(self, normalize: bool = True) -> torch.Tensor:
        """The class text embeddings ``(C, embed_dim)``: the prompts ``[V]_1..[V]_M <name> <eos>`` through the frozen
        text tower (its embedding, positions, blocks, final norm and pooling) and ``text_projection``."""
        text, ids, mask = self.clip.text, self.input_ids, self.attention_mask
        ctx = self.ctx if self.class_specific else repeat(self.ctx, "m d -> c m d", c=ids.shape[0])
        x = torch.cat([ctx, text.tok_emb(ids[:, self.n_ctx:])], dim=1)  # the context replaces the first M words
        if text.type_emb is not None:
            x = x + text.type_emb(torch.zeros_like(ids))
        x = x + text.pos_emb[: ids.shape[1]]
        if text.ln_embed is not None:
            x = text.ln_embed(x)
        x, _ = text.transformer(x, key_padding_mask=mask)
        if text.norm is not None:
            x = text.norm(x)
        if self.pool_index is None:
            pooled = masked_mean(x, mask)
        else:
            pooled = x[torch.arange(x.shape[0], device=x.device), self.pool_index]
        x = self.clip.text_projection(pooled)
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C_in, H, W)`` -> class logits ``(B, num_classes)`` = ``exp(logit_scale) · cos``."""
        return _logits(self.clip.logit_scale, self.clip.encode_image(pixel_values), self.class_embeddings())


# --- VPT: learned tokens in the image tower --------------------------------------------------------------------

class VPT(nn.Module):
    """Visual Prompt Tuning (Jia et al. 2022): ``n_prompts`` learned tokens in the frozen image tower's sequence.

    The tower embeds the image as usual (patches, CLS, positions, ``ln_pre``: :meth:`ViT.embed`); the prompts go
    after the leading CLS token, ``[CLS, p_1..p_P, patches]``, with no position of their own. ``deep=False``
    (VPT-shallow) inserts one set ``(1, P, d)`` before the first block; ``deep=True`` (VPT-deep) a fresh set per
    block ``(depth, P, d)``, each replacing the previous block's outputs at the prompt positions. The prompt outputs
    are dropped before the tower's own pooling (:meth:`ViT.pool`: the CLS token for CLIP), so ``n_prompts=0`` is
    the plain tower. Prompts start uniform in ``±sqrt(6 / (channels·patch² + d))`` (the paper's Xavier init).
    :meth:`encode_image` replaces CLIP's, :meth:`forward` gives class logits against ``class_embeds``.
    Chapter 06b (survey §3.7) explains it.
    """

    def __init__(self, clip: CLIP, n_prompts: int = 4, deep: bool = False) -> None:
        super().__init__()
        self.clip = _frozen_clip(clip)
        self.n_prompts = check_int(n_prompts, "n_prompts", 0)
        self.deep = _check_bool(deep, "deep")
        vit, cfg = clip.vision, clip.cfg.vision
        if len(vit.transformer.inserted):
            raise ValueError("clip.vision has layers inserted between its blocks; VPT runs the plain blocks only")
        bound = math.sqrt(6.0 / (cfg.channels * cfg.patch_size**2 + cfg.dim))
        w = vit.patch_embed.weight
        prompts = torch.empty(cfg.depth if deep else 1, n_prompts, cfg.dim, device=w.device, dtype=w.dtype)
        self.prompts = nn.Parameter(nn.init.uniform_(prompts, -bound, bound))
        self.n_lead = int(cfg.cls_token)  # tokens before the prompts (CLS)

    def vision(self, pixel_values: torch.Tensor) -> ViTOutput:
        """The prompted image tower: :class:`ViTOutput` with the prompt tokens removed from ``last_hidden_state``."""
        vit, cfg, k, p = self.clip.vision, self.clip.cfg.vision, self.n_lead, self.n_prompts
        check_images(pixel_values, channels=cfg.channels, size=cfg.image_size, name="pixel_values",
                     device=vit.patch_embed.weight.device)
        x = vit.embed(pixel_values)
        for i, block in enumerate(vit.transformer.blocks):
            if i == 0 or self.deep:  # insert (block 0) or replace (deeper blocks) the prompt tokens
                prompts = repeat(self.prompts[i if self.deep else 0], "p d -> b p d", b=x.shape[0])
                x = torch.cat([x[:, :k], prompts.to(x.dtype), x[:, k + (p if i else 0):]], dim=1)
            x = block(x)
        x = torch.cat([x[:, :k], x[:, k + p:]], dim=1)  # drop the prompt outputs
        if vit.norm is not None and cfg.final_norm_on == "tokens":
            x = vit.norm(x)
        pooled = vit.pool(x)
        if vit.norm is not None and cfg.final_norm_on == "pooled":
            pooled = vit.norm(pooled)
        return ViTOutput(last_hidden_state=x, pooled=pooled)

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> embeddings ``(B, embed_dim)`` through the prompted tower."""
        x = self.clip.visual_projection(self.vision(pixel_values).pooled)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, input_ids, attention_mask=None, normalize: bool = True) -> torch.Tensor:
        """The frozen CLIP's text embeddings (VPT changes the image side only)."""
        return self.clip.encode_text(input_ids, attention_mask, normalize=normalize)

    def forward(self, pixel_values: torch.Tensor, class_embeds: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, C)`` of the prompted images against ``class_embeds`` ``(C, embed_dim)``."""
        class_embeds = _check_class_embeds(class_embeds, self.clip.cfg.embed_dim, self.prompts.device)
        return _logits(self.clip.logit_scale, self.encode_image(pixel_values), class_embeds)


# --- CLIP-Adapter: a residual bottleneck on the embeddings -----------------------------------------------------

def _bottleneck(dim: int, reduction: int) -> nn.Sequential:
    """CLIP-Adapter's ``A``: ``Linear(d, d/r) -> ReLU -> Linear(d/r, d) -> ReLU``, no biases (the paper's code)."""
    return nn.Sequential(nn.Linear(dim, dim // reduction, bias=False), nn.ReLU(),
                         nn.Linear(dim // reduction, dim, bias=False), nn.ReLU())


class CLIPAdapter(nn.Module):
    """CLIP-Adapter (Gao et al. 2021): ``f' = α·A(f) + (1-α)·f`` on the frozen CLIP's image embedding.

    ``A`` is a bottleneck MLP ``d -> d/reduction -> d`` (ReLU after both layers, no bias; PyTorch's default init as
    in the paper's code) on the *unnormalised* image embedding ``f`` (``d = embed_dim``); ``alpha`` is the residual
    ratio (0.2 in the paper for images; 0 gives back plain CLIP). ``text_alpha`` (None = off) adds a second adapter
    on the normalised class text embeddings, the paper's text adapter. ``2·d²/reduction`` trainable numbers per
    adapter. Chapter 06b (survey §3.7) explains it.
    """

    def __init__(self, clip: CLIP, alpha: float = 0.2, reduction: int = 4, text_alpha: float | None = None) -> None:
        super().__init__()
        self.clip = _frozen_clip(clip)
        self.alpha = _check_ratio(alpha, "alpha")
        d = clip.cfg.embed_dim
        self.reduction = check_int(reduction, "reduction", 1)
        if d // reduction < 1:
            raise ValueError(f"reduction={reduction} leaves no hidden unit for embed_dim={d}")
        self.text_alpha = None if text_alpha is None else _check_ratio(text_alpha, "text_alpha")
        w = clip.visual_projection.weight
        self.image_adapter = _bottleneck(d, reduction).to(w.device, w.dtype)
        self.text_adapter = _bottleneck(d, reduction).to(w.device, w.dtype) if text_alpha is not None else None

    @staticmethod
    def _blend(adapter: nn.Module, alpha: float, f: torch.Tensor) -> torch.Tensor:
        return alpha * adapter(f) + (1 - alpha) * f

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> adapted embeddings ``(B, embed_dim)``."""
        x = self._blend(self.image_adapter, self.alpha, self.clip.encode_image(pixel_values, normalize=False))
        return F.normalize(x, dim=-1) if normalize else x

    def adapt_text(self, text_embeds: torch.Tensor) -> torch.Tensor:
        """Normalised text embeddings through the text adapter (unchanged without one), normalised again."""
        text_embeds = F.normalize(text_embeds, dim=-1)
        if self.text_adapter is None:
            return text_embeds
        return F.normalize(self._blend(self.text_adapter, self.text_alpha, text_embeds), dim=-1)

    def encode_text(self, input_ids, attention_mask=None, normalize: bool = True) -> torch.Tensor:
        """Token ids ``(B, L)`` -> the frozen CLIP's text embeddings, through the text adapter when there is one."""
        if self.text_adapter is None:
            return self.clip.encode_text(input_ids, attention_mask, normalize=normalize)
        return self.adapt_text(self.clip.encode_text(input_ids, attention_mask))

    def forward(self, pixel_values: torch.Tensor, class_embeds: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, C)``: adapted images against (adapted) ``class_embeds`` ``(C, embed_dim)``."""
        w = self.clip.visual_projection.weight
        class_embeds = _check_class_embeds(class_embeds, self.clip.cfg.embed_dim, w.device)
        return _logits(self.clip.logit_scale, self.encode_image(pixel_values), self.adapt_text(class_embeds))
