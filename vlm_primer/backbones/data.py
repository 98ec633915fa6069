"""LLaVA's training data on Shapes World: conversations with the image spliced in, answers as the only targets.

Explained in notebook 05, §The data. LLaVA's two stages use two kinds of data (Liu et al. 2023):

* **stage 1** (feature alignment): an image and a short caption behind a fixed request
  (``kind="caption"``), so the connector learns to say in the LM's words what the tower sees;
* **stage 2** (instruction tuning): conversations, detailed descriptions and complex reasoning
  (``kind="instruct"``, :class:`~vlm_primer.world.ShapesInstructDataset`), or short VQA answers
  (``kind="vqa"``).

Each item is the chat template's token ids with every ``<image>`` expanded into ``image_tokens``
placeholders, a parallel target mask (True on the assistant's answers and their ``<|end|>``) and the
image; :func:`llava_collate` pads a batch and writes ``labels`` = the ids on targets, -100 elsewhere
(the prompt, the roles and the image positions are never learned).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from vlm_primer.backbones.llava import IMAGE_TOKEN_ID, expand_image_tokens
from vlm_primer.text import Tokenizer, encode_chat
from vlm_primer.validate import check_choice, check_int

__all__ = ["AnyResVQADataset", "CAPTION_REQUEST", "InstructionChatDataset", "LLAVA_KINDS", "LlavaChatDataset",
           "caption_pairs_collate", "image_turn", "llava_collate", "prompt_ids"]

LLAVA_KINDS = ("caption", "vqa", "instruct")
CAPTION_REQUEST = "write a short caption for this image."


def image_turn(request: str, reply: str) -> list[dict[str, str]]:
    """One exchange about an image: the user's ``request`` after ``<image>``, then the assistant's ``reply``."""
    return [{"role": "user", "content": "<image>" + request}, {"role": "assistant", "content": reply}]


def prompt_ids(tokenizer: Tokenizer, messages: str | Sequence[dict], image_tokens: int | Sequence[int],
               image_id: int = IMAGE_TOKEN_ID) -> list[int]:
    """The ids of a prompt to generate a reply from: ``messages`` (chat messages, multi-turn welcome, or a bare
    question: one user turn, with ``<image>`` put in front when an image is expected and it has none) in the
    chat template, ending with ``<|assistant|>``. Each ``<image>`` is expanded into ``image_tokens``
    placeholders: an int for every image, or one count per image, checked against the placeholders."""
    counts = None if isinstance(image_tokens, int) else list(image_tokens)
    if isinstance(messages, str):
        wants_image = counts is None or len(counts) > 0
        messages = [{"role": "user", "content": ("<image>" if wants_image and "<image>" not in messages else "")
                     + messages}]
    ids, _ = encode_chat(tokenizer, messages, add_bos=True)
    if messages[-1]["role"] == "assistant":
        raise ValueError("the conversation ends with an assistant turn: add the user's next message to get a reply")
    ids += tokenizer.encode("<|assistant|>", add_eos=False)
    if counts is not None and ids.count(image_id) != len(counts):
        raise ValueError(f"the conversation has {ids.count(image_id)} <image> placeholders but {len(counts)} "
                         "image(s) were given: one <image> per picture, in order")
    return expand_image_tokens(ids, image_id, image_tokens)[0]


class LlavaChatDataset(torch.utils.data.Dataset):
    """Shapes World conversations for LLaVA (``kind`` in :data:`LLAVA_KINDS`); items ``input_ids``,
    ``target`` (bool per token), ``image`` (after ``transform``) and ``kind``.

    ``image_tokens``: placeholders per image (the model's ``tokens_per_image``). Scenes come from a
    :class:`~vlm_primer.world.SceneDataset` built with ``scene_kw`` (``config``, ``num_objects``, ``seed``...).
    """

    def __init__(self, kind: str, split: str = "train", size: int = 1000, *, image_tokens: int,
                 tokenizer: Tokenizer | None = None, transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 image_id: int = 5, **scene_kw: Any) -> None:
        from vlm_primer.world import ShapesCaptionDataset, ShapesInstructDataset, ShapesVQADataset

        self.kind = check_choice(kind, LLAVA_KINDS, "kind")
        check_int(image_tokens, "image_tokens", hint="the model's tokens_per_image")
        self.tokenizer = tokenizer or Tokenizer.load()
        self.image_tokens, self.image_id, self.transform = image_tokens, image_id, transform
        if kind == "caption":
            cfg = scene_kw.pop("config", None)
            self.scenes = ShapesCaptionDataset(split, size, cfg, statements=False, num_paraphrases=1, **scene_kw)
        elif kind == "vqa":
            self.scenes = ShapesVQADataset(split, size, **scene_kw)
        else:
            self.scenes = ShapesInstructDataset(split, size, **scene_kw)

    def __len__(self) -> int:
        return len(self.scenes)

    def messages(self, item: dict[str, Any]) -> list[dict[str, str]]:
        if self.kind == "caption":
            return image_turn(CAPTION_REQUEST, item["caption"])
        if self.kind == "vqa":
            return image_turn(item["question"], item["answer"])
        return item["messages"]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.scenes[index]
        ids, target = encode_chat(self.tokenizer, self.messages(item), add_bos=True)
        ids, target = expand_image_tokens(ids, self.image_id, self.image_tokens, target)
        image = item["image"] if self.transform is None else self.transform(item["image"])
        return {"input_ids": ids, "target": target, "image": image, "kind": self.kind}


class InstructionChatDataset(LlavaChatDataset):
    """:class:`LlavaChatDataset` items plus ``instruction``: the user's request (without ``<image>``) as token ids,
    for a Q-Former that reads it (InstructBLIP, notebook 05b); :func:`llava_collate` pads them into
    ``qformer_input_ids`` and ``qformer_attention_mask``."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        out = super().__getitem__(index)
        request = self.messages(self.scenes[index])[0]["content"].replace("<image>", "")
        out["instruction"] = self.tokenizer.encode(request, add_bos=True)
        return out


class AnyResVQADataset(torch.utils.data.Dataset):
    """VQA conversations for LLaVA-NeXT: each question of ``questions`` (a
    :class:`~vlm_primer.world.ShapesVQADataset`, images in ``[0, 1]``) with its image as AnyRes tiles
    (:func:`~vlm_primer.backbones.llava_next.anyres_view`); a fraction ``squeeze`` of the items (drawn per
    item from ``seed``) shows the image squeezed to the tower's resolution first, so one model learns both
    views. Items as :class:`LlavaChatDataset`'s plus ``image_size``."""

    def __init__(self, questions: torch.utils.data.Dataset, cfg: Any, transform: Callable | None = None, *,
                 squeeze: float = 0.5, seed: int = 0, tokenizer: Tokenizer | None = None) -> None:
        from vlm_primer.backbones.llava_next import LlavaNextConfig

        if isinstance(squeeze, bool) or not isinstance(squeeze, (int, float)) or not 0.0 <= squeeze <= 1.0:
            raise ValueError(f"squeeze is the fraction of squeezed images, in [0, 1]; got {squeeze!r}")
        if not isinstance(cfg, LlavaNextConfig):
            raise TypeError(f"cfg must be the model's LlavaNextConfig, got {type(cfg).__name__}")
        if not (hasattr(questions, "__getitem__") and hasattr(questions, "__len__")) or isinstance(questions, str):
            raise TypeError(f"questions must be a VQA dataset (e.g. ShapesVQADataset), got {type(questions).__name__}")
        check_int(seed, "seed", 0)
        self.questions, self.cfg, self.transform, self.squeeze, self.seed = questions, cfg, transform, squeeze, seed
        self.tokenizer = tokenizer or Tokenizer.load()

    def __len__(self) -> int:
        return len(self.questions)

    def squeezed(self, index: int) -> bool:
        return bool(np.random.default_rng([self.seed, index]).random() < self.squeeze)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from vlm_primer.backbones.llava_next import anyres_view

        item = self.questions[index]
        if not isinstance(item, dict) or not {"image", "question", "answer"} <= set(item):
            raise TypeError(f"questions[{index}] must be a VQA item (a dict with image, question and answer), got "
                            f"{type(item).__name__}")
        ids, target = encode_chat(self.tokenizer, image_turn(item["question"], item["answer"]), add_bos=True)
        tiles, size = anyres_view(item["image"], self.cfg, self.transform, squeeze=self.squeezed(index))
        ids, target = expand_image_tokens(ids, self.cfg.image_token_id, self.cfg.num_image_tokens(size), target)
        return {"input_ids": ids, "target": target, "image": tiles, "image_size": size, "kind": "vqa"}


def llava_collate(pad_id: int = 0) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """Right-pad a list of :class:`LlavaChatDataset` items into ``input_ids``, ``attention_mask``,
    ``labels`` (-100 off the targets) and ``pixel_values``; items of :class:`AnyResVQADataset` (with an
    ``image_size``) give ``pixel_values`` as a list of tile stacks and ``image_sizes``."""

    def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        labels = torch.full((len(items), width), -100, dtype=torch.long)
        mask = torch.zeros(len(items), width, dtype=torch.long)
        for i, it in enumerate(items):
            n = len(it["input_ids"])
            ids[i, :n] = torch.tensor(it["input_ids"])
            mask[i, :n] = 1
            labels[i, :n] = torch.where(torch.tensor(it["target"]), ids[i, :n], -100)
        extra = {}
        if "instruction" in items[0]:  # InstructBLIP: the request, for the Q-Former
            width = max(len(it["instruction"]) for it in items)
            extra["qformer_input_ids"] = torch.full((len(items), width), pad_id, dtype=torch.long)
            extra["qformer_attention_mask"] = torch.zeros(len(items), width, dtype=torch.long)
            for i, it in enumerate(items):
                extra["qformer_input_ids"][i, :len(it["instruction"])] = torch.tensor(it["instruction"])
                extra["qformer_attention_mask"][i, :len(it["instruction"])] = 1
        if "image_size" in items[0]:  # LLaVA-NeXT: a different number of tiles per image
            return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                    "pixel_values": [it["image"] for it in items],
                    "image_sizes": torch.tensor([it["image_size"] for it in items])}
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                "pixel_values": torch.stack([it["image"] for it in items]), **extra}

    return collate


def caption_pairs_collate(tokenizer: Tokenizer | None = None, max_length: int = 32
                          ) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """Image-caption items (``image``, ``caption``) -> what :class:`~vlm_primer.backbones.blip2.Blip2Stage1` takes:
    ``pixel_values``, ``input_ids`` (``<bos>`` caption ``<eos>``), ``attention_mask`` and ``same`` ``(B, B)``, True
    where two captions are identical (never a hard negative for each other)."""
    tokenizer = tokenizer or Tokenizer.load()

    def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        captions = [it["caption"] for it in items]
        enc = tokenizer(captions, max_length=max_length, add_bos=True)
        same = torch.tensor([[a == b for b in captions] for a in captions])
        return {"pixel_values": torch.stack([it["image"] for it in items]), "input_ids": enc["input_ids"],
                "attention_mask": enc["attention_mask"], "same": same}

    return collate
