"""What BLIP and CoCa share as captioners: :meth:`Captioner.generate` and :meth:`Captioner.captions`.

A model mixes :class:`Captioner` in and provides ``image_features(pixel_values)``, ``stepper(image)`` (a
:class:`~vlm_primer.nn.decoding.Stepper` over the image's features) and ``caption_ids()`` (its start ids, end and
pad ids and how many positions its decoder has). Explained in notebook 04, §Decoding.
"""

from __future__ import annotations

from typing import Any

import torch

from vlm_primer.nn.decoding import DECODING, decode
from vlm_primer.validate import check_choice, check_int

__all__ = ["Captioner", "with_bos"]


def with_bos(tokenizer: Any = None) -> Any:
    """The project tokenizer as BLIP and CoCa read captions: ``<bos>`` (BLIP's ``[CLS]``) caption ``<eos>``, a
    callable ``(texts, max_length=32) -> {"input_ids", "attention_mask"}``."""
    from vlm_primer.text import Tokenizer

    tok = tokenizer or Tokenizer.load()
    return lambda texts, max_length=32: tok(texts, max_length=max_length, add_bos=True)


class Captioner:
    @torch.no_grad()
    def generate(self, pixel_values: torch.Tensor, strategy: str = "greedy", max_new_tokens: int = 20, *,
                 prompt: list[int] | None = None, num_beams: int = 3, top_p: float = 0.9, temperature: float = 1.0,
                 top_k: int | None = None, repeats: int = 1, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """Captions of ``pixel_values`` ``(B, 3, H, W)``: the decoder starts from its start ids (+ ``prompt`` ids)
        and runs with ``strategy`` in :data:`~vlm_primer.nn.decoding.DECODING` (``beam``: ``num_beams``;
        ``nucleus``: ``top_p``, ``temperature``, ``top_k``). ``repeats`` captions per image, in a row (CapFilt
        samples several). Returns the ids after the start and the prompt ``(B * repeats, T)``: the caption, its end
        id, then padding. No ``min_length`` and no repetition penalty (BLIP's ``generate`` has both, the penalty 1.1
        when sampling); ``max_new_tokens`` does not count the start and prompt ids (BLIP's ``max_length`` does)."""
        check_choice(strategy, DECODING, "strategy")
        check_int(repeats, "repeats")
        start, eos, pad, positions = self.caption_ids()
        start = list(start) + list(prompt or [])
        if len(start) + max_new_tokens > positions:
            raise ValueError(f"{len(start)} start and prompt ids + max_new_tokens={max_new_tokens} exceed the "
                             f"decoder's {positions} positions")
        was_training = self.training
        self.eval()
        image = self.image_features(pixel_values).repeat_interleave(repeats, dim=0)
        ids = torch.tensor([start] * len(image), dtype=torch.long, device=image.device)
        if strategy == "beam":
            image = image.repeat_interleave(num_beams, dim=0)
        try:
            out = decode(self.stepper(image), ids, max_new_tokens, strategy, eos_token_id=eos, pad_token_id=pad,
                         num_beams=num_beams, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        finally:
            self.train(was_training)
        return out[:, len(start):]

    def captions(self, pixel_values: torch.Tensor, tokenizer: Any, **generate_kw: Any) -> list[str]:
        """:meth:`generate`, decoded to strings up to the end id (ids the tokenizer does not know, such as BLIP's
        ``[Decode]``, are dropped)."""
        _, eos, _, _ = self.caption_ids()
        out = []
        for row in self.generate(pixel_values, **generate_kw).tolist():
            row = row[:row.index(eos)] if eos in row else row
            out.append(tokenizer.decode([i for i in row if i < len(tokenizer)]))
        return out
