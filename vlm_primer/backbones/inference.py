"""Talking to a LLaVA: replies in the chat template, one turn or many, one image or several, in batches.

Explained in notebook 05, §Chatting with the model. A conversation is a list of chat messages
(:mod:`vlm_primer.text.chat`) whose user turns hold one ``<image>`` per picture, in order. The model
continues after ``<|assistant|>`` until it writes ``<|end|>``; the KV cache makes each new token cost
one position (``DecoderLM.generate``). Greedy by default; ``temperature`` > 0 samples (``top_k``
optionally), with ``generator`` for repeatable draws.

    reply = chat(model, [{"role": "user", "content": "<image>what color is the star?"}], image)
    replies = generate_replies(model, prompts, images)      # one image per prompt, left-padded batches
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from vlm_primer.backbones.data import prompt_ids
from vlm_primer.backbones.flamingo import Flamingo
from vlm_primer.backbones.llava import Llava
from vlm_primer.text import Tokenizer
from vlm_primer.text.chat import _content
from vlm_primer.validate import check_int

__all__ = ["chat", "generate_replies"]

Messages = Sequence[dict]


def _image_counts(model: Llava, images: torch.Tensor | Sequence[torch.Tensor], image_sizes: Any) -> list[int]:
    if image_sizes is not None:  # LLaVA-NeXT: the token count depends on each image's size
        sizes = torch.as_tensor(image_sizes).tolist()
        if len(sizes) != len(images):
            raise ValueError(f"one (H, W) in image_sizes per image: got {len(sizes)} sizes and {len(images)} images")
        return [model.num_image_tokens(tuple(int(v) for v in s)) for s in sizes]
    return [model.tokens_per_image] * len(images)


def decode_reply(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    """A generated reply as text: the tokens before the first ``<|end|>``, decoded and stripped."""
    ids = list(ids)
    if tokenizer.end_id in ids:
        ids = ids[:ids.index(tokenizer.end_id)]
    return tokenizer.decode(ids).strip()


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of different lengths as one batch ``(ids, attention_mask)``, padded on the left, so every prompt ends
    where generation starts (the mask hides the padding)."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s):], mask[r, width - len(s):] = torch.tensor(s), 1
    return ids, mask


@torch.no_grad()
def generate_replies(model: Llava, prompts: Sequence[str | Messages], images: torch.Tensor | Sequence[torch.Tensor],
                     *, tokenizer: Tokenizer | None = None, max_new_tokens: int = 16, batch_size: int = 64,
                     image_sizes: Any = None, **sampling: Any) -> list[str]:
    """One reply per prompt, prompt ``i`` about image ``i`` (``images``: ``(N, 3, H, W)``, already
    normalised; for LLaVA-NeXT the tiles of each image and ``image_sizes``). Prompts of different lengths
    are left-padded within a batch (the attention mask hides the padding). ``sampling``: ``temperature``,
    ``top_k``, ``generator`` of ``DecoderLM.generate``."""
    tokenizer = tokenizer or Tokenizer.load()
    if len(prompts) != len(images):
        raise ValueError(f"one image per prompt: got {len(prompts)} prompts and {len(images)} images")
    check_int(batch_size, "batch_size")
    counts = _image_counts(model, images, image_sizes)
    device = next(model.parameters()).device
    replies: list[str] = []
    for start in range(0, len(prompts), batch_size):
        rows = range(start, min(start + batch_size, len(prompts)))
        seqs = [prompt_ids(tokenizer, prompts[i], [counts[i]], model.cfg.image_token_id) for i in rows]
        ids, mask = left_pad(seqs, tokenizer.pad_id)
        batch_images = [images[i] for i in rows]
        pixels = torch.stack(batch_images) if image_sizes is None else batch_images
        sizes = None if image_sizes is None else torch.as_tensor(image_sizes)[list(rows)]
        extra = _instructions(model, tokenizer, [prompts[i] for i in rows], device)
        new = model.generate(ids.to(device), _to(pixels, device), max_new_tokens, attention_mask=mask.to(device),
                             image_sizes=sizes, eos_token_id=tokenizer.end_id, **extra, **sampling)
        replies += [decode_reply(tokenizer, row.tolist()) for row in new]
    return replies


def _instructions(model: Llava, tokenizer: Tokenizer, prompts: Sequence[str | Messages],
                  device: torch.device) -> dict[str, torch.Tensor]:
    """For a model whose Q-Former reads the instruction (InstructBLIP): each prompt's last user text, without
    ``<image>``, as ``qformer_input_ids`` and ``qformer_attention_mask``; nothing for other models.

    Training (:class:`~vlm_primer.backbones.data.InstructionChatDataset`) gives the Q-Former the conversation's
    first message instead: the same text on the one-turn questions the zoo's InstructBLIP learns from, not on a
    multi-turn conversation (where training showed the Q-Former the first request only)."""
    if "qformer_input_ids" not in getattr(model, "IMAGE_INPUTS", ()):
        return {}
    texts = []
    for p in prompts:
        users = [text for role, text in (_content(m, i) for i, m in enumerate(p)) if role == "user"] \
            if not isinstance(p, str) else [p]
        if not users:
            raise ValueError("InstructBLIP's Q-Former reads the user's request: the conversation has no user turn")
        texts.append(users[-1])
    enc = tokenizer([t.replace("<image>", "") for t in texts], add_bos=True,
                    max_length=model.cfg.qformer.max_positions)
    return {"qformer_input_ids": enc["input_ids"].to(device), "qformer_attention_mask": enc["attention_mask"].to(device)}


def _to(pixels: torch.Tensor | list[torch.Tensor], device: torch.device) -> torch.Tensor | list[torch.Tensor]:
    return pixels.to(device) if isinstance(pixels, torch.Tensor) else [p.to(device) for p in pixels]


@torch.no_grad()
def chat(model: Llava, messages: str | Messages, images: torch.Tensor | Sequence[torch.Tensor] | None = None, *,
         tokenizer: Tokenizer | None = None, max_new_tokens: int = 64, image_sizes: Any = None,
         **sampling: Any) -> str:
    """The assistant's next reply to ``messages`` (a question string or chat messages, multi-turn welcome).

    ``images``: one ``(3, H, W)`` image, or ``(N, 3, H, W)`` for N ``<image>`` placeholders in the
    conversation (multi-image input), already normalised. Previous assistant turns are context, as in
    the chat template the model was trained on.
    """
    tokenizer = tokenizer or Tokenizer.load()
    if images is not None and isinstance(images, torch.Tensor) and images.ndim == 3:
        images = images[None]
    elif images is not None and not isinstance(images, torch.Tensor) and image_sizes is None:
        images = torch.stack(list(images))  # a list of (3, H, W) images
    counts = _image_counts(model, images if images is not None else [], image_sizes)
    ids = prompt_ids(tokenizer, messages, counts, model.cfg.image_token_id)
    device = next(model.parameters()).device
    pixels = None if images is None else _to(images if image_sizes is not None else torch.as_tensor(images), device)
    if isinstance(model, Flamingo) and pixels is not None:
        pixels = pixels[None]  # Flamingo takes the images of each sequence: (1, N, 3, H, W)
    extra = _instructions(model, tokenizer, [messages], device)
    new = model.generate(torch.tensor([ids], device=device), pixels, max_new_tokens, image_sizes=image_sizes,
                         eos_token_id=tokenizer.end_id, **extra, **sampling)
    return decode_reply(tokenizer, new[0].tolist())
