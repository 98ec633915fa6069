"""A Lumos-style decoupled text recognizer: read the text at full resolution, hand the words to the LLM as text.

Chapter 06b (survey §3.6, "text-rich images") explains it. Lumos (Shenoy et al. 2024) runs scene-text recognition
on the full-resolution image *outside* the multimodal LLM and feeds the recognised words, with where they are, to
the LLM as text, beside a low-resolution image: the LLM no longer needs the pixels of small text, so the words cost
a few text tokens where high-resolution tiles would cost thousands of visual tokens.

Ours keeps the idea and makes the recognizer small: :class:`TextRecognizer` is a closed-vocabulary classifier (a
three-layer CNN) over crops of the full-resolution image, one crop per text box (:func:`crop_texts`: each box
resized to ``CROP`` pixels), trained by :func:`train_recognizer` on the texts of training scenes. The boxes come from
the scene (a perfect detector; Lumos detects them too), the words from the recognizer. :func:`ocr_prompt` writes what
it read as a line the LLM gets before the question: ``"ocr: 5 (top right), CAT (middle)."``.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vlm_primer.world.instruct import position_words
from vlm_primer.world.text_rich import TextScene, check_vocabulary

__all__ = ["CROP", "OCRQuestions", "TextRecognizer", "crop_texts", "ocr_prompt", "train_recognizer"]

CROP = (16, 48)  # (height, width) every text box is resized to: a short word keeps about 1 px per font pixel


def crop_texts(image: torch.Tensor, boxes: torch.Tensor | Sequence[Sequence[float]], size: tuple[int, int] = CROP
               ) -> torch.Tensor:
    """The pixels of every box ``(x0, y0, x1, y1)`` (pixels, ``x1``/``y1`` exclusive) of ``image`` ``(3, H, W)``,
    each resized (bilinear, antialiased) to ``size``: ``(N, 3, *size)``."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be a (3, H, W) tensor, got {getattr(image, 'shape', type(image).__name__)}")
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    h, w = image.shape[1:]
    crops = []
    for x0, y0, x1, y1 in boxes.round().long().tolist():
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ValueError(f"box {(x0, y0, x1, y1)} is empty or outside the {w}x{h} image")
        crops.append(F.interpolate(image[None, :, y0:y1, x0:x1], size=size, mode="bilinear", antialias=True,
                                   align_corners=False)[0])
    return torch.stack(crops) if crops else image.new_zeros(0, 3, *size)


class TextRecognizer(nn.Module):
    """Crops ``(N, 3, 16, 48)`` → logits ``(N, len(vocabulary))``: three 3x3 conv layers (32, 64, 64 channels,
    ReLU, 2x2 max-pooling after the first two), global average pooling, a linear classifier."""

    def __init__(self, vocabulary: Iterable[str]) -> None:
        super().__init__()
        self.vocabulary = check_vocabulary(vocabulary)
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(64, len(self.vocabulary))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        if crops.ndim != 4 or crops.shape[1] != 3:
            raise ValueError(f"crops must be (N, 3, h, w), got {tuple(crops.shape)}")
        return self.classifier(self.features(crops))

    @torch.no_grad()
    def read(self, image: torch.Tensor, boxes) -> list[str]:
        """The word of the vocabulary read in each box of ``image``."""
        crops = crop_texts(image, boxes)
        if not len(crops):
            return []
        return [self.vocabulary[i] for i in self(crops).argmax(-1).tolist()]


def train_recognizer(scenes: Sequence[tuple[torch.Tensor, TextScene]], vocabulary: Iterable[str], *, steps: int = 300,
                     batch: int = 64, lr: float = 3e-3, seed: int = 0) -> TextRecognizer:
    """A :class:`TextRecognizer` trained with AdamW (cross-entropy) on every text of ``scenes`` (pairs of a rendered
    image and its :class:`TextScene`), ``steps`` batches of ``batch`` crops drawn with ``seed``."""
    vocabulary = check_vocabulary(vocabulary)
    index = {w: i for i, w in enumerate(vocabulary)}
    crops, labels = [], []
    for image, ts in scenes:
        crops.append(crop_texts(image, ts.boxes()))
        try:
            labels += [index[t.text] for t in ts.texts]
        except KeyError as err:
            raise ValueError(f"a scene holds the text {err.args[0]!r}, which is not in the vocabulary") from None
    if not labels:
        raise ValueError("scenes hold no text to train on")
    x, y = torch.cat(crops), torch.tensor(labels)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = TextRecognizer(vocabulary)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        pick = torch.randint(len(y), (batch,), generator=g)
        loss = F.cross_entropy(model(x[pick]), y[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def ocr_prompt(words: Sequence[str], boxes, image_size: int) -> str:
    """What a recognizer read, as the line the LLM gets: ``"ocr: 5 (top right), CAT (middle)."`` (``"ocr: none."``
    without text); each word with where its box's centre lies, in thirds of the image (as the instructions say it)."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if len(words) != len(boxes):
        raise ValueError(f"{len(words)} words for {len(boxes)} boxes")
    where = [position_words(SimpleNamespace(x=(x0 + x1) / 2 / image_size, y=(y0 + y1) / 2 / image_size))
             for x0, y0, x1, y1 in boxes.tolist()]
    return "ocr: " + (", ".join(f"{w} ({p})" for w, p in zip(words, where)) or "none") + "."


class OCRQuestions(torch.utils.data.Dataset):
    """A text VQA dataset (:class:`~vlm_primer.world.text_rich.TextVQADataset`, images untransformed) whose
    questions start with what ``recognizer`` reads in the full-resolution image (:func:`ocr_prompt`): the LLM's
    side of a Lumos-style pipeline. Items and :meth:`question` as the wrapped dataset's, the question prefixed."""

    def __init__(self, questions: torch.utils.data.Dataset, recognizer: TextRecognizer) -> None:
        if not isinstance(recognizer, TextRecognizer):
            raise TypeError(f"recognizer must be a TextRecognizer, got {type(recognizer).__name__}")
        if not hasattr(questions, "text_scene") or getattr(questions, "transform", None) is not None:
            raise TypeError("questions must be a TextVQADataset without a transform (the recognizer reads raw pixels)")
        self.questions, self.recognizer = questions, recognizer.eval()

    def __len__(self) -> int:
        return len(self.questions)

    def _prefix(self, image: torch.Tensor, ts: TextScene) -> str:
        return ocr_prompt(self.recognizer.read(image, ts.boxes()), ts.boxes(), ts.image_size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.questions[index]
        return {**item, "question": self._prefix(item["image"], item["text_scene"]) + " " + item["question"]}

    def question(self, index: int):
        from vlm_primer.world.text_rich import render_text_scene

        q, ts = self.questions.question(index), self.questions.text_scene(index)[0]
        return dataclasses.replace(q, question=self._prefix(render_text_scene(ts), ts) + " " + q.question)
