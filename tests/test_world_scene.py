"""Scene graphs, configs and the CLEVR-style sampler (chapter 01)."""

import itertools
import math

import numpy as np
import pytest

from vlm_primer.world import Obj, Scene, WorldConfig, clear_relations, sample_scene, visible_fractions
from vlm_primer.world.vocab import COLORS, SHAPES


def test_presets_and_defaults():
    assert WorldConfig().image_size == 64
    assert WorldConfig.from_preset("tiny").max_objects == 3
    assert WorldConfig.from_preset("base").image_size == 128
    with pytest.raises(ValueError, match="unknown preset"):
        WorldConfig.from_preset("huge")


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        (dict(image_size=4), ValueError),
        (dict(image_size=64.0), TypeError),
        (dict(colors=("red", "mauve")), ValueError),
        (dict(shapes=("circle", "blob")), ValueError),
        (dict(colors=()), ValueError),
        (dict(colors="red"), TypeError),
        (dict(min_objects=3, max_objects=2), ValueError),
        (dict(margin=0.7), ValueError),
    ],
)
def test_bad_config(kwargs, exc):
    with pytest.raises(exc):
        WorldConfig(**kwargs)


def test_bad_objects():
    with pytest.raises(ValueError, match="unknown color"):
        Obj("circle", "mauve")
    with pytest.raises(ValueError, match="unknown shape"):
        Obj("blob", "red")
    with pytest.raises(TypeError):
        Obj("circle", 3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Obj("circle", "red", x=1.5)
    with pytest.raises(TypeError):
        Scene(("not an object",))
    with pytest.raises(TypeError, match="Generator"):
        sample_scene(0)
    with pytest.raises(ValueError, match="num_objects"):
        sample_scene(np.random.default_rng(0), num_objects=(0, 2))
    with pytest.raises(TypeError, match="num_objects"):
        sample_scene(np.random.default_rng(0), num_objects="two")


def test_sampling_is_deterministic():
    a = [sample_scene(np.random.default_rng(7), WorldConfig()) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    b = sample_scene(np.random.default_rng(8), WorldConfig())
    assert a[0] != b


def test_margins_spacing_and_visibility():
    cfg = WorldConfig(max_objects=5)
    rng = np.random.default_rng(0)
    for _ in range(200):
        scene = sample_scene(rng, cfg, num_objects=(2, 5))
        for a, b in itertools.combinations(scene.objects, 2):
            # every pair has at least one unambiguous relation, and none is borderline-used
            assert clear_relations(a, b, cfg.margin)
            assert math.hypot(a.x - b.x, a.y - b.y) >= cfg.spacing * (a.radius + b.radius) - 1e-12
        for o in scene:
            assert o.radius <= o.x <= 1 - o.radius and o.radius <= o.y <= 1 - o.radius
        assert min(visible_fractions(scene, cfg.image_size)) >= cfg.min_visible


def test_visibility_detects_occlusion():
    front = Obj("square", "red", "large", x=0.5, y=0.5)
    hidden = Scene((Obj("circle", "blue", "small", x=0.5, y=0.5), front))
    assert visible_fractions(hidden)[0] < 0.01 and visible_fractions(hidden)[1] == 1.0
    # with overlaps allowed, the sampler still enforces min_visible
    cfg = WorldConfig(spacing=0.3, min_visible=0.8, max_objects=4)
    rng = np.random.default_rng(1)
    for _ in range(50):
        assert min(visible_fractions(sample_scene(rng, cfg), 64)) >= 0.8


def test_allowed_and_required_compositions():
    rng = np.random.default_rng(0)
    allowed = {("red", "circle"), ("blue", "square")}
    for _ in range(30):
        s = sample_scene(rng, WorldConfig(), num_objects=3, allowed=allowed)
        assert {o.composition for o in s} <= allowed
        s = sample_scene(rng, WorldConfig(), num_objects=2, required={("green", "star")})
        assert s[0].composition == ("green", "star")
    assert len(COLORS) == 8 and len(SHAPES) == 6
