"""Anti-aliased renderer: scene graph -> float RGB tensor ``(3, H, W)`` in ``[0, 1]`` plus boxes.

Explained in notebook 01, §Rendering. Each shape is a *signed distance function* (SDF, negative
inside; formulas after Inigo Quilez's 2D distance functions) evaluated at pixel centres in pixel
units; ``coverage = clip(0.5 - sdf, 0, 1)`` is the fraction of a pixel the shape covers near a
straight edge, so edges get intermediate values (anti-aliasing) at the cost of one clip. Only the
pixels inside each object's bounding box are evaluated, which keeps a 64x64 scene well under a
millisecond on one core. Objects are alpha-composited in order (later objects on top).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from vlm_primer.world.scene import Obj, Scene
from vlm_primer.world.vocab import COLORS

# Shape proportions in units of the circumradius R (every shape fits in the circle of radius R).
CIRCLE_R = 0.8
SQUARE_HALF = 0.7
DIAMOND_HALF = (0.62, 1.0)          # half width, half height (a non-square rhombus)
HEX_CIRCUM = 0.92
STAR_INNER = 0.45                   # iq's star "rf" parameter
_SQ3 = math.sqrt(3.0)

_COLOR_ARR = {name: np.asarray(rgb, dtype=np.float32).reshape(3, 1, 1) for name, rgb in COLORS.items()}


# --------------------------------------------------------------------------- signed distances
# u, v: local coordinates in pixels, u to the right and v *up*; R: circumradius in pixels.


def _sd_circle(u: np.ndarray, v: np.ndarray, R: float) -> np.ndarray:
    return np.sqrt(u * u + v * v) - CIRCLE_R * R


def _sd_square(u: np.ndarray, v: np.ndarray, R: float) -> np.ndarray:
    b = SQUARE_HALF * R
    dx, dy = np.abs(u) - b, np.abs(v) - b
    outside = np.sqrt(np.maximum(dx, 0.0) ** 2 + np.maximum(dy, 0.0) ** 2)
    return outside + np.minimum(np.maximum(dx, dy), 0.0)


def _sd_triangle(u: np.ndarray, v: np.ndarray, R: float) -> np.ndarray:
    r = R * _SQ3 / 2.0  # half the side of an equilateral triangle with circumradius R
    px = np.abs(u) - r
    py = v + r / _SQ3
    fold = px + _SQ3 * py > 0.0
    qx = np.where(fold, (px - _SQ3 * py) / 2.0, px)
    qy = np.where(fold, (-_SQ3 * px - py) / 2.0, py)
    qx = qx - np.clip(qx, -2.0 * r, 0.0)
    return -np.sqrt(qx * qx + qy * qy) * np.sign(qy)


def _sd_diamond(u: np.ndarray, v: np.ndarray, R: float) -> np.ndarray:
    bx, by = DIAMOND_HALF[0] * R, DIAMOND_HALF[1] * R
    px, py = np.abs(u), np.abs(v)
    h = np.clip(((bx - 2 * px) * bx - (by - 2 * py) * by) / (bx * bx + by * by), -1.0, 1.0)
    dx, dy = px - 0.5 * bx * (1.0 - h), py - 0.5 * by * (1.0 + h)
    return np.sqrt(dx * dx + dy * dy) * np.sign(px * by + py * bx - bx * by)


def _sd_hexagon(u: np.ndarray, v: np.ndarray, R: float) -> np.ndarray:
    r = HEX_CIRCUM * R * _SQ3 / 2.0  # apothem; flat top and bottom edges
    kx, ky, kz = -0.866025404, 0.5, 0.577350269
    px, py = np.abs(u), np.abs(v)
    d = 2.0 * np.minimum(kx * px + ky * py, 0.0)
    px, py = px - d * kx, py - d * ky
    px = px - np.clip(px, -kz * r, kz * r)
    py = py - r
    return np.sqrt(px * px + py * py) * np.sign(py)


def _sd_star(u: np.ndarray, v: np.ndarray, R: float) -> np.ndarray:
    k1x, k1y = 0.809016994375, -0.587785252292
    k2x, k2y = -k1x, k1y
    px, py = np.abs(u), v
    d = 2.0 * np.maximum(k1x * px + k1y * py, 0.0)
    px, py = px - d * k1x, py - d * k1y
    d = 2.0 * np.maximum(k2x * px + k2y * py, 0.0)
    px, py = np.abs(px - d * k2x), py - d * k2y
    py = py - R
    bax, bay = STAR_INNER * -k1y, STAR_INNER * k1x - 1.0
    h = np.clip((px * bax + py * bay) / (bax * bax + bay * bay), 0.0, R)
    dx, dy = px - bax * h, py - bay * h
    return np.sqrt(dx * dx + dy * dy) * np.sign(py * bax - px * bay)


SDF = {
    "circle": _sd_circle,
    "square": _sd_square,
    "triangle": _sd_triangle,
    "diamond": _sd_diamond,
    "star": _sd_star,
    "hexagon": _sd_hexagon,
}


def _hull(shape: str) -> np.ndarray | None:
    """Convex-hull vertices (units of R, v up) used for tight boxes; None for the circle."""
    if shape == "square":
        b = SQUARE_HALF
        return np.array([[-b, -b], [b, -b], [b, b], [-b, b]])
    if shape == "triangle":
        return np.array([[0.0, 1.0], [-_SQ3 / 2, -0.5], [_SQ3 / 2, -0.5]])
    if shape == "diamond":
        bx, by = DIAMOND_HALF
        return np.array([[bx, 0.0], [0.0, by], [-bx, 0.0], [0.0, -by]])
    if shape == "hexagon":
        a = np.deg2rad(np.arange(6) * 60.0)
        return HEX_CIRCUM * np.stack([np.cos(a), np.sin(a)], 1)
    if shape == "star":
        a = np.deg2rad(90.0 + np.arange(5) * 72.0)
        return np.stack([np.cos(a), np.sin(a)], 1)
    return None


_HULLS = {s: _hull(s) for s in SDF}


# --------------------------------------------------------------------------- per-object coverage


def _check_size(size: object) -> int:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
        raise TypeError(f"image size must be an int number of pixels, got {type(size).__name__}")
    if not 8 <= int(size) <= 4096:
        raise ValueError(f"image size must be in [8, 4096] pixels, got {size}")
    return int(size)


def object_box(obj: Obj, size: int) -> tuple[float, float, float, float]:
    """Tight analytic box ``(x0, y0, x1, y1)`` in pixels (continuous coordinates, y down)."""
    R = obj.radius * size
    cx, cy = obj.x * size, obj.y * size
    hull = _HULLS[obj.shape]
    if hull is None:
        r = CIRCLE_R * R
        return (cx - r, cy - r, cx + r, cy + r)
    t = math.radians(obj.rotation)
    c, s = math.cos(t), math.sin(t)
    wx = c * hull[:, 0] - s * hull[:, 1]
    wy = s * hull[:, 0] + c * hull[:, 1]
    return (cx + R * wx.min(), cy - R * wy.max(), cx + R * wx.max(), cy - R * wy.min())


def object_coverage(obj: Obj, size: int) -> tuple[int, int, np.ndarray]:
    """Anti-aliased coverage of one object in its box: ``(row0, col0, cov)``, cov in ``[0, 1]``."""
    R = obj.radius * size
    cx, cy = obj.x * size, obj.y * size
    # pixels whose centre is within R + 1 of the object's centre (coverage > 0 needs sdf < 0.5)
    c0, c1 = max(int(cx - R - 1.0), 0), min(int(cx + R + 1.0) + 1, size)
    r0, r1 = max(int(cy - R - 1.0), 0), min(int(cy + R + 1.0) + 1, size)
    u = (np.arange(c0, c1, dtype=np.float32) + 0.5 - cx)[None, :]
    v = (cy - 0.5 - np.arange(r0, r1, dtype=np.float32))[:, None]   # up is +v
    if obj.rotation:
        t = math.radians(obj.rotation)
        c, s = math.cos(t), math.sin(t)
        u, v = c * u + s * v, -s * u + c * v
    sd = SDF[obj.shape](u, v, R)
    cov = np.clip(0.5 - sd, 0.0, 1.0)
    if cov.ndim == 1 or cov.shape != (r1 - r0, c1 - c0):
        cov = np.broadcast_to(cov, (r1 - r0, c1 - c0))
    return r0, c0, cov.astype(np.float32, copy=False)


def _texture(obj: Obj, cov_shape: tuple[int, int], r0: int, c0: int, size: int) -> np.ndarray | float:
    if obj.texture == "solid":
        return 1.0
    R = obj.radius * size
    t = math.radians(obj.rotation)
    rows = np.arange(r0, r0 + cov_shape[0])[:, None] + 0.5 - obj.y * size
    cols = np.arange(c0, c0 + cov_shape[1])[None, :] + 0.5 - obj.x * size
    along = math.cos(t + math.pi / 4) * cols - math.sin(t + math.pi / 4) * rows
    period = max(2.0, 0.4 * R)
    return 1.0 - 0.5 * (np.floor(along / period) % 2)


# --------------------------------------------------------------------------- scenes


def render_numpy(scene: Scene, size: int = 64) -> np.ndarray:
    """Render to a float32 numpy array ``(3, size, size)`` in ``[0, 1]``."""
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a Scene, got {type(scene).__name__}")
    size = _check_size(size)
    img = np.empty((3, size, size), dtype=np.float32)
    img[:] = np.asarray(scene.background, dtype=np.float32).reshape(3, 1, 1)
    for obj in scene.objects:
        r0, c0, cov = object_coverage(obj, size)
        h, w = cov.shape
        if h == 0 or w == 0:
            continue
        patch = img[:, r0:r0 + h, c0:c0 + w]
        color = _COLOR_ARR[obj.color] * _texture(obj, cov.shape, r0, c0, size)
        patch += cov * (color - patch)
    return img


def render(scene: Scene, size: int = 64, *, return_boxes: bool = False):
    """Render ``scene`` to a float tensor ``(3, size, size)`` in ``[0, 1]`` (and boxes if asked)."""
    img = torch.from_numpy(render_numpy(scene, size))
    return (img, boxes(scene, size)) if return_boxes else img


def render_batch(scenes: Sequence[Scene], size: int = 64) -> torch.Tensor:
    """Render a list of scenes into one ``(B, 3, size, size)`` tensor."""
    if isinstance(scenes, Scene) or not isinstance(scenes, Sequence) or len(scenes) == 0:
        raise ValueError("scenes must be a non-empty sequence of Scene")
    size = _check_size(size)
    out = np.empty((len(scenes), 3, size, size), dtype=np.float32)
    for i, scene in enumerate(scenes):
        out[i] = render_numpy(scene, size)
    return torch.from_numpy(out)


def boxes(scene: Scene, size: int = 64) -> torch.Tensor:
    """Pixel boxes ``(N, 4)`` as ``x0, y0, x1, y1`` (float32, continuous coordinates, y down)."""
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a Scene, got {type(scene).__name__}")
    size = _check_size(size)
    out = torch.tensor([object_box(o, size) for o in scene.objects], dtype=torch.float32)
    return out.reshape(len(scene), 4).clamp_(0, size)


def visible_fractions(scene: Scene, size: int = 64) -> list[float]:
    """Fraction of each object's coverage left visible after the objects drawn on top of it."""
    size = _check_size(size)
    objs = scene.objects
    fractions = [1.0] * len(objs)
    for i, a in enumerate(objs):
        above = [b for b in objs[i + 1:] if math.hypot(a.x - b.x, a.y - b.y) < a.radius + b.radius]
        if not above:
            continue
        r0, c0, cov = object_coverage(a, size)
        visible = cov.astype(np.float64).copy()
        for b in above:
            s0, d0, cb = object_coverage(b, size)
            full = np.zeros((size, size))
            full[s0:s0 + cb.shape[0], d0:d0 + cb.shape[1]] = cb
            visible *= 1.0 - full[r0:r0 + cov.shape[0], c0:c0 + cov.shape[1]]
        total = float(cov.sum())
        fractions[i] = float(visible.sum()) / total if total > 0 else 0.0
    return fractions
