"""The anti-aliased SDF renderer and boxes (chapter 01)."""

import math

import numpy as np
import pytest
import torch

from vlm_primer.world import Obj, Scene, WorldConfig, boxes, object_coverage, render, render_batch, sample_scene
from vlm_primer.world.render import object_box
from vlm_primer.world.vocab import BACKGROUND, COLORS, SHAPES


def test_shape_range_dtype_any_size():
    scene = sample_scene(np.random.default_rng(0), WorldConfig())
    for size in (32, 64, 97):
        img = render(scene, size)
        assert img.shape == (3, size, size) and img.dtype == torch.float32
        assert img.min() >= 0 and img.max() <= 1
    batch = render_batch([scene, scene], 48)
    assert batch.shape == (2, 3, 48, 48) and torch.equal(batch[0], render(scene, 48))


def test_empty_scene_is_background():
    img = render(Scene(()), 16)
    assert torch.allclose(img, torch.tensor(BACKGROUND).view(3, 1, 1).expand(3, 16, 16))


@pytest.mark.parametrize("shape", SHAPES)
def test_antialiasing_and_area(shape):
    obj = Obj(shape, "white", "large", x=0.5, y=0.5, rotation=17.0)
    _, _, cov = object_coverage(obj, 128)
    # edges get intermediate coverage, the interior is fully covered
    assert ((cov > 0.05) & (cov < 0.95)).sum() > 20
    assert (cov == 1.0).sum() > 100
    # the coverage integrates to (close to) the analytic area
    R = obj.radius * 128
    area = {
        "circle": math.pi * (0.8 * R) ** 2,
        "square": (1.4 * R) ** 2,
        "triangle": 3 * math.sqrt(3) / 4 * R**2,
        "diamond": 2 * 0.62 * R * R,
        "hexagon": 3 * math.sqrt(3) / 2 * (0.92 * R) ** 2,
    }.get(shape)
    if area is not None:
        assert abs(cov.sum() - area) / area < 0.02


def test_colors_are_rendered_and_distinct():
    scene = Scene(tuple(Obj("square", c, "large", x=0.1 + 0.8 * i / 7, y=0.5) for i, c in enumerate(COLORS)))
    img = render(scene, 256)
    centres = [img[:, 128, int(o.x * 256)] for o in scene]
    for c, px in zip(COLORS, centres):
        assert torch.allclose(px, torch.tensor(COLORS[c]), atol=1e-6)
    d = torch.cdist(torch.stack(centres), torch.stack(centres)) + torch.eye(8) * 9
    assert d.min() > 0.3


def test_boxes_contain_the_object_pixels():
    rng = np.random.default_rng(3)
    cfg = WorldConfig(rotate=True, max_objects=4)
    for _ in range(40):
        scene = sample_scene(rng, cfg)
        b = boxes(scene, 64)
        assert b.shape == (len(scene), 4)
        for obj, (x0, y0, x1, y1) in zip(scene, b.tolist()):
            r0, c0, cov = object_coverage(obj, 64)
            rows, cols = np.nonzero(cov > 0)
            # pixel (r, c) covers [c, c+1) x [r, r+1); a covered pixel's centre lies within 0.5 px of the shape
            assert (cols + c0 + 0.5 >= x0 - 0.5).all() and (cols + c0 + 0.5 <= x1 + 0.5).all()
            assert (rows + r0 + 0.5 >= y0 - 0.5).all() and (rows + r0 + 0.5 <= y1 + 0.5).all()
            # and the box is tight: covered pixels reach within 1.5 px of each side
            assert cols.min() + c0 + 0.5 <= x0 + 1.5 and cols.max() + c0 + 0.5 >= x1 - 1.5
            assert rows.min() + r0 + 0.5 <= y0 + 1.5 and rows.max() + r0 + 0.5 >= y1 - 1.5


def test_object_pixels_have_its_color():
    obj = Obj("hexagon", "orange", "large", x=0.3, y=0.7)
    img = render(Scene((obj,)), 64)
    x0, y0, x1, y1 = object_box(obj, 64)
    centre = img[:, int(0.7 * 64), int(0.3 * 64)]
    assert torch.allclose(centre, torch.tensor(COLORS["orange"]))
    outside = img[:, 2, 60]
    assert torch.allclose(outside, torch.tensor(BACKGROUND))


def test_striped_texture_differs():
    solid = render(Scene((Obj("square", "red", texture="solid"),)), 64)
    striped = render(Scene((Obj("square", "red", texture="striped"),)), 64)
    assert (solid - striped).abs().sum() > 10


def test_bad_render_input():
    with pytest.raises(TypeError, match="Scene"):
        render("scene")
    with pytest.raises(ValueError, match="image size"):
        render(Scene(()), 2)
    with pytest.raises(TypeError, match="image size"):
        render(Scene(()), 64.0)
    with pytest.raises(ValueError, match="non-empty"):
        render_batch([])
