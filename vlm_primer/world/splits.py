"""Splits: train/val/test disjoint by seed, and a held-out compositional test split.

Explained in notebook 01, §Splits and compositional generalisation. Scene ``i`` of a split is a pure function of
``(seed, split, i)``: its generator is ``numpy.random.default_rng([seed, SPLIT_IDS[split], i])``,
so the splits draw from disjoint random streams. ``held_out`` (color, shape) pairs never appear
in ``train``/``val``/``test``; every ``compositional`` scene contains at least one of them.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from vlm_primer.validate import check_int
from vlm_primer.world.scene import Composition, Scene, WorldConfig, sample_scene
from vlm_primer.world.vocab import check_color, check_shape

SPLITS: tuple[str, ...] = ("train", "val", "test", "compositional")
SPLIT_IDS: dict[str, int] = {"train": 0, "val": 1, "test": 2, "compositional": 3}
DISTINCT_STREAM = 1_000_003  # the 4th seed word of the per-block composition draw of ``distinct``
# One held-out pair per shape, each with a different color: every color and every shape is still
# seen in training, only these bindings are new.
DEFAULT_HELD_OUT: tuple[Composition, ...] = (
    ("red", "triangle"),
    ("green", "star"),
    ("blue", "hexagon"),
    ("yellow", "square"),
    ("purple", "circle"),
    ("cyan", "diamond"),
)


def check_split(split: object) -> str:
    if not isinstance(split, str):
        raise TypeError(f"split must be a str, one of {SPLITS}, got {type(split).__name__}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    return split


def check_held_out(held_out: Iterable[Composition] | None) -> tuple[Composition, ...]:
    """Validate ``(color, shape)`` pairs; ``None`` means :data:`DEFAULT_HELD_OUT`."""
    if held_out is None:
        return DEFAULT_HELD_OUT
    if isinstance(held_out, str):
        raise TypeError(f"held_out must be a collection of (color, shape) pairs, got the string {held_out!r}")
    out = []
    for pair in held_out:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"held_out entries must be (color, shape) pairs, got {pair!r}")
        out.append((check_color(pair[0]), check_shape(pair[1])))
    return tuple(sorted(set(out)))


def split_rng(split: str, index: int, seed: int = 0) -> np.random.Generator:
    """The generator of scene ``index`` of ``split``."""
    check_split(split)
    index, seed = check_int(index, "index", 0), check_int(seed, "seed", 0)
    return np.random.default_rng([seed, SPLIT_IDS[split], index])


def split_compositions(
    split: str, config: WorldConfig, held_out: Iterable[Composition] | None = None
) -> tuple[set[Composition], set[Composition] | None]:
    """``(allowed, required)`` compositions of a split (``required`` is None outside ``compositional``)."""
    check_split(split)
    held = set(check_held_out(held_out))
    every = {(c, s) for c in config.colors for s in config.shapes}
    if split == "compositional":
        required = held & every
        if not required:
            raise ValueError("the compositional split needs held-out pairs made of the config's colors and shapes")
        return every, required
    allowed = every - held
    if not allowed:
        raise ValueError("held_out removes every (color, shape) composition of the config")
    return allowed, None


def distinct_pool(
    split: str, allowed: set[Composition], required: set[Composition] | None, distinct: object
) -> list[Composition]:
    """The first-object compositions a ``distinct`` block of ``split`` draws from (``required`` if the
    split has them, else ``allowed``, as ``split_compositions`` returns them); checks ``distinct``."""
    pool = sorted(required if required is not None else allowed)
    check_int(distinct, "distinct", 1, len(pool), hint=f"the {split!r} split has {len(pool)} first-object "
              "compositions")
    return pool


def split_scene(
    split: str,
    index: int,
    seed: int = 0,
    config: WorldConfig | None = None,
    num_objects: int | tuple[int, int] | None = None,
    held_out: Iterable[Composition] | None = None,
    distinct: int | None = None,
) -> tuple[Scene, np.random.Generator]:
    """Scene ``index`` of ``split`` and the generator (positioned after sampling it, for captions).

    ``distinct=B``: the scenes of each block of ``B`` consecutive indices (``0..B-1``, ``B..2B-1``,
    ...) have first objects of ``B`` different (color, shape) compositions; the block's compositions
    are a random draw without replacement, a pure function of ``(seed, split, block)``.
    """
    cfg = config if config is not None else WorldConfig()
    allowed, required = split_compositions(split, cfg, held_out)
    if distinct is not None:
        pool = distinct_pool(split, allowed, required, distinct)
        block, slot = divmod(int(index), distinct)
        order = np.random.default_rng([int(seed), SPLIT_IDS[split], block, DISTINCT_STREAM]).permutation(len(pool))
        required = {pool[order[slot]]}
    rng = split_rng(split, index, seed)
    return sample_scene(rng, cfg, num_objects, allowed=allowed, required=required), rng
