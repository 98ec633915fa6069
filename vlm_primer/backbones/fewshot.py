"""Few-shot prompting with interleaved images: ``k`` solved examples, each with its own picture, then the question.

Explained in notebook 05b, §Flamingo in context (Alayrac et al. 2022, §3: few-shot learning by prompting). The
prompt is ``<bos>`` followed by ``k`` one-turn conversations (``<image>`` question, answer, ``<|end|>``), each
closed by ``<eos>`` so that, under Flamingo's media mask (:func:`~vlm_primer.backbones.flamingo.media_mask`), the
tokens of one example never look at another example's picture; then the question's turn and ``<|assistant|>``.

Simpler than the paper's evaluation: the examples are drawn at random (no RICES retrieval of similar images);
``k = 0`` is the bare question (Flamingo's zero-shot prompt has two text-only examples); answers are decoded
greedily, at most 4 tokens, and scored by exact match (OpenFlamingo: beam search of 3, VQA soft accuracy).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from vlm_primer.backbones.data import image_turn, prompt_ids
from vlm_primer.backbones.flamingo import Flamingo
from vlm_primer.backbones.inference import decode_reply, left_pad
from vlm_primer.text import Tokenizer, encode_chat
from vlm_primer.validate import check_int

__all__ = ["InterleavedVQADataset", "few_shot_ids", "few_shot_vqa"]


def few_shot_ids(tokenizer: Tokenizer, examples: Sequence[tuple[str, str]], question: str) -> list[int]:
    """Token ids of a ``k``-shot prompt (``examples``: ``(question, answer)`` pairs, one image each, in order)
    ending where the answer to ``question`` (about the last image) starts."""
    ids = [tokenizer.bos_id]
    for q, a in examples:
        ids += encode_chat(tokenizer, image_turn(q, a))[0] + [tokenizer.eos_id]
    return ids + prompt_ids(tokenizer, question, 1)[1:]


@torch.no_grad()
def few_shot_vqa(model: Flamingo, transform: Callable[[torch.Tensor], torch.Tensor], questions, support, k: int, *,
                 seed: int = 0, batch_size: int = 50, tokenizer: Tokenizer | None = None) -> dict[str, Any]:
    """Exact-match accuracy of ``model`` on ``questions`` (a VQA dataset) when each question comes after ``k``
    examples drawn (by ``seed``) from ``support`` (another VQA dataset, e.g. the training split); returns the
    ``predictions`` and the ``accuracy`` per question type (:func:`~vlm_primer.world.accuracy_by_type`)."""
    from vlm_primer.world import accuracy_by_type

    check_int(k, "k", 0, hint="examples before the question")
    if k > len(support):
        raise ValueError(f"k={k} examples, but the support set holds {len(support)}")
    tokenizer = tokenizer or Tokenizer.load()
    rng = np.random.default_rng(seed)
    device = next(model.parameters()).device
    qs, preds = [questions.question(i) for i in range(len(questions))], []
    for start in range(0, len(qs), batch_size):
        rows, pixels = [], []
        for i in range(start, min(start + batch_size, len(qs))):
            shots = [support[int(j)] for j in rng.choice(len(support), size=k, replace=False)]
            rows.append(few_shot_ids(tokenizer, [(s["question"], s["answer"]) for s in shots], qs[i].question))
            pixels.append(torch.stack([transform(s["image"]) for s in shots] + [transform(questions[i]["image"])]))
        ids, mask = left_pad(rows, tokenizer.pad_id)  # every prompt ends where the answer starts
        new = model.eval().generate(ids.to(device), torch.stack(pixels).to(device), 4, attention_mask=mask.to(device),
                                    eos_token_id=tokenizer.end_id)
        preds += [decode_reply(tokenizer, row) for row in new.tolist()]
    return {"predictions": preds, "accuracy": accuracy_by_type(qs, preds)}


class InterleavedVQADataset(torch.utils.data.Dataset):
    """Interleaved training sequences for Flamingo: each question of ``questions`` (a VQA dataset) after ``k``
    solved examples, ``k`` drawn from ``0..max_shots`` per item (by ``seed``), the examples drawn from the same
    dataset (never the item itself); laid out as :func:`few_shot_ids` lays out a prompt, every answer a target.
    Items as :class:`~vlm_primer.backbones.data.LlavaChatDataset`'s, with ``image`` ``(max_shots + 1, 3, H, W)``:
    the examples' pictures, the question's, then zero images that no ``<image>`` marker points to (the media mask
    never reaches them). Notebook 05b, §Flamingo in context."""

    def __init__(self, questions, transform: Callable[[torch.Tensor], torch.Tensor] | None = None, *,
                 max_shots: int = 4, seed: int = 0, tokenizer: Tokenizer | None = None) -> None:
        check_int(max_shots, "max_shots", 0)
        if not (hasattr(questions, "__getitem__") and hasattr(questions, "__len__")) or isinstance(questions, str):
            raise TypeError(f"questions must be a VQA dataset (e.g. ShapesVQADataset), got {type(questions).__name__}")
        if len(questions) <= max_shots:
            raise ValueError(f"{len(questions)} questions cannot supply {max_shots} examples besides the question")
        check_int(seed, "seed", 0)
        self.questions, self.transform, self.max_shots, self.seed = questions, transform, max_shots, seed
        self.tokenizer = tokenizer or Tokenizer.load()

    def __len__(self) -> int:
        return len(self.questions)

    def shots(self, index: int) -> list[int]:
        """The indices of item ``index``'s examples, in prompt order."""
        rng = np.random.default_rng([self.seed, index])
        k = int(rng.integers(0, self.max_shots + 1))
        others = rng.choice(len(self.questions) - 1, size=k, replace=False)
        return [int(j) + (j >= index) for j in others]  # skip the item itself

    def __getitem__(self, index: int) -> dict[str, Any]:
        tok = self.tokenizer
        items = [self.questions[j] for j in self.shots(index)] + [self.questions[index]]
        ids, target = [tok.bos_id], [False]
        for n, it in enumerate(items):
            turn_ids, turn_target = encode_chat(tok, image_turn(it["question"], it["answer"]))
            ids += list(turn_ids) + ([tok.eos_id] if n < len(items) - 1 else [])
            target += list(turn_target) + ([False] if n < len(items) - 1 else [])
        images = [it["image"] if self.transform is None else self.transform(it["image"]) for it in items]
        images += [torch.zeros_like(images[0])] * (self.max_shots + 1 - len(images))
        return {"input_ids": ids, "target": target, "image": torch.stack(images), "kind": "vqa"}
