"""A larger view of Shapes World: a scene spread over a grid of cells, for LLaVA-NeXT's AnyRes.

Explained in notebook 05, §AnyRes. The tiny towers of the zoo read objects at one scale only, the one
they were trained on (a 48 px image of large objects). A *mosaic* keeps that scale inside each cell and
makes the whole image ``grid`` times larger: each object of a sampled scene moves into its own cell
(drawn at random), keeping its place inside it. Squeezed back to one cell's size, the image shows the
objects ``grid`` times smaller than the tower knows them; cut into cell-sized tiles, as AnyRes cuts it,
every object is back at its scale, whole, inside one tile.

The mosaic's scene graph holds the objects at their positions in the whole image, so questions and
answers (:mod:`vlm_primer.world.vqa`) are read off it as for any scene.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from vlm_primer.validate import check_int
from vlm_primer.world.render import render
from vlm_primer.world.scene import Scene
from vlm_primer.world.tasks import ShapesVQADataset

__all__ = ["MosaicVQADataset", "render_mosaic", "spread_scene"]


def _check_scene(scene: Any) -> Scene:
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a Scene (from sample_scene or a dataset's scene()), got {type(scene).__name__}")
    return scene


def _check_grid(grid: Any) -> int:
    return check_int(grid, "grid", hint="cells per side")


def spread_scene(scene: Scene, rng: np.random.Generator, grid: int = 2) -> Scene:
    """``scene`` with each object moved into its own cell of a ``grid`` x ``grid`` mosaic (cells drawn by
    ``rng`` without replacement), at the same place inside the cell; positions are in the whole image."""
    grid, scene = _check_grid(grid), _check_scene(scene)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if len(scene.objects) > grid * grid:
        raise ValueError(f"a {grid}x{grid} mosaic has {grid * grid} cells for one object each, "
                         f"the scene has {len(scene.objects)} objects")
    cells = rng.permutation(grid * grid)[:len(scene.objects)]
    moved = tuple(dataclasses.replace(o, x=(int(c) % grid + o.x) / grid, y=(int(c) // grid + o.y) / grid)
                  for o, c in zip(scene.objects, cells))
    return Scene(moved, scene.background)


def render_mosaic(scene: Scene, cell: int, grid: int = 2) -> torch.Tensor:
    """A mosaic scene (from :func:`spread_scene`) as a ``(3, grid * cell, grid * cell)`` image: each cell is
    rendered as a ``cell`` px scene of the objects whose centre lies in it, so they keep their size in pixels."""
    grid, scene = _check_grid(grid), _check_scene(scene)
    cells: dict[tuple[int, int], list] = {}
    for o in scene.objects:
        r, c = min(int(o.y * grid), grid - 1), min(int(o.x * grid), grid - 1)
        cells.setdefault((r, c), []).append(dataclasses.replace(o, x=o.x * grid - c, y=o.y * grid - r))
    rows = [torch.cat([render(Scene(tuple(cells.get((r, c), ())), scene.background), cell) for c in range(grid)], 2)
            for r in range(grid)]
    return torch.cat(rows, 1)


class MosaicVQADataset(ShapesVQADataset):
    """:class:`~vlm_primer.world.ShapesVQADataset` on mosaics: the scenes of ``config`` (cell-sized images,
    ``image_size`` px) spread over a ``grid`` x ``grid`` mosaic; items as there, ``image`` is
    ``(3, grid * image_size, grid * image_size)`` and ``scene`` the mosaic's scene graph."""

    def __init__(self, split: str = "train", size: int = 1000, *, grid: int = 2, **kw: Any) -> None:
        super().__init__(split, size, **kw)
        self.grid = _check_grid(grid)
        if self.num_objects[1] > grid * grid:
            raise ValueError(f"num_objects up to {self.num_objects[1]} do not fit one per cell of a {grid}x{grid} "
                             "mosaic")

    def scene(self, index: int) -> tuple[Scene, np.random.Generator]:
        scene, rng = super().scene(index)
        return spread_scene(scene, rng, self.grid), rng

    def image(self, scene: Scene) -> torch.Tensor:
        return render_mosaic(scene, self.config.image_size, self.grid)
