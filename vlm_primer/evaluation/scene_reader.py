"""An exact reader of Shapes World images: which colour and which shape each object is, from pixels alone.

Explained in notebook 04b, §Measuring faithfulness. A text-to-image model is judged by whether its image shows
what the prompt says. Instead of a learned judge (which has its own errors), Shapes World can be *read back*:
the background is one known colour, so the objects are the connected blobs that differ from it. For each blob,

* **colour**: the palette colour nearest (in RGB) to the median of the half of its pixels farthest (in RGB) from
  the background (its inside, not the anti-aliased edge);
* **shape**: the world's renderer draws each of the six shapes, in that colour, at the blob's centre (and one
  pixel around it) at every size of the world; the shape whose render is nearest in squared error to the image
  around the blob wins.

The reader is itself checked before it judges anything: on real renders it must read back the scene graph
(:func:`reading_accuracy`), which is the ceiling any generated image can reach.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vlm_primer.validate import check_images
from vlm_primer.world.render import object_coverage
from vlm_primer.world.scene import Obj
from vlm_primer.world.vocab import BACKGROUND, COLORS, SHAPES, SIZES

__all__ = ["Reading", "read_objects", "read_largest", "reading_accuracy"]

_PALETTE = np.asarray(list(COLORS.values()), dtype=np.float32)
_NAMES = tuple(COLORS)
_BG = np.asarray(BACKGROUND, dtype=np.float32)


@dataclass(frozen=True)
class Reading:
    """One object read from an image: its colour and shape names, centre (fractions of the side) and pixel count."""

    color: str
    shape: str
    x: float
    y: float
    pixels: int


def _blobs(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean ``(H, W)`` mask, as arrays of ``(row, col)`` pixels, largest first."""
    seen = np.zeros_like(mask)
    blobs = []
    for r0, c0 in zip(*np.nonzero(mask)):
        if seen[r0, c0]:
            continue
        stack, pixels = [(r0, c0)], []
        seen[r0, c0] = True
        while stack:
            r, c = stack.pop()
            pixels.append((r, c))
            for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= rr < mask.shape[0] and 0 <= cc < mask.shape[1] and mask[rr, cc] and not seen[rr, cc]:
                    seen[rr, cc] = True
                    stack.append((rr, cc))
        blobs.append(np.asarray(pixels))
    return sorted(blobs, key=len, reverse=True)


def _shape_of(img: np.ndarray, color: str, cy: float, cx: float, sizes: tuple[str, ...]) -> str:
    """The shape whose render (in ``color``, centred within a pixel of ``(cy, cx)``) best matches ``img``."""
    size = img.shape[1]
    rgb = _PALETTE[_NAMES.index(color)].reshape(3, 1, 1)
    best, best_err = SHAPES[0], np.inf
    for shape in SHAPES:
        for obj_size in sizes:
            for dy in (-1.0, 0.0, 1.0):
                for dx in (-1.0, 0.0, 1.0):
                    x = float(np.clip((cx + dx) / size, 0, 1))
                    y = float(np.clip((cy + dy) / size, 0, 1))
                    r0, c0, cov = object_coverage(Obj(shape, color, obj_size, x, y), size)
                    h, w = cov.shape
                    pad = 2  # compare on the object's box and a margin around it
                    ra, rb, ca, cb = max(r0 - pad, 0), min(r0 + h + pad, size), max(c0 - pad, 0), min(c0 + w + pad, size)
                    canvas = np.broadcast_to(_BG.reshape(3, 1, 1), (3, rb - ra, cb - ca)).copy()
                    sub = canvas[:, r0 - ra:r0 - ra + h, c0 - ca:c0 - ca + w]
                    sub += cov * (rgb - sub)
                    err = float(((img[:, ra:rb, ca:cb] - canvas) ** 2).sum())
                    if err < best_err:
                        best, best_err = shape, err
    return best


def read_objects(image: torch.Tensor, threshold: float = 0.25, min_pixels: int = 4,
                 sizes: tuple[str, ...] = SIZES) -> list[Reading]:
    """Every object in one Shapes World image ``(3, H, W)`` with values in ``[0, 1]``, largest first.

    ``threshold``: how far (RGB distance) from the background a pixel must be to belong to an object;
    ``min_pixels``: smaller blobs are noise; ``sizes``: the object sizes the world draws (fewer is faster).
    Explained in notebook 04b, §Measuring faithfulness.
    """
    image = check_images(image[None] if isinstance(image, torch.Tensor) and image.dim() == 3 else image,
                         name="image", channels=3)
    if len(image) != 1:
        raise ValueError(f"image must be one (3, H, W) image, got a batch of {len(image)}")
    img = image[0].detach().float().clamp(0, 1).cpu().numpy()
    dist = np.sqrt(((img - _BG.reshape(3, 1, 1)) ** 2).sum(0))
    out = []
    for blob in _blobs(dist > threshold):
        if len(blob) < min_pixels:
            break
        rows, cols = blob[:, 0], blob[:, 1]
        core = dist[rows, cols] >= np.quantile(dist[rows, cols], 0.5)   # the inside, not the anti-aliased edge
        rgb = np.median(img[:, rows[core], cols[core]], axis=1)
        color = _NAMES[int(((_PALETTE - rgb) ** 2).sum(1).argmin())]
        cy, cx = rows.mean() + 0.5, cols.mean() + 0.5
        shape = _shape_of(img, color, cy, cx, sizes)
        out.append(Reading(color, shape, cx / img.shape[2], cy / img.shape[1], len(blob)))
    return out


def read_largest(images: torch.Tensor, **kwargs) -> list[tuple[str, str] | None]:
    """``(colour, shape)`` of the largest object of each image ``(B, 3, H, W)`` in ``[0, 1]`` (None: no object)."""
    images = check_images(images, name="images", channels=3)
    out = []
    for img in images:
        found = read_objects(img, **kwargs)
        out.append((found[0].color, found[0].shape) if found else None)
    return out


def reading_accuracy(images: torch.Tensor, targets: list[tuple[str, str]], **kwargs) -> dict[str, float]:
    """How often the largest object read from ``images`` has the target colour, shape, and both.

    On real renders this checks the reader; on generated images it measures faithfulness to the prompt.
    """
    if len(images) != len(targets):
        raise ValueError(f"images ({len(images)}) and targets ({len(targets)}) must have the same length")
    read = read_largest(images, **kwargs)
    color = [r is not None and r[0] == t[0] for r, t in zip(read, targets)]
    shape = [r is not None and r[1] == t[1] for r, t in zip(read, targets)]
    return {"color": float(np.mean(color)), "shape": float(np.mean(shape)),
            "both": float(np.mean([a and b for a, b in zip(color, shape)]))}
