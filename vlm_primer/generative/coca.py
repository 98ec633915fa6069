"""CoCa: a contrastive captioner -- one image encoder, one text decoder cut in two, two losses.

Explained in notebook 04, §CoCa (Yu et al. 2022, "CoCa: Contrastive Captioners are Image-Text Foundation Models",
§3; the survey's §2.4). The layout follows the paper and open_clip's ``coca_model.py``:

* **image encoder**: a ViT; two **attentional poolers** read its tokens -- one query gives the image embedding
  for the contrastive loss, ``num_caption_queries`` queries give the tokens the decoder cross-attends to;
* **unimodal text decoder**: the first ``unimodal_depth`` causal layers see text only; a learned ``[CLS]``
  appended after the caption reads the whole caption, and its output is the text embedding;
* **multimodal text decoder**: the next ``multimodal_depth`` causal layers cross-attend to the image tokens and
  predict each next token;
* **loss** = ``contrastive_weight`` x CLIP's contrastive loss + ``caption_weight`` x the captioning
  cross-entropy (the paper's 1 and 2).

No ``transformers`` model has this architecture; ``tests/test_coca.py`` checks each piece against a computation
written separately (the pooler against ``torch.nn.MultiheadAttention``, the losses by hand, the split of the
decoder layers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from einops import repeat
from torch import nn

from vlm_primer.config import PresetConfig
from vlm_primer.contrastive.losses import clip_loss
from vlm_primer.generative.captioner import Captioner
from vlm_primer.nn import Attention, KVCache, Transformer, ViT, ViTConfig, causal_lm_loss, init_weights
from vlm_primer.validate import check_caption_pairs, check_mask, check_tokens

__all__ = ["AttentionalPooler", "CoCa", "CoCaConfig", "CoCaStepper"]


@dataclass
class CoCaConfig(PresetConfig):
    """CoCa's image encoder (``vision``) and text decoder shapes, the poolers and the two loss weights. Token ids
    are the project tokenizer's: captions are ``<bos> caption <eos>``, padded with ``pad_token_id``."""

    vision: ViTConfig = field(default_factory=lambda: ViTConfig(**CoCaConfig.PRESETS["tiny"]["vision"]))
    vocab_size: int = 814
    context_length: int = 32
    dim: int = 64
    heads: int = 4
    mlp_ratio: float = 4.0
    unimodal_depth: int = 2
    multimodal_depth: int = 2
    num_caption_queries: int = 16
    pool_heads: int = 4
    embed_dim: int = 64
    temperature: float = 0.07
    contrastive_weight: float = 1.0
    caption_weight: float = 2.0
    bos_token_id: int = 2
    eos_token_id: int = 3
    pad_token_id: int = 0

    PRESETS: ClassVar[dict] = {
        "tiny": dict(vision=dict(ViTConfig.PRESETS["tiny"], pre_norm=True, final_norm_on="tokens")),
        # CoCa-Base's text side (12 + 12 decoder layers, 768 wide) on a ViT-B/16, 256 caption queries.
        "base": dict(vision=dict(ViTConfig.PRESETS["base"], pre_norm=True, final_norm_on="tokens"),
                     vocab_size=64000, context_length=64, dim=768, heads=12, unimodal_depth=12, multimodal_depth=12,
                     num_caption_queries=256, pool_heads=8, embed_dim=768),
    }
    BOUNDS: ClassVar[dict] = dict(vocab_size=">0", context_length=">0", dim=">0", heads=">0", mlp_ratio="(0, 64]",
                                  unimodal_depth=">0", multimodal_depth=">0", num_caption_queries=">0",
                                  pool_heads=">0", embed_dim=">0", temperature="(0, 1]", contrastive_weight=">=0",
                                  caption_weight=">=0", bos_token_id=">=0", eos_token_id=">=0", pad_token_id=">=0")

    def validate(self) -> None:
        self.coerce_parts(vision=ViTConfig)
        for name, width, heads in (("dim", self.dim, self.heads), ("dim", self.dim, self.pool_heads),
                                   ("embed_dim", self.embed_dim, self.pool_heads)):
            if width % heads:
                raise ValueError(f"CoCaConfig.{name}={width} must be divisible by {heads} heads")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(self, name) >= self.vocab_size:
                raise ValueError(f"CoCaConfig.{name}={getattr(self, name)} is outside the vocabulary "
                                 f"[0, {self.vocab_size})")


