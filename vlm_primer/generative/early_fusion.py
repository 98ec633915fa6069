"""Early fusion: one decoder-only transformer over text tokens *and* image tokens (Parti, CM3Leon, Chameleon).

Parti (Yu et al. 2022), CM3Leon (Yu et al. 2023) and Chameleon (Chameleon Team 2024) turn an image into a
grid of discrete codes with a VQ image tokenizer and train ONE decoder-only transformer over text tokens and
image tokens, told apart by modality sentinels ``<boi>`` / ``<eoi>``. Nothing is special about either modality:
the same next-token loss is trained in both directions,

* caption -> image (text-to-image generation, ``t2i``): ``[caption] <boi> img_1 .. img_N <eoi>``
* image -> caption (captioning, ``i2t``):               ``<boi> img_1 .. img_N <eoi> [caption]``

and the model gives both likelihoods, ``p(image | caption)`` (a generative classifier) and
``p(caption | image)``. CM3Leon samples images with classifier-free guidance (Ho & Salimans 2022): during training
the caption is replaced by the empty caption ``<bos><eos>`` with probability ``cond_drop``; at sampling time the
next-code logits are ``uncond + s * (cond - uncond)``.

Image tokens come in as integer codes ``[0, codebook_size)`` from a separate VQ tokenizer; text tokens are the
project tokenizer's ids ``[0, text_vocab)`` (``tokenizer(texts, add_bos=True)``: every caption is
``<bos> ... <eos>``). One vocabulary holds both: text ids ``[0, text_vocab)``, image code ``c`` at
``text_vocab + c`` (``cfg.image_offset``), then ``<boi>`` and ``<eoi>``.

**Padding.** Every sequence has the same length, ``max_text + image_tokens + 2`` (the decoder's context), and
every token sits at the position of its slot (the decoder's default ``arange`` positions), so image code ``k`` is
always at the same absolute position in a given direction, whatever the caption's length. The decoder masks padded
*keys* anywhere in a sequence (its key-padding mask is combined with the causal mask), so a real token never
attends to a pad. But next-token training shifts targets by one: a token right after a pad would be predicted
from the pad's output. So the caption's pads are put where no real token follows them: the t2i caption block is
**left-padded** (pads first, ``<bos> ... <eos>`` right before ``<boi>``) and the i2t caption is **right-padded**
(pads at the very end). The real tokens of every sequence are one contiguous run, and every target, ``<boi>``
included, is predicted from a real token. Labels are ``-100`` on pads and on the first real token (nothing
before it predicts it); ``loss_on="all"`` supervises every other token (CM3Leon trains on all tokens),
``loss_on="target"`` only the image codes (t2i) or only the caption after ``<bos>`` (i2t).

Explained in notebook 04b, §Early fusion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.nn import DecoderConfig, DecoderLM
from vlm_primer.nn.attention import KVCache
from vlm_primer.nn.decoding import DECODING, decode, pick_next
from vlm_primer.validate import (check_choice, check_finite, check_int, check_mask, check_same_batch, check_tokens,
                                 value_checks_enabled)

__all__ = ["DIRECTIONS", "EarlyFusion", "EarlyFusionConfig", "EarlyFusionOutput", "LOSS_ON"]

DIRECTIONS = ("t2i", "i2t")   # caption -> image, image -> caption
LOSS_ON = ("all", "target")   # supervise every real token, or only the image (t2i) / the caption (i2t)


@dataclass
class EarlyFusionConfig(PresetConfig):
    """Text and image vocabularies, sequence lengths, the decoder (a :class:`~vlm_primer.nn.DecoderConfig`) and the
    training mix. The decoder's ``vocab_size``, ``context_length`` and special ids are derived from the other fields
    (whatever the given decoder config says there is replaced). Explained in notebook 04b, §Early fusion."""

    text_vocab: int = 814             # the project tokenizer's vocabulary
    codebook_size: int = 128          # image codes [0, codebook_size) from the VQ tokenizer
    image_tokens: int = 64            # codes per image, raster order (8 x 8)
    max_text: int = 16                # caption tokens, <bos> and <eos> included
    decoder: DecoderConfig = field(default_factory=lambda: DecoderConfig(**EarlyFusionConfig.PRESETS["tiny"]["decoder"]))
    cond_drop: float = 0.1            # training: P(caption -> empty caption) in t2i sequences (for CFG)
    i2t_fraction: float = 0.5         # training: fraction of sequences in image -> caption order
    loss_on: str = "all"              # "all" real tokens or only the "target" modality
    text_pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3

    PRESETS: ClassVar[dict] = {
        # Shapes World captions and the tiny VQ tokenizer's 8 x 8 grid of 128 codes; trains on a laptop CPU.
        "tiny": dict(decoder=dict(dim=128, depth=4, heads=4)),
        # the small VQ tokenizer's 16 x 16 grid of 512 codes
        "small": dict(codebook_size=512, image_tokens=256, max_text=32, decoder=dict(dim=256, depth=6, heads=8)),
        # A GPT-2-medium-shaped decoder over the base VQ tokenizer's 16 x 16 grids of 8192 codes, 128 text tokens.
        "base": dict(codebook_size=8192, image_tokens=256, max_text=128,
                     decoder=dict(dim=1024, depth=24, heads=16)),
        # Chameleon-7B's shapes (Llama-2-7B blocks; Chameleon adds QK-norm, not modelled here): a 65536-token
        # vocabulary holding 8192 image codes, 1024 codes per 512 x 512 image, a 4096-token context.
        # Config only (7B parameters); Chameleon puts its image codes inside its BPE vocabulary, we after the text.
        "chameleon_7b": dict(text_vocab=65536 - 8192 - 2, codebook_size=8192, image_tokens=1024,
                             max_text=4096 - 1024 - 2, bos_id=1, eos_id=2, text_pad_id=0,
                             decoder=dict(DecoderConfig.PRESETS["llama_7b"])),
    }
    BOUNDS: ClassVar[dict] = dict(text_vocab=">0", codebook_size=">0", image_tokens=">0", max_text=">0",
                                  cond_drop="[0, 1]", i2t_fraction="[0, 1]", text_pad_id=">=0", bos_id=">=0",
                                  eos_id=">=0")

    def validate(self) -> None:
        self.coerce_parts(decoder=DecoderConfig)
        check_choice(self.loss_on, LOSS_ON, "loss_on")
        name = type(self).__name__
        if self.max_text < 2:
            raise ValueError(f"{name}.max_text={self.max_text}: a caption needs room for <bos> and <eos> (>= 2)")
        for field_name in ("text_pad_id", "bos_id", "eos_id"):
            v = getattr(self, field_name)
            if v >= self.text_vocab:
                raise ValueError(f"{name}.{field_name}={v} is outside the text vocabulary [0, {self.text_vocab})")
        if len({self.text_pad_id, self.bos_id, self.eos_id}) < 3:
            raise ValueError(f"{name}: text_pad_id={self.text_pad_id}, bos_id={self.bos_id} and eos_id={self.eos_id} "
                             "must be three different ids")
        if self.decoder.cross_attn_every:
            raise ValueError(f"{name}.decoder.cross_attn_every={self.decoder.cross_attn_every}: early fusion reads "
                             "the image as tokens of the one sequence, it has no cross-attention (use 0)")
        derived = dict(vocab_size=self.vocab_size, context_length=self.context_length, bos_token_id=self.bos_id,
                       eos_token_id=self.eos_id, pad_token_id=self.text_pad_id)
        if any(getattr(self.decoder, k) != v for k, v in derived.items()):
            self.decoder = self.decoder.replace(**derived)

    @property
    def image_offset(self) -> int:
        """The id of image code 0 in the joint vocabulary (code ``c`` is ``image_offset + c``)."""
        return self.text_vocab

    @property
    def boi_id(self) -> int:
        return self.text_vocab + self.codebook_size

    @property
    def eoi_id(self) -> int:
        return self.boi_id + 1

    @property
    def vocab_size(self) -> int:
        """Text ids, image codes and the two sentinels ``<boi>``, ``<eoi>``."""
        return self.text_vocab + self.codebook_size + 2

    @property
    def context_length(self) -> int:
        """The length of every sequence: the caption block, ``<boi>``, the codes, ``<eoi>``."""
        return self.max_text + self.image_tokens + 2


@dataclass
class EarlyFusionOutput:
    loss: torch.Tensor                      # next-token cross-entropy, mean over every supervised token
    logits: torch.Tensor                    # (B', L, vocab) over the sequences built (see is_i2t)
    t2i_loss: torch.Tensor | None = None    # the same mean over the caption -> image sequences (None: none)
    i2t_loss: torch.Tensor | None = None    # ... over the image -> caption sequences
    is_i2t: torch.Tensor | None = None      # (B',) bool: which rows of ``logits`` are in image -> caption order


class _TextStepper:
    """The decoder as a step function for :mod:`vlm_primer.nn.decoding` with its KV cache; the next-token logits
    are restricted to the text vocabulary (text ids start at 0, so that is a slice)."""

    def __init__(self, decoder: DecoderLM, text_vocab: int) -> None:
        self.decoder, self.text_vocab, self.cache = decoder, text_vocab, decoder.new_cache()

    def __call__(self, new_ids: torch.Tensor) -> torch.Tensor:
        return _logits(self.decoder, new_ids, past_key_values=self.cache)[:, -1, :self.text_vocab]

    def reorder(self, index: torch.Tensor) -> None:
        for c in self.cache:
            c.reorder(index)


class EarlyFusion(nn.Module):
    """An early-fusion autoregressive model: ``decoder`` (:class:`~vlm_primer.nn.DecoderLM`) over the joint
    vocabulary of text ids, image codes and the ``<boi>``/``<eoi>`` sentinels. Explained in notebook 04b,
    §Early fusion."""

    def __init__(self, cfg: EarlyFusionConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else EarlyFusionConfig()
        self.decoder = DecoderLM(self.cfg.decoder)

    @property
    def device(self) -> torch.device:
        return self.decoder.tok_emb.weight.device

    # ------------------------------------------------------------------ input checks
    def _check_captions(self, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions ``(B, L <= max_text)`` of text ids, each ``<bos> ... <eos>`` over its real tokens; ``(ids, bool
        mask)``."""
        cfg = self.cfg
        ids = check_tokens(input_ids, vocab_size=cfg.text_vocab, device=self.device)
        if ids.shape[1] > cfg.max_text:
            raise ValueError(f"input_ids: captions of {ids.shape[1]} tokens are longer than max_text={cfg.max_text} "
                             "(tokenize with max_length=cfg.max_text)")
        mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else \
            check_mask(attention_mask, shape=tuple(ids.shape), device=ids.device)
        if value_checks_enabled():
            first = mask.int().argmax(1)
            last = ids.shape[1] - 1 - mask.flip(1).int().argmax(1)
            rows = torch.arange(len(ids), device=ids.device)
            if not bool((ids[rows, first] == cfg.bos_id).all() & (ids[rows, last] == cfg.eos_id).all()):
                raise ValueError(f"input_ids: every caption must be <bos> (id {cfg.bos_id}) ... <eos> (id {cfg.eos_id}) "
                                 "over its real tokens; encode with tokenizer(texts, add_bos=True)")
        return ids, mask

    def _check_codes(self, image_codes) -> torch.Tensor:
        cfg = self.cfg
        codes = check_tokens(image_codes, vocab_size=cfg.codebook_size, name="image_codes", device=self.device)
        if codes.shape[1] != cfg.image_tokens:
            raise ValueError(f"image_codes must hold image_tokens={cfg.image_tokens} codes per image (B, "
                             f"{cfg.image_tokens}), got shape {tuple(codes.shape)}")
        return codes

    def _check_pairs(self, input_ids, attention_mask, image_codes) -> tuple[torch.Tensor, ...]:
        ids, mask = self._check_captions(input_ids, attention_mask)
        codes = self._check_codes(image_codes)
        check_same_batch(input_ids=ids, image_codes=codes)
        return ids, mask, codes

    # ------------------------------------------------------------------ sequences
    def _caption_block(self, ids: torch.Tensor, mask: torch.Tensor, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The real tokens of each caption, in order, in a block of ``max_text`` slots: pads first (``side="left"``)
        or last (``"right"``)."""
        pad = self.cfg.max_text - ids.shape[1]
        pads_first = side == "left"
        order = torch.sort((mask if pads_first else ~mask).int(), dim=1, stable=True).indices
        ids, mask = ids.gather(1, order), mask.gather(1, order)
        widths = (pad, 0) if pads_first else (0, pad)
        ids, mask = F.pad(ids, widths, value=self.cfg.text_pad_id), F.pad(mask, widths, value=False)
        return ids.masked_fill(~mask, self.cfg.text_pad_id), mask

    def _empty_caption(self, b: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``<bos><eos>``, the unconditional caption of classifier-free guidance, as ``b`` caption blocks."""
        cfg = self.cfg
        ids = torch.tensor([[cfg.bos_id, cfg.eos_id]], device=self.device).expand(b, -1)
        return self._caption_block(ids, torch.ones_like(ids, dtype=torch.bool), side)

    def _labels(self, ids: torch.Tensor, mask: torch.Tensor, target: slice, loss_on: str) -> torch.Tensor:
        """``ids`` on the supervised tokens, ``-100`` on pads, on the first real token and (``loss_on="target"``)
        outside the ``target`` slots."""
        labels = ids.masked_fill(~mask, -100)
        labels[torch.arange(len(ids), device=ids.device), mask.int().argmax(1)] = -100
        if loss_on == "target":
            keep = torch.zeros(ids.shape[1], dtype=torch.bool, device=ids.device)
            keep[target] = True
            labels = labels.masked_fill(~keep, -100)
        return labels

    def _t2i(self, block: torch.Tensor, block_mask: torch.Tensor, codes: torch.Tensor, loss_on: str):
        cfg, b = self.cfg, len(codes)
        boi, eoi = (torch.full((b, 1), i, device=codes.device) for i in (cfg.boi_id, cfg.eoi_id))
        ids = torch.cat([block, boi, codes + cfg.image_offset, eoi], dim=1)
        mask = torch.cat([block_mask, torch.ones(b, cfg.image_tokens + 2, dtype=torch.bool, device=codes.device)], 1)
        image = slice(cfg.max_text + 1, cfg.max_text + 1 + cfg.image_tokens)
        return ids, mask, self._labels(ids, mask, image, loss_on)

    def _i2t(self, block: torch.Tensor, block_mask: torch.Tensor, codes: torch.Tensor, loss_on: str):
        cfg, b = self.cfg, len(codes)
        boi, eoi = (torch.full((b, 1), i, device=codes.device) for i in (cfg.boi_id, cfg.eoi_id))
        ids = torch.cat([boi, codes + cfg.image_offset, eoi, block], dim=1)
        mask = torch.cat([torch.ones(b, cfg.image_tokens + 2, dtype=torch.bool, device=codes.device), block_mask], 1)
        caption = slice(cfg.image_tokens + 3, None)  # after <bos>
        return ids, mask, self._labels(ids, mask, caption, loss_on)

    def t2i_sequence(self, input_ids, attention_mask, image_codes, loss_on: str | None = None):
        """Caption -> image sequences ``(ids, attention_mask, labels)``, each ``(B, context_length)``:
        ``[pads <bos> ... <eos>] <boi> img_1 .. img_N <eoi>`` (the caption block left-padded to ``max_text``).
        ``loss_on`` defaults to ``cfg.loss_on``."""
        loss_on = check_choice(self.cfg.loss_on if loss_on is None else loss_on, LOSS_ON, "loss_on")
        ids, mask, codes = self._check_pairs(input_ids, attention_mask, image_codes)
        seq, seq_mask, labels = self._t2i(*self._caption_block(ids, mask, "left"), codes, loss_on)
        return seq, seq_mask.long(), labels

    def i2t_sequence(self, input_ids, attention_mask, image_codes, loss_on: str | None = None):
        """Image -> caption sequences ``(ids, attention_mask, labels)``: ``<boi> img_1 .. img_N <eoi> [<bos> ...
        <eos> pads]`` (the caption right-padded to ``max_text``)."""
        loss_on = check_choice(self.cfg.loss_on if loss_on is None else loss_on, LOSS_ON, "loss_on")
        ids, mask, codes = self._check_pairs(input_ids, attention_mask, image_codes)
        seq, seq_mask, labels = self._i2t(*self._caption_block(ids, mask, "right"), codes, loss_on)
        return seq, seq_mask.long(), labels

    # ------------------------------------------------------------------ training
    def forward(self, input_ids, attention_mask, image_codes, direction: str | None = None,
                generator: torch.Generator | None = None) -> EarlyFusionOutput:
        """Next-token loss on (caption, image) pairs: ``input_ids`` ``(B, L <= max_text)`` captions ``<bos> ...
        <eos>``, ``attention_mask`` ``(B, L)`` (or ``None``), ``image_codes`` ``(B, image_tokens)``.

        Training mode: each pair becomes an image -> caption sequence with probability ``i2t_fraction``, else a
        caption -> image one whose caption is replaced by ``<bos><eos>`` with probability ``cond_drop``
        (``generator`` draws both). ``direction="t2i"`` / ``"i2t"`` puts every pair in that order (condition
        dropout still applies to t2i in training mode). Eval mode with ``direction=None``: both orders of every
        pair (``logits`` rows ``[:B]`` t2i, ``[B:]`` i2t), no dropout.
        """
        cfg = self.cfg
        if direction is not None:
            check_choice(direction, DIRECTIONS, "direction")
        ids, mask, codes = self._check_pairs(input_ids, attention_mask, image_codes)
        b, dev = len(codes), codes.device
        left, right = self._caption_block(ids, mask, "left"), self._caption_block(ids, mask, "right")
        if self.training:
            rng_device = generator.device if generator is not None else torch.device("cpu")
            u = torch.rand(2, b, generator=generator, device=rng_device).to(dev)
            is_i2t = u[0] < cfg.i2t_fraction if direction is None else torch.full((b,), direction == "i2t", device=dev)
            drop = rearrange(u[1] < cfg.cond_drop, "b -> b 1")
            empty = self._empty_caption(b, "left")
            left = tuple(torch.where(drop, e, x) for e, x in zip(empty, left))
            t2i, i2t = self._t2i(*left, codes, cfg.loss_on), self._i2t(*right, codes, cfg.loss_on)
            seq, seq_mask, labels = (torch.where(rearrange(is_i2t, "b -> b 1"), x, y) for x, y in zip(i2t, t2i))
        elif direction is None:
            t2i, i2t = self._t2i(*left, codes, cfg.loss_on), self._i2t(*right, codes, cfg.loss_on)
            seq, seq_mask, labels = (torch.cat(pair) for pair in zip(t2i, i2t))
            is_i2t = torch.arange(2 * b, device=dev) >= b
        else:
            build = self._i2t if direction == "i2t" else self._t2i
            seq, seq_mask, labels = build(*(right if direction == "i2t" else left), codes, cfg.loss_on)
            is_i2t = torch.full((b,), direction == "i2t", device=dev)
        logits = _logits(self.decoder, seq, attention_mask=seq_mask)
        # position t predicts labels[t + 1]; ignored targets give 0
        targets = labels[:, 1:]
        nll = F.cross_entropy(rearrange(logits[:, :-1].float(), "b n v -> (b n) v"), targets.reshape(-1),
                              ignore_index=-100, reduction="none").view_as(targets)
        counted = (targets != -100).float()

        def mean(rows: torch.Tensor) -> torch.Tensor | None:
            if not bool(rows.any()):
                return None
            return (nll[rows] * counted[rows]).sum() / counted[rows].sum()

        return EarlyFusionOutput(loss=(nll * counted).sum() / counted.sum(), logits=logits,
                                 t2i_loss=mean(~is_i2t), i2t_loss=mean(is_i2t), is_i2t=is_i2t)

    # ------------------------------------------------------------------ likelihoods
    def _sum_logprob(self, seq: torch.Tensor, mask: torch.Tensor, start: int, targets: torch.Tensor,
                     counted: torch.Tensor, vocab: slice | None, offset: int) -> torch.Tensor:
        """``sum_k log p(targets[:, k])`` for the logits at slots ``start + k`` of ``seq`` (cut after the last
        one needed), over ``counted`` targets; the softmax runs over the ids in ``vocab`` (``None``: all)."""
        stop = start + targets.shape[1]
        logits = _logits(self.decoder, seq[:, :stop], attention_mask=mask[:, :stop])[:, start:stop].float()
        if vocab is not None:
            logits, targets = logits[..., vocab], targets - offset
        logp = logits.log_softmax(-1).gather(-1, targets.clamp_min(0)[..., None]).squeeze(-1)
        return (logp * counted).sum(-1)

    def image_log_likelihood(self, input_ids, attention_mask, image_codes, restrict: bool = True,
                             batch_size: int = 256) -> torch.Tensor:
        """``log p(image | caption) = sum_k log p(img_k | caption, img_<k)`` for each pair, ``(B,)``: the
        likelihood a generative classifier compares across captions.

        ``restrict=True`` renormalises each step's softmax over the image codes (the sampler never picks anything
        else); ``restrict=False`` is the honest full-vocabulary probability (a little lower: the mass the model puts
        on text ids and sentinels is lost). Pairs run ``batch_size`` at a time. Wrap in ``torch.no_grad()`` to
        score. Explained in notebook 04b, §Early fusion.
        """
        cfg = self.cfg
        _check_batch_size(batch_size)
        ids, mask, codes = self._check_pairs(input_ids, attention_mask, image_codes)
        block, block_mask = self._caption_block(ids, mask, "left")
        out = []
        vocab = slice(cfg.image_offset, cfg.image_offset + cfg.codebook_size) if restrict else None
        for s in range(0, len(codes), batch_size):
            seq, seq_mask, _ = self._t2i(block[s:s + batch_size], block_mask[s:s + batch_size],
                                         codes[s:s + batch_size], "all")
            targets = seq[:, cfg.max_text + 1:cfg.max_text + 1 + cfg.image_tokens]
            out.append(self._sum_logprob(seq, seq_mask, cfg.max_text, targets, torch.ones_like(targets),
                                         vocab, cfg.image_offset))
        return torch.cat(out)

    def caption_log_likelihood(self, input_ids, attention_mask, image_codes, restrict: bool = True,
                               batch_size: int = 256) -> torch.Tensor:
        """``log p(caption | image)`` for each pair, ``(B,)``: the image -> caption order, summed over the caption's
        tokens after ``<bos>`` (``<eos>`` included, pads not). ``restrict=True`` renormalises over the text
        vocabulary, ``False`` uses the full softmax. Explained in notebook 04b, §Early fusion."""
        cfg = self.cfg
        _check_batch_size(batch_size)
        ids, mask, codes = self._check_pairs(input_ids, attention_mask, image_codes)
        block, block_mask = self._caption_block(ids, mask, "right")
        start = cfg.image_tokens + 2  # the <bos> slot predicts the first word
        out = []
        for s in range(0, len(codes), batch_size):
            seq, seq_mask, _ = self._i2t(block[s:s + batch_size], block_mask[s:s + batch_size],
                                         codes[s:s + batch_size], "all")
            targets, counted = seq[:, start + 1:], seq_mask[:, start + 1:].float()
            out.append(self._sum_logprob(seq, seq_mask, start, targets, counted,
                                         slice(0, cfg.text_vocab) if restrict else None, 0))
        return torch.cat(out)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate_image(self, input_ids, attention_mask=None, guidance_scale: float = 3.0, temperature: float = 1.0,
                       top_k: int | None = None, generator: torch.Generator | None = None,
                       progress: bool = False) -> torch.Tensor:
        """Sample ``(B, image_tokens)`` codes in ``[0, codebook_size)`` for the captions ``input_ids``, one code at
        a time with the KV cache, from the image-code logits only.

        Classifier-free guidance: ``logits = uncond + guidance_scale * (cond - uncond)``, where the unconditional
        stream reads the empty caption ``<bos><eos>``; both streams run as one batch of ``2B`` and are fed the same
        sampled code. ``guidance_scale=1`` is plain conditional sampling (the unconditional stream is skipped),
        ``0`` sampling from the empty caption (the conditional one is skipped). ``temperature=0`` is greedy;
        ``top_k`` keeps the k most likely codes. Explained in notebook 04b, §Early fusion.
        """
        cfg = self.cfg
        check_finite(guidance_scale, "guidance_scale")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0 (1 = no guidance), got {guidance_scale}")
        check_finite(temperature, "temperature")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be an int >= 1 or None, got {top_k!r}")
        ids, mask = self._check_captions(input_ids, attention_mask)
        b, s = len(ids), float(guidance_scale)
        streams = ([self._caption_block(ids, mask, "left")] if s != 0 else []) + \
                  ([self._empty_caption(b, "left")] if s != 1 else [])
        prompt = torch.cat([x for x, _ in streams])
        prompt = torch.cat([prompt, torch.full((len(prompt), 1), cfg.boi_id, device=prompt.device)], dim=1)
        seq_mask = F.pad(torch.cat([m for _, m in streams]), (0, 1), value=True)
        codes = torch.empty(b, 0, dtype=torch.long, device=prompt.device)
        steps = range(cfg.image_tokens)
        if progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps, desc="image tokens", leave=False)
        image = slice(cfg.image_offset, cfg.image_offset + cfg.codebook_size)
        was_training = self.training
        self.eval()
        caches: list[KVCache] = self.decoder.new_cache()
        try:
            logits = _logits(self.decoder, prompt, attention_mask=seq_mask, past_key_values=caches)[:, -1, image]
            for k in steps:
                if len(streams) == 2:
                    cond, uncond = logits.float().chunk(2)
                    logits = uncond + s * (cond - uncond)
                code = pick_next(logits, temperature, top_k, generator=generator)
                codes = torch.cat([codes, code[:, None]], dim=1)
                if k == cfg.image_tokens - 1:
                    break
                token = repeat(code + cfg.image_offset, "b -> (n b) 1", n=len(streams))
                seq_mask = F.pad(seq_mask, (0, 1), value=True)
                logits = _logits(self.decoder, token, attention_mask=seq_mask, past_key_values=caches)[:, -1, image]
        finally:
            self.train(was_training)
        return codes

    @torch.no_grad()
    def generate_caption(self, image_codes, max_new_tokens: int | None = None, strategy: str = "greedy",
                         **decode_kwargs) -> torch.Tensor:
        """Caption ids ``(B, <= max_text)`` for ``image_codes`` ``(B, image_tokens)``: ``<bos>`` then the decoded
        tokens (text ids only) up to ``<eos>``, padded after it. ``max_new_tokens`` (after ``<bos>``) defaults to
        and is at most ``max_text - 1``. Greedy by default; ``strategy="beam"`` / ``"nucleus"`` and their options
        (``num_beams``, ``top_p``, ``generator``, ...) go to :func:`vlm_primer.nn.decoding.decode`."""
        cfg = self.cfg
        check_choice(strategy, DECODING, "strategy")
        max_new = cfg.max_text - 1 if max_new_tokens is None else max_new_tokens
        if isinstance(max_new, bool) or not isinstance(max_new, int) or not 1 <= max_new <= cfg.max_text - 1:
            raise ValueError(f"max_new_tokens must be an int in [1, max_text - 1 = {cfg.max_text - 1}], "
                             f"got {max_new_tokens!r}")
        codes = self._check_codes(image_codes)
        b = len(codes)
        col = lambda i: torch.full((b, 1), i, device=codes.device)  # noqa: E731
        prompt = torch.cat([col(cfg.boi_id), codes + cfg.image_offset, col(cfg.eoi_id), col(cfg.bos_id)], dim=1)
        was_training = self.training
        self.eval()
        try:
            out = decode(_TextStepper(self.decoder, cfg.text_vocab), prompt, max_new, strategy,
                         eos_token_id=cfg.eos_id, pad_token_id=cfg.text_pad_id, **decode_kwargs)
        finally:
            self.train(was_training)
        return out[:, cfg.image_tokens + 2:]


def _logits(decoder: DecoderLM, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
    """The decoder's logits. The value checks follow the caller's setting (``validation(False)`` skips the reads of
    the ids and the mask that would sync a GPU each call); the model computes the same either way."""
    return decoder(input_ids, **kwargs).logits


def _check_batch_size(batch_size: int) -> None:
    check_int(batch_size, "batch_size")
