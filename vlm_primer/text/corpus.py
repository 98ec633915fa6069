"""The training corpus of the tokenizer: the language of Shapes World and of later chapters.

Explained in notebook 01, §Tokenizer. The corpus is generated (deterministically) from the world's
grammar — captions of every kind, their paraphrases and hard negatives — plus question/answer and
chat templates later chapters use (VQA, counting, grounding, instructions, text-rich scenes, video).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from vlm_primer.world.language import describe, paraphrases
from vlm_primer.world.negatives import hard_negatives
from vlm_primer.world.scene import WorldConfig, sample_scene
from vlm_primer.world.vocab import COLORS, NUMBER_WORDS, PLURALS, RELATIONS, SHAPES, SIZES, world_words

# Words later chapters need beyond captions (questions, answers, instructions, grounding, video, OCR).
EXTRA_WORDS: tuple[str, ...] = (
    "how", "many", "what", "which", "where", "who", "is", "are", "there", "any", "color", "colour", "shape",
    "size", "yes", "no", "the", "of", "in", "on", "at", "top", "bottom", "middle", "center", "corner",
    "left", "right", "side", "question", "answer", "describe", "image", "picture", "photo", "scene",
    "caption", "count", "objects", "object", "you", "are", "a", "helpful", "assistant", "user", "system",
    "please", "short", "briefly", "detail", "box", "point", "find", "locate", "not", "and", "or",
    "true", "false", "it", "this", "that", "these", "those", "frame", "frames", "video", "clip", "first",
    "second", "third", "last", "then", "after", "before", "moves", "moving", "up", "down", "toward",
    "away", "from", "to", "appears", "disappears", "text", "letter", "letters", "word", "words", "reads",
    "written", "says", "label", "sign", "same", "different", "than", "more", "fewer", "bigger", "smaller",
    "total", "number", "none", "all", "both", "each", "every", "also", "with", "without",
)
QA_TEMPLATES: tuple[str, ...] = (
    "how many {pl} are there?",
    "how many {pl} are in the image?",
    "what color is the {shape}?",
    "what shape is the {color} object?",
    "what size is the {color} {shape}?",
    "is there a {color} {shape}?",
    "is there a {color} {shape} in the image?",
    "is the {color} {shape} {rel} the {shape2}?",
    "where is the {color} {shape}?",
    "describe the image.",
    "describe the image in detail.",
    "write a short caption for this image.",
    "count the {pl}.",
    "which object is {rel} the {shape2}?",
    "find the {color} {shape} and give its box.",
    "what does the text say?",
    "what happens in the video?",
    "which frame shows the {color} {shape}?",
    "the {color} {shape} moves {dir}.",
)
ANSWERS: tuple[str, ...] = ("yes", "no", "left", "right", "top", "bottom", "middle", "none", "both")
CHAT_LINES: tuple[str, ...] = (
    "you are a helpful assistant.",
    "you are a helpful assistant that answers questions about images.",
    "answer with a single word.",
    "answer the question using a single word or phrase.",
    "question: {q} answer: {a}",
)


def corpus_lines(num_scenes: int = 2000, seed: int = 0) -> Iterator[str]:
    """Yield the corpus, deterministically: ``num_scenes`` scenes' captions, paraphrases and
    negatives, then question/answer templates and, repeated, every world word and number."""
    if num_scenes < 1:
        raise ValueError(f"num_scenes must be >= 1, got {num_scenes}")
    rng = np.random.default_rng(seed)
    cfg = WorldConfig(max_objects=4)
    for _ in range(num_scenes):
        scene = sample_scene(rng, cfg)
        for cap in describe(scene, rng, margin=cfg.margin):
            yield from paraphrases(cap.meaning, rng, k=2)
            for neg in hard_negatives(cap, scene, rng, margin=cfg.margin):
                yield neg.text
    colors, shapes = tuple(COLORS), SHAPES
    rel_words = ("left of", "right of", "above", "below")
    for i in range(num_scenes):
        pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
        shape = pick(shapes)
        q = pick(QA_TEMPLATES).format(
            pl=PLURALS[shape], shape=shape, shape2=pick(shapes), color=pick(colors), rel=pick(rel_words),
            dir=pick(("up", "down", "left", "right")),
        )
        a = pick(ANSWERS + NUMBER_WORDS + tuple(str(n) for n in range(11)) + colors + shapes + SIZES)
        yield q
        yield a
        yield pick(CHAT_LINES).format(q=q, a=a)
    vocab_line = " ".join(world_words() + list(EXTRA_WORDS) + list(RELATIONS) + [str(n) for n in range(100)])
    for _ in range(50):  # every word frequent enough to be merged into a single token
        yield vocab_line