class AttentionalPooler(nn.Module):
    """``num_queries`` learned queries attend over a set of tokens: ``attn(LN(queries), LN(tokens))`` (open_clip's
    ``AttentionalPooler``), ``(B, num_queries, dim)``."""

    def __init__(self, dim: int, context_dim: int, heads: int, num_queries: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.ln_q = nn.LayerNorm(dim)
        self.ln_k = nn.LayerNorm(context_dim)
        self.attn = Attention(dim, heads, kv_dim=context_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q = repeat(self.ln_q(self.query), "q d -> b q d", b=tokens.shape[0])
        return self.attn(q, context=self.ln_k(tokens))


class CoCaStepper:
    """CoCa's decoder as a step function for :mod:`vlm_primer.nn.decoding` (no ``[CLS]`` while generating)."""

    def __init__(self, model: "CoCa", image: torch.Tensor) -> None:
        self.model, self.image = model, image
        self.caches = [KVCache() for _ in range(model.cfg.unimodal_depth + model.cfg.multimodal_depth)]

    def __call__(self, new_ids: torch.Tensor) -> torch.Tensor:
        m, depth = self.model, self.model.cfg.unimodal_depth
        past = len(self.caches[0])
        x = m.tok_emb(new_ids) + m.pos_emb[past:past + new_ids.shape[1]]
        x, _ = m.unimodal(x, kv_caches=self.caches[:depth])
        return m.caption_logits(m.ln_text(x), self.image, kv_caches=self.caches[depth:])[:, -1]

    def reorder(self, index: torch.Tensor) -> None:
        for c in self.caches:
            c.reorder(index)
        self.image = self.image.index_select(0, index)


class CoCa(Captioner, nn.Module):
    """CoCa. ``forward(pixel_values, input_ids, attention_mask)`` -> ``loss``, ``contrastive``, ``caption``
    (detached) and ``sim``; ``encode_image`` / ``encode_text`` for zero-shot and retrieval; ``generate`` and
    ``captions`` (:class:`~vlm_primer.generative.captioner.Captioner`)."""

    def __init__(self, cfg: CoCaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        v = cfg.vision
        self.vision = ViT(v)
        self.contrastive_pool = AttentionalPooler(cfg.embed_dim, v.dim, cfg.pool_heads, 1)
        self.caption_pool = AttentionalPooler(cfg.dim, v.dim, cfg.pool_heads, cfg.num_caption_queries)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.cls_emb = nn.Parameter(torch.randn(cfg.dim) * 0.02)
        self.pos_emb = nn.Parameter(torch.randn(cfg.context_length + 1, cfg.dim) * 0.01)  # + 1: the [CLS] slot
        self.unimodal = Transformer(cfg.unimodal_depth, cfg.dim, cfg.heads, cfg.mlp_ratio, causal=True)
        self.ln_text = nn.LayerNorm(cfg.dim)
        self.text_proj = nn.Linear(cfg.dim, cfg.embed_dim, bias=False)
        self.multimodal = Transformer(cfg.multimodal_depth, cfg.dim, cfg.heads, cfg.mlp_ratio, causal=True,
                                      cross_attn=True, context_dim=cfg.dim)
        self.ln_final = nn.LayerNorm(cfg.dim)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.temperature = nn.Parameter(torch.tensor(float(cfg.temperature)))
        for module in (self.contrastive_pool.attn, self.caption_pool.attn, self.tok_emb, self.unimodal,
                       self.text_proj, self.multimodal, self.lm_head):
            module.apply(init_weights)

    # ---------------------------------------------------------------- the two towers

    def image_outputs(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> (the contrastive embedding ``(B, embed_dim)``, L2-normalised; the caption tokens
        ``(B, num_caption_queries, dim)``): both poolers over one pass of the ViT."""
        tokens = self.vision(pixel_values).last_hidden_state
        return F.normalize(self.contrastive_pool(tokens)[:, 0], dim=-1), self.caption_pool(tokens)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images -> the caption tokens the multimodal decoder cross-attends to."""
        return self.caption_pool(self.vision(pixel_values).last_hidden_state)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.contrastive_pool(self.vision(pixel_values).last_hidden_state)[:, 0], dim=-1)

    def text_outputs(self, input_ids: Any, attention_mask: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> (the text embedding ``(B, embed_dim)`` from ``[CLS]``, L2-normalised; the unimodal decoder's
        token outputs ``(B, L, dim)``). ``[CLS]`` sits after the padded caption and sees every real token."""
        cfg = self.cfg
        ids = check_tokens(input_ids, max_len=cfg.context_length, vocab_size=cfg.vocab_size,
                           device=self.tok_emb.weight.device)
        batch, n = ids.shape
        mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else \
            check_mask(attention_mask, shape=(batch, n), device=ids.device).bool()
        x = torch.cat([self.tok_emb(ids), repeat(self.cls_emb, "d -> b 1 d", b=batch)], dim=1) + self.pos_emb[:n + 1]
        keys = torch.cat([mask, torch.ones(batch, 1, dtype=torch.bool, device=ids.device)], dim=1)
        x, _ = self.unimodal(x, key_padding_mask=keys)
        x = self.ln_text(x)
        return F.normalize(self.text_proj(x[:, -1]), dim=-1), x[:, :-1]

    def encode_text(self, input_ids: Any, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.text_outputs(input_ids, attention_mask)[0]

    def similarity(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        return image_embeds @ text_embeds.to(image_embeds.dtype).t()

    def caption_logits(self, text_tokens: torch.Tensor, image_tokens: torch.Tensor,
                       attention_mask: torch.Tensor | None = None, kv_caches: list[KVCache] | None = None
                       ) -> torch.Tensor:
        """The multimodal decoder: unimodal token outputs + image tokens -> next-token logits ``(B, L, vocab)``."""
        x, _ = self.multimodal(text_tokens, context=image_tokens, key_padding_mask=attention_mask,
                               kv_caches=kv_caches)
        return self.lm_head(self.ln_final(x))

    # ---------------------------------------------------------------- training

    def forward(self, pixel_values: torch.Tensor, input_ids: Any, attention_mask: torch.Tensor | None = None,
                **_: Any) -> dict[str, torch.Tensor]:
        """Both losses on a batch of pairs (``input_ids``: ``<bos>`` caption ``<eos>``, padded)."""
        cfg = self.cfg
        ids, mask = check_caption_pairs(input_ids, attention_mask, images=len(pixel_values), vocab_size=cfg.vocab_size,
                                        device=self.tok_emb.weight.device, max_len=cfg.context_length, model="CoCa")
        image_emb, image_tokens = self.image_outputs(pixel_values)
        text_emb, text_tokens = self.text_outputs(ids, mask)
        logits = self.similarity(image_emb, text_emb) / self.temperature.clamp(1e-3, 0.5)
        contrastive = clip_loss(logits)
        caption = causal_lm_loss(self.caption_logits(text_tokens, image_tokens, mask.bool()),
                                 ids.masked_fill(mask == 0, -100))
        loss = cfg.contrastive_weight * contrastive + cfg.caption_weight * caption
        return {"loss": loss, "contrastive": contrastive.detach(), "caption": caption.detach(), "sim": logits.detach()}

    # ---------------------------------------------------------------- captioning (Captioner)

    def caption_ids(self) -> tuple[list[int], int, int, int]:
        return [self.cfg.bos_token_id], self.cfg.eos_token_id, self.cfg.pad_token_id, self.cfg.context_length

    def stepper(self, image: torch.Tensor) -> CoCaStepper:
        return CoCaStepper(self, image)
