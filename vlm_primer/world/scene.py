"""Scene graphs: the single source of truth of Shapes World, and the CLEVR-style sampler.

Explained in notebook 01, §Scene graphs. A :class:`Scene` is a tuple of :class:`Obj` with positions
in ``[0, 1]`` (``x`` to the right, ``y`` *down*, like image rows). Images, boxes, captions, hard
negatives and answers are all computed from it.

Placement follows CLEVR (Johnson et al., 2017): objects do not overlap (``spacing``), every object
keeps at least ``min_visible`` of its pixels, and a spatial relation between two objects is only
*defined* when their offset along that axis exceeds ``margin``; every pair is placed so that at
least one of its two axes is clear, and captions only ever use clear relations.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar, Iterable

import numpy as np

from vlm_primer.config import PresetConfig
from vlm_primer.world.vocab import (
    BACKGROUND,
    COLORS,
    SHAPES,
    SIZE_RADIUS,
    SIZES,
    check_color,
    check_relation,
    check_shape,
    check_size,
    check_texture,
)


@dataclass(frozen=True)
class Obj:
    """One object: what it is (shape, color, size, texture) and where (x, y, rotation in degrees)."""

    shape: str
    color: str
    size: str = "large"
    x: float = 0.5
    y: float = 0.5
    rotation: float = 0.0
    texture: str = "solid"

    def __post_init__(self) -> None:
        check_shape(self.shape)
        check_color(self.color)
        check_size(self.size)
        check_texture(self.texture)
        for name in ("x", "y", "rotation"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise TypeError(f"Obj.{name} must be a finite number, got {v!r}")
        if not (0.0 <= self.x <= 1.0 and 0.0 <= self.y <= 1.0):
            raise ValueError(f"Obj position must lie in [0, 1], got x={self.x}, y={self.y}")

    @property
    def radius(self) -> float:
        """Circumradius as a fraction of the image side."""
        return SIZE_RADIUS[self.size]

    @property
    def composition(self) -> tuple[str, str]:
        return (self.color, self.shape)

    def describe(self) -> str:
        return f"{self.size} {self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """An ordered tuple of objects (later objects are drawn on top)."""

    objects: tuple[Obj, ...]
    background: tuple[float, float, float] = BACKGROUND

    def __post_init__(self) -> None:
        objs = tuple(self.objects)
        if not all(isinstance(o, Obj) for o in objs):
            raise TypeError("Scene.objects must contain only Obj instances")
        object.__setattr__(self, "objects", objs)

    def __len__(self) -> int:
        return len(self.objects)

    def __iter__(self):
        return iter(self.objects)

    def __getitem__(self, i: int) -> Obj:
        return self.objects[i]

    def replace(self, i: int, **changes) -> "Scene":
        """A copy with object ``i`` changed (``scene.replace(0, color="blue")``)."""
        objs = list(self.objects)
        objs[i] = dataclasses.replace(objs[i], **changes)
        return Scene(tuple(objs), self.background)


def relation_holds(a: Obj, b: Obj, rel: str, margin: float) -> bool:
    """Is ``a`` clearly ``rel`` (left/right/above/below) of ``b``, i.e. offset beyond ``margin``?"""
    check_relation(rel)
    if rel == "left":
        return a.x < b.x - margin
    if rel == "right":
        return a.x > b.x + margin
    if rel == "above":
        return a.y < b.y - margin
    return a.y > b.y + margin


def clear_relations(a: Obj, b: Obj, margin: float) -> list[str]:
    """The relations that clearly hold from ``a`` to ``b`` (0, 1 or 2 of them)."""
    return [r for r in ("left", "right", "above", "below") if relation_holds(a, b, r, margin)]


# --------------------------------------------------------------------------- configuration


@dataclass
class WorldConfig(PresetConfig):
    """Sampling parameters of Shapes World (explained in notebook 01, §The world)."""

    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 3
    colors: tuple[str, ...] = tuple(COLORS)
    shapes: tuple[str, ...] = SHAPES
    sizes: tuple[str, ...] = SIZES
    textures: tuple[str, ...] = ("solid",)
    rotate: bool = False            # random rotations (otherwise every object is upright)
    margin: float = 0.08            # a relation is defined only beyond this offset (fraction of side)
    spacing: float = 1.05           # min center distance, in units of the two circumradii summed
    min_visible: float = 0.7        # each object keeps at least this fraction of its pixels
    max_tries: int = 200            # rejection-sampling budget per scene

    PRESETS: ClassVar[dict] = {
        "tiny": dict(image_size=64, max_objects=3),
        "small": dict(image_size=64, max_objects=4),
        "base": dict(image_size=128, max_objects=6),
    }

    BOUNDS: ClassVar[dict] = dict(image_size="[16, 1024]", min_objects="[1, 8]", max_objects="[1, 8]",
                                  margin="[0, 0.5)", spacing=">0", min_visible="[0, 1]", max_tries=">0")

    def validate(self) -> None:
        if self.min_objects > self.max_objects:
            raise ValueError(f"WorldConfig.min_objects={self.min_objects} is larger than max_objects={self.max_objects}")
        for name, check in (("colors", check_color), ("shapes", check_shape), ("sizes", check_size),
                            ("textures", check_texture)):
            values = getattr(self, name)
            if isinstance(values, str) or not isinstance(values, Iterable):
                raise TypeError(f"WorldConfig.{name} must be a tuple of names, got {values!r}")
            values = tuple(values)
            if not values:
                raise ValueError(f"WorldConfig.{name} must not be empty")
            for v in values:
                check(v)
            object.__setattr__(self, name, values)


def check_num_objects(num_objects: int | tuple[int, int]) -> tuple[int, int]:
    """Normalise ``n`` or ``(lo, hi)`` (inclusive) to a validated pair."""
    if isinstance(num_objects, (int, np.integer)) and not isinstance(num_objects, bool):
        num_objects = (int(num_objects), int(num_objects))
    if (not isinstance(num_objects, (tuple, list)) or len(num_objects) != 2
            or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in num_objects)):
        raise TypeError(f"num_objects must be an int or a (min, max) pair of ints, got {num_objects!r}")
    lo, hi = int(num_objects[0]), int(num_objects[1])
    if not 1 <= lo <= hi <= 8:
        raise ValueError(f"num_objects must satisfy 1 <= min <= max <= 8, got ({lo}, {hi})")
    return lo, hi


# --------------------------------------------------------------------------- sampling


Composition = tuple[str, str]  # (color, shape)


def _placement_ok(new: Obj, placed: list[Obj], cfg: WorldConfig) -> bool:
    for o in placed:
        dx, dy = new.x - o.x, new.y - o.y
        if math.hypot(dx, dy) < cfg.spacing * (new.radius + o.radius):
            return False
        if abs(dx) <= cfg.margin and abs(dy) <= cfg.margin:  # no clear relation on either axis
            return False
    return True


def sample_attributes(
    rng: np.random.Generator,
    cfg: WorldConfig,
    allowed: set[Composition] | None = None,
) -> dict:
    """Sample shape/color/size/texture/rotation; ``allowed`` restricts the (color, shape) pairs."""
    if allowed is not None:
        comps = sorted(allowed)
        if not comps:
            raise ValueError("no (color, shape) composition is allowed")
        color, shape = comps[int(rng.integers(len(comps)))]
    else:
        color = cfg.colors[int(rng.integers(len(cfg.colors)))]
        shape = cfg.shapes[int(rng.integers(len(cfg.shapes)))]
    size = cfg.sizes[int(rng.integers(len(cfg.sizes)))]
    texture = cfg.textures[int(rng.integers(len(cfg.textures)))]
    rotation = float(rng.uniform(0.0, 360.0)) if cfg.rotate else 0.0
    return dict(shape=shape, color=color, size=size, texture=texture, rotation=rotation)


def sample_scene(
    rng: np.random.Generator,
    config: WorldConfig | None = None,
    num_objects: int | tuple[int, int] | None = None,
    allowed: set[Composition] | None = None,
    required: set[Composition] | None = None,
) -> Scene:
    """Sample a scene: CLEVR-style rejection sampling of attributes and positions.

    ``allowed``: the (color, shape) compositions objects may use (default: all of ``config``);
    ``required``: if given, the first object's composition is drawn from it (a compositional test
    scene contains at least one held-out pair). Deterministic given ``rng``.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    cfg = config if config is not None else WorldConfig()
    if not isinstance(cfg, WorldConfig):
        raise TypeError(f"config must be a WorldConfig, got {type(cfg).__name__}")
    lo, hi = check_num_objects((cfg.min_objects, cfg.max_objects) if num_objects is None else num_objects)
    if allowed is None:
        allowed_set = {(c, s) for c in cfg.colors for s in cfg.shapes}
    else:
        allowed_set = set(allowed)
    if required is not None and not required:
        raise ValueError("required compositions must not be empty")
    from vlm_primer.world.render import visible_fractions  # local import: render imports scene

    for _ in range(cfg.max_tries):
        n = int(rng.integers(lo, hi + 1))
        placed: list[Obj] = []
        for i in range(n):
            attrs = sample_attributes(rng, cfg, set(required) if (i == 0 and required) else allowed_set)
            r = SIZE_RADIUS[attrs["size"]]
            for _ in range(50):
                x, y = rng.uniform(r, 1.0 - r, size=2)
                obj = Obj(x=float(x), y=float(y), **attrs)
                if _placement_ok(obj, placed, cfg):
                    placed.append(obj)
                    break
            else:
                break  # could not place: resample the whole scene
        if len(placed) == n:
            scene = Scene(tuple(placed))
            if cfg.min_visible <= 0 or min(visible_fractions(scene, cfg.image_size)) >= cfg.min_visible:
                return scene
    raise ValueError(
        f"could not place {lo}-{hi} objects in {cfg.max_tries} tries (spacing={cfg.spacing}, "
        f"margin={cfg.margin}); use fewer objects or a smaller spacing/margin"
    )
