"""The vocabulary of Shapes World: colors, shapes, sizes, textures and the words that name them.

Explained in notebook 01, §The world. Colors are picked to stay distinct after anti-aliasing on
the dark background (no two share a hue family), shapes are chosen so that their silhouettes differ
even at 64x64 pixels.
"""

from __future__ import annotations

from typing import Iterable

# RGB in [0, 1]. Saturated, well separated hues plus white; the background is a dark gray.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.12),
    "green": (0.12, 0.78, 0.22),
    "blue": (0.18, 0.36, 1.00),
    "yellow": (0.96, 0.90, 0.10),
    "purple": (0.62, 0.22, 0.88),
    "orange": (1.00, 0.55, 0.05),
    "cyan": (0.10, 0.86, 0.90),
    "white": (0.96, 0.96, 0.96),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "hexagon")
SIZES: tuple[str, ...] = ("small", "large")
# Circumradius of each size as a fraction of the image side.
SIZE_RADIUS: dict[str, float] = {"small": 0.085, "large": 0.135}
TEXTURES: tuple[str, ...] = ("solid", "striped")
BACKGROUND: tuple[float, float, float] = (0.10, 0.10, 0.12)

# Synonyms the caption grammar draws from (the first entry is the canonical word).
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
COLOR_WORDS: dict[str, tuple[str, ...]] = {c: (c,) for c in COLORS} | {"purple": ("purple", "violet")}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disk"),
    "square": ("square",),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "star": ("star",),
    "hexagon": ("hexagon",),
}
PLURALS: dict[str, str] = {
    "circle": "circles", "disk": "disks", "square": "squares", "triangle": "triangles",
    "diamond": "diamonds", "rhombus": "rhombi", "star": "stars", "hexagon": "hexagons",
    "shape": "shapes", "object": "objects",
}
NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
)
RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")
OPPOSITE: dict[str, str] = {"left": "right", "right": "left", "above": "below", "below": "above"}
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("left of", "to the left of", "on the left of"),
    "right": ("right of", "to the right of", "on the right of"),
    "above": ("above", "higher than", "over"),
    "below": ("below", "under", "beneath", "lower than"),
}


def _check(value: object, choices: Iterable[str], what: str) -> str:
    choices = tuple(choices)
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str (one of {choices}), got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {choices}")
    return value


def check_color(color: object) -> str:
    return _check(color, COLORS, "color")


def check_shape(shape: object) -> str:
    return _check(shape, SHAPES, "shape")


def check_size(size: object) -> str:
    return _check(size, SIZES, "size")


def check_texture(texture: object) -> str:
    return _check(texture, TEXTURES, "texture")


def check_relation(rel: object) -> str:
    return _check(rel, RELATIONS, "relation")


def world_words() -> list[str]:
    """Every word the caption grammar can produce (sorted); the tokenizer keeps each one a single token."""
    from vlm_primer.world.language import TEMPLATE_WORDS  # local import: language imports vocab

    words: set[str] = set(TEMPLATE_WORDS) | set(NUMBER_WORDS) | set(PLURALS) | set(PLURALS.values())
    for table in (SIZE_WORDS, COLOR_WORDS, SHAPE_WORDS, RELATION_PHRASES):
        for phrases in table.values():
            for phrase in phrases:
                words.update(phrase.split())
    return sorted(words)
