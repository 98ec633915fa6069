"""LLaVA-NeXT's AnyRes: a large or non-square image as a base view plus a grid of tiles.

Explained in notebook 05, §AnyRes (Liu et al. 2024, "LLaVA-NeXT"). For an image of ``(H, W)`` pixels:

1. choose the grid resolution from ``grid_pinpoints`` that keeps the most of the image's pixels and
   wastes the least padding (:func:`select_best_resolution`);
2. resize the image to fit it (keeping the aspect ratio), pad the rest, cut it into tiles of the
   tower's ``image_size``; the **base** view is the whole image squeezed to ``image_size``
   (:func:`anyres_tiles`);
3. encode base and tiles with the tower and the connector; lay the tiles' tokens out as one large
   feature map, **unpad** it (drop the rows or columns that were padding), and end every row with a
   learned ``image_newline`` token; the image's tokens are the base's followed by that map.

So the token count depends on the image's size (:meth:`LlavaNext.num_image_tokens`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vlm_primer.backbones.llava import Llava, LlavaConfig
from vlm_primer.validate import check_images, check_tokens

__all__ = ["LlavaNext", "LlavaNextConfig", "anyres_tiles", "anyres_view", "fitted_size", "select_best_resolution",
           "unpadded_shape"]


def select_best_resolution(size: Sequence[int], pinpoints: Sequence[Sequence[int]]) -> tuple[int, int]:
    """The ``(h, w)`` of ``pinpoints`` that shows most of an image of ``size = (H, W)`` (its effective
    resolution, capped at the original's pixels), ties broken by the least wasted area."""
    h0, w0 = int(size[0]), int(size[1])
    best, best_eff, best_waste = None, 0, float("inf")
    for h, w in pinpoints:
        scale = min(w / w0, h / h0)
        eff = min(int(w0 * scale) * int(h0 * scale), w0 * h0)
        waste = w * h - eff
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = (int(h), int(w)), eff, waste
    return best


def unpadded_shape(size: Sequence[int], current: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of a ``current = (h, w)`` feature map that cover an image of ``size = (H, W)``
    resized into it and centred (the rest was padding); the arithmetic of LLaVA-NeXT's ``unpad_image``."""
    (h0, w0), (h, w) = (int(size[0]), int(size[1])), current
    if w0 / h0 > w / h:  # wider than the map: padding above and below
        pad = (h - int(round(h0 * (w / w0), 7))) // 2
        return slice(pad, h - pad), slice(0, w)
    pad = (w - int(round(w0 * (h / h0), 7))) // 2
    return slice(0, h), slice(pad, w - pad)


def fitted_size(size: Sequence[int], target: Sequence[int]) -> tuple[int, int]:
    """The ``(h, w)`` an image of ``size = (H, W)`` is resized to inside ``target = (h, w)`` before padding: the
    limiting side fills the target exactly, the other is rounded up (``transformers``' ``get_patch_output_size``)."""
    (h0, w0), (th, tw) = (int(size[0]), int(size[1])), (int(target[0]), int(target[1]))
    scale_w, scale_h = tw / w0, th / h0
    if scale_w < scale_h:
        return min(math.ceil(h0 * scale_w), th), tw
    return th, min(math.ceil(w0 * scale_h), tw)


def _resize(image: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """One image ``(3, H, W)`` resized to ``(3, h, w)``, bilinear with antialiasing."""
    return F.interpolate(image[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]


def _check_image(image: Any) -> torch.Tensor:
    """One float image ``(3, H, W)``, not empty."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise ValueError(f"image must be one image (3, H, W), got "
                         f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}")
    check_images(image[None], name="image")
    if min(image.shape[1:]) < 1:
        raise ValueError(f"image is empty (shape {tuple(image.shape)})")
    return image


def anyres_tiles(image: torch.Tensor, tile: int, pinpoints: Sequence[Sequence[int]]) -> torch.Tensor:
    """An image ``(3, H, W)`` -> ``(1 + rows * cols, 3, tile, tile)``: the base view, then the tiles row by row
    of the best resolution (:func:`select_best_resolution`), the image resized to :func:`fitted_size` and centred
    on zero padding.

    Resampling is bilinear with antialiasing (the reference processor uses PIL; the model is what the
    parity tests compare, given the same tiles).
    """
    h0, w0 = _check_image(image).shape[1:]
    th, tw = select_best_resolution((h0, w0), pinpoints)
    nh, nw = fitted_size((h0, w0), (th, tw))
    resized = _resize(image, nh, nw)
    canvas = image.new_zeros(3, th, tw)
    top, left = (th - nh) // 2, (tw - nw) // 2
    canvas[:, top:top + nh, left:left + nw] = resized
    tiles = rearrange(canvas, "c (r h) (k w) -> (r k) c h w", h=tile, w=tile)
    return torch.cat([_resize(image, tile, tile)[None], tiles])


def anyres_view(image: torch.Tensor, cfg: "LlavaNextConfig", transform: Callable | None = None, *,
                squeeze: bool = False) -> tuple[torch.Tensor, tuple[int, int]]:
    """What LLaVA-NeXT is given for one image ``(3, H, W)`` in ``[0, 1]``: its tiles (:func:`anyres_tiles`,
    then ``transform``) and its ``(H, W)``. ``squeeze=True`` first resizes the image to the tower's
    resolution, so the tiles hold no more than a fixed-resolution LLaVA-1.5 would see (the control of
    notebook 05, §AnyRes)."""
    s = cfg.vision.image_size
    if squeeze:
        image = _resize(_check_image(image), s, s)
    tiles = anyres_tiles(image, s, cfg.grid_pinpoints)
    return (tiles if transform is None else transform(tiles)), (int(image.shape[1]), int(image.shape[2]))


@dataclass
class LlavaNextConfig(LlavaConfig):
    """:class:`LlavaConfig` plus the grid resolutions AnyRes may choose, each ``(h, w)`` in pixels."""

    grid_pinpoints: tuple[tuple[int, int], ...] = ((48, 96), (96, 48), (96, 96), (144, 48), (48, 144))

    PRESETS: ClassVar[dict] = {
        "tiny": LlavaConfig.PRESETS["tiny"],
        "base": dict(LlavaConfig.PRESETS["base"], grid_pinpoints=((336, 672), (672, 336), (672, 672), (1008, 336),
                                                                  (336, 1008))),
    }

    def validate(self) -> None:
        super().validate()
        self.grid_pinpoints = tuple(tuple(int(v) for v in p) for p in self.grid_pinpoints)
        s = self.vision.image_size
        bad = [p for p in self.grid_pinpoints if len(p) != 2 or p[0] % s or p[1] % s or min(p) <= 0]
        if not self.grid_pinpoints or bad:
            raise ValueError(f"grid_pinpoints must be (h, w) multiples of the tower's image_size {s}, "
                             f"got {bad or '()'}")
        if self.connector not in ("linear", "mlp"):
            raise ValueError(f"LlavaNext lays the tiles' tokens out on a grid: use the linear or mlp connector, "
                             f"got connector={self.connector!r}")
        if self.select_feature != "patch":
            raise ValueError("LlavaNext lays the tiles' patch tokens out on a grid: select_feature must be 'patch', "
                             f"got {self.select_feature!r}")

    def layout(self, size: Sequence[int]) -> tuple[int, int, slice, slice]:
        """For an image of ``size = (H, W)``: the grid's rows and columns of tiles, and the rows and columns of
        the tiles' feature map that survive unpadding."""
        grid = self.vision.grid
        th, tw = select_best_resolution(size, self.grid_pinpoints)
        rows, cols = th // self.vision.image_size, tw // self.vision.image_size
        return (rows, cols, *unpadded_shape(size, (rows * grid, cols * grid)))

    def num_image_tokens(self, size: Sequence[int]) -> int:
        """Tokens for an image of ``size = (H, W)`` pixels: the base view's, then the unpadded map with
        one newline token per row (no model needed: LLaVA-NeXT-7B's counts come from its config)."""
        _, _, hs, ws = self.layout(size)
        return self.tokens_per_image + (hs.stop - hs.start) * (ws.stop - ws.start + 1)


class LlavaNext(Llava):
    """LLaVA-NeXT: :class:`Llava` with AnyRes tiling and the ``image_newline`` token."""

    CONFIG = LlavaNextConfig

    def __init__(self, cfg: LlavaNextConfig) -> None:
        super().__init__(cfg)
        self.image_newline = nn.Parameter(torch.randn(cfg.text.dim) * cfg.text.dim**-0.5)

    def num_image_tokens(self, size: Sequence[int]) -> int:
        """Tokens for an image of ``size = (H, W)`` pixels (:meth:`LlavaNextConfig.num_image_tokens`)."""
        return self.cfg.num_image_tokens(size)

    def pack(self, features: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """One image's ``(1 + rows*cols, grid^2, dim)`` tile features -> its ``(num_image_tokens, dim)`` tokens."""
        rows, cols, hs, ws = self.cfg.layout(size)
        g = self.cfg.vision.grid
        if features.shape[0] != 1 + rows * cols:
            raise ValueError(f"an image of size {tuple(size)} needs 1 + {rows}x{cols} tiles, got {features.shape[0]}")
        fmap = rearrange(features[1:], "(r k) (h w) d -> (r h) (k w) d", r=rows, k=cols, h=g, w=g)[hs, ws]
        newline = self.image_newline.to(fmap.dtype).expand(fmap.shape[0], 1, -1)
        return torch.cat([features[0], torch.cat([fmap, newline], dim=1).flatten(0, 1)])

    def embed(self, input_ids: Any, pixel_values: Any = None, image_sizes: Any = None) -> torch.Tensor:
        """``pixel_values``: one ``(tiles_i, 3, S, S)`` tensor per image (from :func:`anyres_tiles`) or the
        ``(N_img, max_tiles, 3, S, S)`` stack of them (padded); ``image_sizes``: ``(N_img, 2)`` original (H, W)."""
        cfg = self.cfg
        ids = check_tokens(input_ids, vocab_size=cfg.text.vocab_size, device=self.language_model.tok_emb.weight.device)
        if pixel_values is None:
            self.check_placeholders(ids, [])
            return self.splice(ids, None)
        if image_sizes is None:
            raise ValueError("LlavaNext needs image_sizes, the (H, W) of every image before tiling")
        sizes = [tuple(int(v) for v in s) for s in torch.as_tensor(image_sizes).tolist()]
        if len(sizes) != len(pixel_values):
            raise ValueError(f"{len(pixel_values)} images but {len(sizes)} image_sizes")
        counts = [1 + rows * cols for rows, cols, *_ in map(self.cfg.layout, sizes)]
        tiles = []
        for i, (pv, n, s) in enumerate(zip(pixel_values, counts, sizes)):
            check_images(pv, channels=cfg.vision.channels, size=cfg.vision.image_size, name=f"pixel_values[{i}]",
                         device=ids.device)
            if pv.shape[0] < n:
                raise ValueError(f"image {i} of size {s} needs {n} tiles (the base view + its grid), got "
                                 f"{pv.shape[0]}: make them with anyres_tiles")
            tiles.append(pv[:n])
        self.check_placeholders(ids, [self.num_image_tokens(s) for s in sizes])
        features = self.image_features(torch.cat(tiles)).split(counts)
        return self.splice(ids, torch.cat([self.pack(f, s) for f, s in zip(features, sizes)]))
