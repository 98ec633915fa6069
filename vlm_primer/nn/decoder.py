"""Decoder-only language model: GPT-2 style (LayerNorm, learned positions, GELU, tied head) or
Llama style (RMSNorm, RoPE, SwiGLU, no biases, untied head), with optional cross-attention layers,
next-token loss and KV-cached generation.

Explained in notebook 04, §Language model (captions as a language model), and notebook 05, §The architecture
(``lm-tiny``, the Llama-style LM LLaVA builds on; Llama weights load here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.nn.attention import KVCache
from vlm_primer.nn.decoding import pick_next
from vlm_primer.nn.norm import make_norm
from vlm_primer.nn.pos import RotaryEmbedding, learned_positions
from vlm_primer.nn.transformer import Transformer, init_weights
from vlm_primer.validate import (check_choice, check_int, check_labels, check_mask, check_mlp_width,
                                 check_same_batch, check_tokens, validation, value_checks_enabled)


@dataclass
class DecoderConfig(PresetConfig):
    vocab_size: int = 1024
    context_length: int = 128
    dim: int = 64
    depth: int = 4
    heads: int = 4
    kv_heads: int | None = None     # < heads: grouped-query attention
    dim_head: int | None = None     # default dim // heads
    mlp_ratio: float = 4.0
    mlp_dim: int | None = None      # overrides dim * mlp_ratio (Llama's intermediate_size)
    act: str = "gelu"               # gelu | swiglu | ...
    norm: str = "layernorm"         # layernorm | rmsnorm
    pos_emb: str = "learned"        # learned | rope
    rope_theta: float = 10000.0
    bias: bool = True               # biases in attention and MLP linears
    tie_embeddings: bool = True
    eps: float = 1e-5
    dropout: float = 0.0
    cross_attn_every: int = 0       # > 0: a cross-attention sub-layer in every n-th block
    context_dim: int | None = None  # width of the cross-attention context (default dim)
    gated_xattn: bool = False       # tanh-gated cross-attention, zero at init (Flamingo)
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int = 0

    PRESETS: ClassVar[dict] = {
        "tiny": dict(dim=64, depth=4, heads=4, context_length=128),
        "small": dict(dim=256, depth=6, heads=8, context_length=256),
        "base": dict(vocab_size=50257, context_length=1024, dim=768, depth=12, heads=12),  # GPT-2 124M
        "llama_tiny": dict(dim=64, depth=4, heads=4, kv_heads=2, mlp_dim=176, act="swiglu", norm="rmsnorm",
                           pos_emb="rope", bias=False, tie_embeddings=False, eps=1e-6, context_length=256),
        "llama_7b": dict(vocab_size=32000, context_length=4096, dim=4096, depth=32, heads=32, mlp_dim=11008,
                         act="swiglu", norm="rmsnorm", pos_emb="rope", bias=False, tie_embeddings=False,
                         eps=1e-5, bos_token_id=1, eos_token_id=2),  # Llama-2 / Vicuna-7B shapes
    }

    BOUNDS: ClassVar[dict] = dict(vocab_size=">0", context_length=">0", dim=">0", depth=">0", heads=">0",
                                  kv_heads=">0", dim_head=">0", mlp_ratio="(0, 64]", mlp_dim=">0", rope_theta=">0",
                                  eps=">0", dropout="[0, 1)", cross_attn_every=">=0", context_dim=">0",
                                  pad_token_id=">=0")

    def validate(self) -> None:
        check_mlp_width(self)
        check_choice(self.norm, ("layernorm", "rmsnorm"), "norm")
        check_choice(self.pos_emb, ("learned", "rope"), "pos_emb")
        if self.dim_head is None and self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"heads={self.heads} must be a multiple of kv_heads={self.kv_heads}")
        if self.pos_emb == "rope" and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head dimension, got {self.head_dim}")
        if self.cross_attn_every > self.depth:
            raise ValueError(f"cross_attn_every={self.cross_attn_every} exceeds depth={self.depth}: no block would "
                             "get cross-attention")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            v = getattr(self, name)
            if v is not None and v >= self.vocab_size:
                raise ValueError(f"{name}={v} is outside the vocabulary [0, {self.vocab_size})")

    @property
    def head_dim(self) -> int:
        return self.dim_head or self.dim // self.heads


@dataclass
class DecoderOutput:
    logits: torch.Tensor                                  # (B, L, vocab)
    loss: torch.Tensor | None = None                      # shifted next-token cross-entropy
    past_key_values: list[KVCache] | None = None          # one cache per block (updated in place)
    last_hidden_state: torch.Tensor | None = None         # (B, L, dim) after the final norm
    hidden_states: tuple[torch.Tensor, ...] | None = None


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100,
                   label_smoothing: float = 0.0) -> torch.Tensor:
    """Next-token cross-entropy: position ``t`` predicts ``labels[t + 1]``; ``ignore_index`` is skipped.

    Averaged over the predicted (non-ignored) tokens, in float32; ``label_smoothing`` as in
    ``F.cross_entropy`` (BLIP-2's ITG uses 0.1). Explained in notebook 04, §Language model.
    """
    logits = rearrange(logits[:, :-1].float(), "b n v -> (b n) v")
    return F.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=ignore_index,
                           label_smoothing=label_smoothing)


def causal_lm_items(labels: Any, ignore_index: int = -100, first_is_target: bool = False) -> int:
    """How many targets :func:`causal_lm_loss` averages over for ``labels`` ``(B, L)``: the entries of
    ``labels[:, 1:]`` that are not ``ignore_index`` (all of ``labels`` with ``first_is_target``, for a model that puts
    other positions in front of them). The models' ``loss_items``, which the ``Trainer`` weighs accumulated
    micro-batches by. Explained in notebook 06b, §Gradient accumulation."""
    if labels is None:
        raise ValueError("the batch has no labels: a language model's loss (and its count of targets) needs "
                         "labels (B, L)")
    try:
        labels = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"labels must be a (B, L) tensor of token ids, got {type(labels).__name__} ({e})") from None
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (B, L), got {tuple(labels.shape)}")
    return int((labels[:, 0 if first_is_target else 1:] != ignore_index).sum())


def _check_shape(name: str, t: torch.Tensor | None, shape: tuple[int, ...], desc: str) -> None:
    if t is not None and tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {desc} = {shape}, got {tuple(t.shape)}")


class DecoderLM(nn.Module):
    """Decoder-only transformer language model. Explained in notebook 04, §Language model."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos_emb = learned_positions(cfg.context_length, cfg.dim) if cfg.pos_emb == "learned" else None
        rope = RotaryEmbedding(cfg.head_dim, cfg.rope_theta) if cfg.pos_emb == "rope" else None
        self.transformer = Transformer(
            cfg.depth, cfg.dim, cfg.heads, cfg.mlp_ratio, act=cfg.act, causal=True, norm=cfg.norm, eps=cfg.eps,
            qkv_bias=cfg.bias, out_bias=cfg.bias, mlp_bias=cfg.bias, mlp_dim=cfg.mlp_dim, dim_head=cfg.dim_head,
            kv_heads=cfg.kv_heads, dropout=cfg.dropout, rope=rope, cross_attn_every=cfg.cross_attn_every,
            context_dim=cfg.context_dim, gated_xattn=cfg.gated_xattn,
        )
        self.norm = make_norm(cfg.norm, cfg.dim, cfg.eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.apply(init_weights)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer.blocks

    def loss_items(self, batch: dict[str, Any]) -> int:
        """The targets the loss of ``batch`` averages over (:func:`causal_lm_items`), for the ``Trainer``."""
        return causal_lm_items(batch.get("labels"))

    def new_cache(self) -> list[KVCache]:
        """An empty KV cache: one :class:`KVCache` per block."""
        return [KVCache() for _ in self.blocks]

    def embed(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings of ``input_ids`` ``(B, L)``; or ``inputs_embeds`` ``(B, L, dim)``, checked."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            return self.tok_emb(check_tokens(input_ids, vocab_size=self.cfg.vocab_size, device=self.tok_emb.weight.device))
        if not isinstance(inputs_embeds, torch.Tensor):
            raise TypeError(f"inputs_embeds must be a torch.Tensor, got {type(inputs_embeds).__name__}")
        if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != self.cfg.dim:
            raise ValueError(f"inputs_embeds must have shape (B, L, {self.cfg.dim}), "
                             f"got {tuple(inputs_embeds.shape)}")
        if inputs_embeds.shape[0] == 0 or inputs_embeds.shape[1] == 0:
            raise ValueError(f"inputs_embeds is empty (shape {tuple(inputs_embeds.shape)}): it needs at least one "
                             "sequence of at least one token")
        if not inputs_embeds.is_floating_point():
            raise TypeError(f"inputs_embeds must be a floating-point tensor, got dtype {inputs_embeds.dtype}")
        return inputs_embeds

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_key_values: list[KVCache] | None = None,
        use_cache: bool = False,
        position_ids: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> DecoderOutput:
        """Pass ``input_ids`` ``(B, L)`` or ``inputs_embeds`` ``(B, L, dim)``.

        ``attention_mask`` ``(B, past + L)``: 1 for real tokens (covers cached tokens too).
        ``labels`` ``(B, L)``: targets aligned with the inputs (shifted inside; -100 = ignore).
        ``past_key_values``: caches from a previous call (extended in place); ``use_cache`` starts new ones.
        ``position_ids`` default to ``past + arange(L)``. ``context`` feeds the cross-attention blocks.
        """
        cfg = self.cfg
        x = self.embed(input_ids, inputs_embeds)
        b, n = x.shape[:2]
        if past_key_values is not None and len(past_key_values) != cfg.depth:
            raise ValueError(f"past_key_values must hold {cfg.depth} caches (one per block), "
                             f"got {len(past_key_values)}")
        past = len(past_key_values[0]) if past_key_values is not None else 0
        if past + n > cfg.context_length:
            name = "input_ids" if input_ids is not None else "inputs_embeds"
            raise ValueError(f"{name}: a sequence of {past + n} tokens ({past} cached + {n} new) is longer than "
                             f"the model's context of {cfg.context_length} tokens")
        if attention_mask is not None:
            attention_mask = check_mask(attention_mask, shape=(b, past + n), like="inputs", desc="(B, past + L)",
                                        device=x.device)
        if labels is not None:
            labels = check_labels(labels, shape=(b, n), vocab_size=cfg.vocab_size, device=x.device)
            # Position t predicts labels[t + 1]: with nothing to predict the mean loss would be NaN.
            if n < 2 or (value_checks_enabled() and not bool((labels[:, 1:] != -100).any())):
                raise ValueError("labels leave no token to predict (a sequence of one token, or every target "
                                 "after the first position is -100): the loss would be NaN")
        if position_ids is not None:
            if not isinstance(position_ids, torch.Tensor) or position_ids.dtype.is_floating_point:
                raise TypeError(f"position_ids must be an integer tensor (B, L), got {type(position_ids).__name__}")
            check_same_batch(inputs=x, position_ids=position_ids)
            _check_shape("position_ids", position_ids, (b, n), "(B, L)")
        else:
            position_ids = torch.arange(past, past + n, device=x.device).expand(b, -1)
        if self.pos_emb is not None:
            if value_checks_enabled() and (int(position_ids.max()) >= cfg.context_length
                                           or int(position_ids.min()) < 0):
                raise ValueError(f"position_ids must lie in [0, {cfg.context_length}), got min "
                                 f"{int(position_ids.min())}, max {int(position_ids.max())}")
            x = x + self.pos_emb[position_ids]
        caches = past_key_values if past_key_values is not None else (self.new_cache() if use_cache else None)
        x, hidden = self.transformer(
            self.drop(x), context=context, context_mask=context_mask,
            key_padding_mask=attention_mask,
            kv_caches=caches, position_ids=position_ids, output_hidden_states=output_hidden_states,
        )
        x = self.norm(x)
        logits = self.lm_head(x)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return DecoderOutput(logits=logits, loss=loss, past_key_values=caches, last_hidden_state=x,
                             hidden_states=hidden)

    @staticmethod
    def sample(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
               generator: torch.Generator | None = None, top_p: float = 1.0) -> torch.Tensor:
        """Next token ids ``(B,)`` from logits ``(B, V)``: greedy for ``temperature == 0``, else a sample
        (optionally top-k and nucleus ``top_p``); :func:`vlm_primer.nn.decoding.pick_next`."""
        return pick_next(logits, temperature, top_k, top_p, generator)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor | None = None,
        max_new_tokens: int = 20,
        *,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float = 1.0,
        eos_token_id: int | None = None,
        use_cache: bool = True,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Autoregressive decoding (greedy at ``temperature=0``, else sampling, optionally top-k and nucleus).

        The prompt is ``input_ids`` ``(B, L)`` or ``inputs_embeds`` ``(B, L, dim)`` (e.g. image tokens
        followed by text). Left padding is handled through ``attention_mask`` (positions count real
        tokens only). Rows that produced ``eos_token_id`` (default ``cfg.eos_token_id``) are filled with
        ``pad_token_id``; decoding stops when all rows are done (a negative id never stops).
        Returns the prompt ids followed by the new ids, or only the new ids when the prompt was given
        as embeddings.
        With ``use_cache`` each step feeds one token and reuses cached keys/values; the result equals
        ``use_cache=False`` (recompute everything each step). Explained in notebook 04, §KV cache.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        max_new_tokens = check_int(max_new_tokens, "max_new_tokens", minimum=0)
        if input_ids is not None:
            input_ids = check_tokens(input_ids, vocab_size=self.cfg.vocab_size, device=self.tok_emb.weight.device)
        else:
            inputs_embeds = self.embed(inputs_embeds=inputs_embeds)
        prompt = input_ids if input_ids is not None else inputs_embeds
        b, n = prompt.shape[:2]
        device = prompt.device
        if n + max_new_tokens > self.cfg.context_length:
            raise ValueError(f"prompt of {n} tokens + max_new_tokens={max_new_tokens} exceeds the model's "
                             f"context of {self.cfg.context_length} tokens")
        if attention_mask is None:
            mask = torch.ones(b, n, dtype=torch.long, device=device)
        else:
            mask = check_mask(attention_mask, shape=(b, n), like="prompt", device=device).long()
        eos = self.cfg.eos_token_id if eos_token_id is None else eos_token_id
        eos = None if eos is not None and eos < 0 else eos
        was_training = self.training
        self.eval()
        new = torch.empty(b, 0, dtype=torch.long, device=device)
        done = torch.zeros(b, dtype=torch.bool, device=device)
        caches = self.new_cache() if use_cache else None
        kw = dict(context=context, context_mask=context_mask)
        # The prompt and its mask were checked above; what the loop feeds back is valid by construction,
        # so the per-step forward skips the value checks (no device sync per token for them).
        with validation(False):
            for step in range(max_new_tokens):
                positions = (mask.cumsum(-1) - 1).clamp_min(0)
                if use_cache and step > 0:
                    out = self(input_ids=new[:, -1:], attention_mask=mask, past_key_values=caches,
                               position_ids=positions[:, -1:], **kw)
                elif input_ids is not None:
                    out = self(input_ids=torch.cat([input_ids, new], dim=1), attention_mask=mask,
                               past_key_values=caches, position_ids=positions, **kw)
                else:
                    embeds = torch.cat([inputs_embeds, self.tok_emb(new)], dim=1)
                    out = self(inputs_embeds=embeds, attention_mask=mask, past_key_values=caches,
                               position_ids=positions, **kw)
                token = self.sample(out.logits[:, -1], temperature, top_k, generator, top_p)
                if eos is not None:
                    token = token.masked_fill(done, self.cfg.pad_token_id)
                    done = done | (token == eos)
                new = torch.cat([new, token[:, None]], dim=1)
                mask = torch.cat([mask, torch.ones(b, 1, dtype=mask.dtype, device=device)], dim=1)
                if eos is not None and bool(done.all()):
                    break
        self.train(was_training)
        return torch.cat([input_ids, new], dim=1) if input_ids is not None else new
