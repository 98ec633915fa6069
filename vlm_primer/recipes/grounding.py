"""Grounding (survey §3.4): boxes as regression targets (X-VLM) and boxes as tokens (Kosmos-2), scored on Shapes World.

Chapter 06b (survey §3.4) explains it. A grounded model says *where* a phrase is, not only *whether* it is in the
image. Two recipes, both with everything they need here:

* **Boxes as regression** (X-VLM, Zeng et al. 2021): a text-conditioned feature goes through :class:`BoxHead`,
  an MLP whose 4 outputs pass a sigmoid and are read as a normalised ``(cx, cy, w, h)``; the loss
  (:func:`box_loss`) is DETR's (Carion et al. 2020), on matched pairs ``i``::

      L = l1_weight * mean_i |cxcywh(pred_i) - cxcywh(true_i)|_1 + giou_weight * mean_i (1 - GIoU(pred_i, true_i))

  with the generalized IoU of Rezatofighi et al. 2019 (:func:`generalized_box_iou`, ``C`` the smallest box
  enclosing both)::

      IoU(A, B) = |A ∩ B| / |A ∪ B|,      GIoU(A, B) = IoU(A, B) - (|C| - |A ∪ B|) / |C|

  GIoU lies in ``[-1, 1]``: unlike IoU it still has a gradient when the boxes do not overlap. The pairwise
  matrices of :func:`box_iou` and :func:`generalized_box_iou` equal ``transformers``' DETR utilities
  (``transformers.loss.loss_for_object_detection.box_iou``/``generalized_box_iou``), degenerate boxes included:
  a box with zero width or height is allowed; a pair whose union is empty (two boxes of zero area) gives NaN
  (``0 / 0``), as there. A box with ``x1 < x0`` or ``y1 < y0`` (or a non-finite coordinate) is refused with a
  ``ValueError`` that names it (DETR refuses the batch, without saying which box).
* **Boxes as tokens** (Kosmos-2, Peng et al. 2023): the image is cut into ``P x P`` bins (``P = num_bins``, 32 in
  Kosmos-2) and a box becomes the two bins of its corners, written ``<patch_index_0012><patch_index_0345>``
  (:func:`box_to_location_tokens`, :func:`location_text`)::

      top-left  = floor(y0 P) P + floor(x0 P),      bottom-right = ceil(y1 P - 1) P + ceil(x1 P - 1)

  and back (:func:`location_tokens_to_box`) to the *centres* of the two bins (to the bins' outer edges when the
  corners share a row or a column), so the round trip is off by at most one bin per coordinate. Both directions
  equal ``transformers``' ``coordinate_to_patch_index`` / ``patch_index_to_coordinate``
  (``transformers.models.kosmos2.processing_kosmos2``).

Scoring (:func:`referring_accuracy`): a predicted box is right when its IoU with the true box is at least 0.5
(RefCOCO's rule). :func:`referring_items` writes referring expressions on Shapes World whose target is the only
object they fit ("the red circle", or "the red circle left of the blue square" when there are two red circles),
and :func:`largest_object_baseline` is the control: the box of the largest object, with no reading at all.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from vlm_primer.validate import check_int
from vlm_primer.world.language import NP, np_words
from vlm_primer.world.render import boxes as scene_boxes
from vlm_primer.world.render import render
from vlm_primer.world.scene import Scene, WorldConfig, relation_holds, sample_scene
from vlm_primer.world.vocab import COLORS, RELATION_PHRASES, SHAPES

__all__ = ["BoxHead", "box_cxcywh_to_xyxy", "box_iou", "box_loss", "box_to_location_tokens", "box_xyxy_to_cxcywh",
           "generalized_box_iou", "largest_object_baseline", "location_text", "location_tokens_to_box",
           "parse_location_text", "referring_accuracy", "referring_accuracy_by_kind", "referring_items",
           "resolve_expression"]


# --- boxes -----------------------------------------------------------------------------------------------------

def _fmt(box: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in box.tolist()) + "]"


def _check_boxes(boxes: Any, name: str, *, ordered: bool = True) -> torch.Tensor:
    """``boxes`` as a floating ``(N, 4)`` tensor; with ``ordered``, every box has ``x1 >= x0`` and ``y1 >= y0``."""
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, 4), got {type(boxes).__name__}")
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        boxes = boxes.float()
    if ordered and boxes.numel():
        bad = ~(torch.isfinite(boxes).all(-1) & (boxes[:, 2:] >= boxes[:, :2]).all(-1))
        if bad.any():
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"{name}[{i}] = {_fmt(boxes[i])} is not a box (x0, y0, x1, y1) with x1 >= x0, "
                             f"y1 >= y0 and finite corners ({int(bad.sum())} such box(es) in {name})")
    return boxes


def _check_unit(boxes: torch.Tensor, name: str) -> None:
    bad = ((boxes < 0) | (boxes > 1)).any(-1)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"{name}[{i}] = {_fmt(boxes[i])} is not a normalised box: corners must lie in [0, 1]")


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``(cx, cy, w, h) -> (cx - w/2, cy - h/2, cx + w/2, cy + h/2)`` over the last axis (any leading shape)."""
    if not isinstance(boxes, torch.Tensor) or boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be a tensor of shape (..., 4), got {getattr(boxes, 'shape', type(boxes))}")
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """``(x0, y0, x1, y1) -> ((x0 + x1)/2, (y0 + y1)/2, x1 - x0, y1 - y0)`` over the last axis (any leading shape)."""
    if not isinstance(boxes, torch.Tensor) or boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be a tensor of shape (..., 4), got {getattr(boxes, 'shape', type(boxes))}")
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def _iou_union(b1: torch.Tensor, b2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and union of boxes that broadcast against each other (``(..., 4)``)."""
    area1 = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    area2 = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    wh = (torch.min(b1[..., 2:], b2[..., 2:]) - torch.max(b1[..., :2], b2[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1 + area2 - inter
    return inter / union, union


def _giou(b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    iou, union = _iou_union(b1, b2)
    wh = (torch.max(b1[..., 2:], b2[..., 2:]) - torch.min(b1[..., :2], b2[..., :2])).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / enclosing


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``(N, M)`` of corner boxes ``(N, 4)`` and ``(M, 4)`` (``x0, y0, x1, y1``); NaN where both
    boxes have zero area (an empty union)."""
    b1, b2 = _check_boxes(boxes1, "boxes1"), _check_boxes(boxes2, "boxes2")
    return _iou_union(b1[:, None, :], b2[None, :, :])[0]


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise generalized IoU ``(N, M)`` of corner boxes ``(N, 4)`` and ``(M, 4)``, as DETR's (see the module
    docstring): ``IoU - (|C| - |A ∪ B|) / |C|``, in ``[-1, 1]``; NaN where the union is empty."""
    b1, b2 = _check_boxes(boxes1, "boxes1"), _check_boxes(boxes2, "boxes2")
    return _giou(b1[:, None, :], b2[None, :, :])


def _paired(pred: torch.Tensor, true: torch.Tensor, pred_name: str, true_name: str) -> tuple[torch.Tensor, ...]:
    p, t = _check_boxes(pred, pred_name), _check_boxes(true, true_name)
    if p.shape != t.shape:
        raise ValueError(f"{pred_name} and {true_name} must be matched pairs of the same shape, got "
                         f"{tuple(p.shape)} and {tuple(t.shape)}")
    if len(p) == 0:
        raise ValueError(f"{pred_name} and {true_name} are empty: there is no box to score")
    return p, t


def box_loss(pred_xyxy: torch.Tensor, target_xyxy: torch.Tensor, l1_weight: float = 5.0,
             giou_weight: float = 2.0) -> torch.Tensor:
    """X-VLM's box loss on matched pairs (row ``i`` of ``pred_xyxy`` against row ``i`` of ``target_xyxy``)::

        l1_weight * sum_i |cxcywh(pred_i) - cxcywh(true_i)|_1 / N  +  giou_weight * sum_i (1 - GIoU(pred_i, true_i)) / N

    The L1 term is on ``(cx, cy, w, h)``, as in X-VLM and DETR; the default weights are DETR's (X-VLM adds the two
    terms with weight 1). Boxes are normalised corners; the targets must lie in ``[0, 1]`` (a prediction from
    :class:`BoxHead` may stick out a little: its centre and size are in ``[0, 1]``, its corners need not be)."""
    pred, target = _paired(pred_xyxy, target_xyxy, "pred_xyxy", "target_xyxy")
    _check_unit(target, "target_xyxy")
    for name, w in (("l1_weight", l1_weight), ("giou_weight", giou_weight)):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w) or w < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {w!r}")
    n = len(pred)
    l1 = (box_xyxy_to_cxcywh(pred) - box_xyxy_to_cxcywh(target)).abs().sum() / n
    giou = (1 - _giou(pred, target)).sum() / n
    return l1_weight * l1 + giou_weight * giou


class BoxHead(nn.Module):
    """X-VLM's box head: ``Linear(D, 2D) -> LayerNorm -> GELU -> Linear(2D, 4) -> sigmoid``, read as a normalised
    ``(cx, cy, w, h)`` and returned as corners ``(x0, y0, x1, y1)``.

    ``forward(feature)`` takes a text-conditioned feature ``(..., D)`` (X-VLM: the fused ``[CLS]`` of the
    expression attending to the image) and returns boxes ``(..., 4)``; :meth:`cxcywh` gives the sigmoid outputs
    themselves. ``vlm_primer.nn.MLP`` maps back to ``D`` (a transformer block's MLP), hence a head of its own."""

    def __init__(self, dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        for name, v in (("dim", dim), ("hidden_dim", 2 * dim if hidden_dim is None else hidden_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        hidden = 2 * dim if hidden_dim is None else hidden_dim
        self.dim = dim
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, 4)

    def cxcywh(self, feature: torch.Tensor) -> torch.Tensor:
        if not isinstance(feature, torch.Tensor) or feature.ndim < 1 or feature.shape[-1] != self.dim:
            raise ValueError(f"feature must be a tensor of shape (..., {self.dim}), got "
                             f"{tuple(feature.shape) if isinstance(feature, torch.Tensor) else type(feature).__name__}")
        return torch.sigmoid(self.fc2(self.act(self.norm(self.fc1(feature)))))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return box_cxcywh_to_xyxy(self.cxcywh(feature))


# --- Kosmos-2 location tokens ----------------------------------------------------------------------------------

def _check_bins(num_bins: Any) -> int:
    return check_int(num_bins, "num_bins", 1, 99, hint="bins per side; Kosmos-2 uses 32")


def box_to_location_tokens(box_xyxy: Any, num_bins: int = 32) -> torch.Tensor:
    """Kosmos-2's two location tokens of normalised corner boxes ``(..., 4)``: the indices ``(..., 2)`` (int64) of
    the top-left bin and the bottom-right bin on a ``num_bins x num_bins`` grid, row-major (formula in the module
    docstring). A box needs ``0 <= x0 < x1 <= 1`` and ``0 <= y0 < y1 <= 1``; ValueError names the first that
    does not."""
    n = _check_bins(num_bins)
    b = torch.as_tensor(box_xyxy, dtype=torch.float64)
    if b.ndim < 1 or b.shape[-1] != 4:
        raise ValueError(f"box_xyxy must have shape (..., 4), got {tuple(b.shape)}")
    flat = b.reshape(-1, 4)
    bad = ~(torch.isfinite(flat).all(-1) & (flat[:, 2:] > flat[:, :2]).all(-1) & (flat >= 0).all(-1)
            & (flat <= 1).all(-1))
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"box {_fmt(flat[i])} (#{i}) is not a normalised box with 0 <= x0 < x1 <= 1 and "
                         f"0 <= y0 < y1 <= 1")
    top_left = torch.floor(b[..., :2] * n)
    bottom_right = torch.ceil(b[..., 2:] * n - 1)
    # the clamp only catches x0 * n rounding up to n for x0 just below 1
    corners = torch.cat([top_left, bottom_right], -1).clamp(0, n - 1).long()
    return torch.stack([corners[..., 1] * n + corners[..., 0], corners[..., 3] * n + corners[..., 2]], -1)


def location_tokens_to_box(tokens: Any, num_bins: int = 32) -> torch.Tensor:
    """Normalised corner boxes ``(..., 4)`` (float32) of location-token pairs ``(..., 2)`` (top-left, bottom-right
    bin index): the centres of the two bins, or the outer edges of the bins when the two corners share a row or a
    column (Kosmos-2's decoding). A pair whose bottom-right bin lies left of or above its top-left bin, or an index
    outside ``[0, num_bins**2)``, is refused."""
    n = _check_bins(num_bins)
    t = torch.as_tensor(tokens)
    if t.is_floating_point() or t.dtype == torch.bool or t.ndim < 1 or t.shape[-1] != 2:
        raise ValueError(f"tokens must be integer pairs (..., 2), got dtype {t.dtype} and shape {tuple(t.shape)}")
    t = t.long()
    flat = t.reshape(-1, 2)
    ul_x, ul_y, lr_x, lr_y = flat[:, 0] % n, flat[:, 0] // n, flat[:, 1] % n, flat[:, 1] // n
    bad = ((flat < 0) | (flat >= n * n)).any(-1) | (lr_x < ul_x) | (lr_y < ul_y)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"location tokens {flat[i].tolist()} (#{i}) are not a (top-left, bottom-right) pair of bins "
                         f"in [0, {n * n}) on a {n}x{n} grid")
    cell = 1.0 / n
    ul = torch.stack([t[..., 0] % n, t[..., 0] // n], -1).double()
    lr = torch.stack([t[..., 1] % n, t[..., 1] // n], -1).double()
    edges = (ul == lr).any(-1, keepdim=True)  # same bin, same column or same row
    start = torch.where(edges, ul * cell, ul * cell + cell / 2)
    end = torch.where(edges, lr * cell + cell, lr * cell + cell / 2)
    return torch.cat([start, end], -1).float()


_LOCATION = re.compile(r"<patch_index_(\d+)><patch_index_(\d+)>")


def location_text(tokens: Any) -> str:
    """Kosmos-2's text of one location-token pair: ``(12, 345) -> "<patch_index_0012><patch_index_0345>"``."""
    t = torch.as_tensor(tokens)
    if t.is_floating_point() or t.shape != (2,) or (t < 0).any():
        raise ValueError(f"tokens must be one pair of bin indices >= 0, got {t.tolist()!r}")
    a, b = (int(v) for v in t)
    return f"<patch_index_{a:04d}><patch_index_{b:04d}>"


def parse_location_text(text: str) -> list[tuple[int, int]]:
    """Every ``<patch_index_XXXX><patch_index_YYYY>`` pair in ``text``, in order (inverse of :func:`location_text`)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return [(int(a), int(b)) for a, b in _LOCATION.findall(text)]


# --- scoring ---------------------------------------------------------------------------------------------------

def referring_accuracy(pred_boxes: torch.Tensor, true_boxes: torch.Tensor, threshold: float = 0.5) -> float:
    """Fraction of matched pairs whose IoU is at least ``threshold`` (0.5 on RefCOCO)."""
    pred, true = _paired(pred_boxes, true_boxes, "pred_boxes", "true_boxes")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
    iou = _iou_union(pred, true)[0]
    return float((iou >= threshold).float().mean())


def referring_accuracy_by_kind(pred_boxes: torch.Tensor, true_boxes: torch.Tensor, kinds: Sequence[str],
                               threshold: float = 0.5) -> dict[str, float]:
    """:func:`referring_accuracy` over all pairs (``"all"``) and over the pairs of each kind in ``kinds`` (one label
    per pair, e.g. the items' ``kind``: "attribute", "relation"), the kinds in sorted order."""
    if isinstance(kinds, str) or not isinstance(kinds, Sequence) or len(kinds) != len(pred_boxes):
        raise ValueError(f"kinds must hold one label per box ({len(pred_boxes)}), got {kinds!r}")
    out = {"all": referring_accuracy(pred_boxes, true_boxes, threshold)}
    for kind in sorted(set(kinds)):
        keep = [i for i, k in enumerate(kinds) if k == kind]
        out[kind] = referring_accuracy(pred_boxes[keep], true_boxes[keep], threshold)
    return out


def _normalised_boxes(scene: Scene, image_size: int) -> torch.Tensor:
    return scene_boxes(scene, image_size) / image_size


def largest_object_baseline(scenes: Sequence[Scene], image_size: int = 64) -> torch.Tensor:
    """The control: for each scene the normalised box ``(x0, y0, x1, y1)`` of its largest object (largest box
    area, the first on a tie), whatever the expression says. Returns ``(len(scenes), 4)``."""
    if isinstance(scenes, Scene) or not isinstance(scenes, Sequence) or len(scenes) == 0:
        raise ValueError("scenes must be a non-empty sequence of Scene")
    out = []
    for i, scene in enumerate(scenes):
        if not isinstance(scene, Scene) or len(scene) == 0:
            raise ValueError(f"scenes[{i}] must be a Scene with at least one object, got {scene!r}")
        b = _normalised_boxes(scene, image_size)
        out.append(b[int(torch.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))])
    return torch.stack(out)


# --- referring expressions on Shapes World ---------------------------------------------------------------------

def resolve_expression(expression: str, scene: Scene, margin: float = 0.08) -> list[int]:
    """The indices of the objects of ``scene`` that ``expression`` fits: "the <color> <shape>" or
    "the <color> <shape> <relation> the <color> <shape>" (relations: "left of", "right of", "above", "below";
    the landmark must be one object, and the relation must clear ``margin``). A referring item is unambiguous when
    this is ``[target]``."""
    colors, shapes = "|".join(COLORS), "|".join(SHAPES)
    rels = {RELATION_PHRASES[r][0]: r for r in RELATION_PHRASES}
    m = re.fullmatch(rf"the ({colors}) ({shapes})(?: ({'|'.join(rels)}) the ({colors}) ({shapes}))?", expression)
    if m is None:
        raise ValueError(f"cannot read the expression {expression!r}: expected 'the <color> <shape>' optionally "
                         f"followed by '<relation> the <color> <shape>'")
    objs = scene.objects
    fits = [i for i, o in enumerate(objs) if NP(m.group(2), m.group(1)).matches(o)]
    if m.group(3) is None:
        return fits
    landmarks = [o for o in objs if NP(m.group(5), m.group(4)).matches(o)]
    if len(landmarks) != 1:
        return []
    rel, landmark = rels[m.group(3)], landmarks[0]
    return [i for i in fits if objs[i] is not landmark and relation_holds(objs[i], landmark, rel, margin)]


def _the(np_: NP) -> str:
    return "the " + np_words(np_)


def _expressions(target: int, scene: Scene, margin: float) -> list[tuple[str, str]]:
    """Unambiguous expressions for object ``target``: ``[(kind, text)]``, kind "attribute" or "relation"."""
    objs = scene.objects
    o = objs[target]
    name = NP(o.shape, o.color)
    twins = [j for j, x in enumerate(objs) if j != target and name.matches(x)]
    if not twins:
        return [("attribute", _the(name))]
    out = []
    for j, b in enumerate(objs):
        landmark = NP(b.shape, b.color)
        if j == target or sum(landmark.matches(x) for x in objs) != 1:
            continue
        for rel in ("left", "right", "above", "below"):
            # the target clearly in relation; every twin not even loosely so (margin 0): no borderline reading
            if relation_holds(o, b, rel, margin) and not any(relation_holds(objs[k], b, rel, 0.0) for k in twins):
                out.append(("relation", f"{_the(name)} {RELATION_PHRASES[rel][0]} {_the(landmark)}"))
    return out


def referring_items(n: int, config: WorldConfig | None = None, seed: int = 0, relational: float = 0.5
                    ) -> list[dict[str, Any]]:
    """``n`` referring-expression items on Shapes World, each a dict with ``image`` ``(3, S, S)``, ``text`` (the
    expression), ``box`` (the target's normalised ``(x0, y0, x1, y1)``, float32), ``target`` (its index in the
    scene), ``kind`` ("attribute": "the red circle", the only red circle; "relation": "the red circle left of the
    blue square", one of two or more red circles told apart by a relation to a one-of-a-kind landmark) and
    ``scene``. About a ``relational`` fraction are relational: their scene gets a twin (the colour and shape of
    another object copied onto one more), which needs ``config.max_objects >= 3``. Every expression fits its
    target alone (:func:`resolve_expression`). Deterministic given ``seed``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    cfg = config if config is not None else WorldConfig()
    if not isinstance(cfg, WorldConfig):
        raise TypeError(f"config must be a WorldConfig, got {type(cfg).__name__}")
    if isinstance(relational, bool) or not isinstance(relational, (int, float)) or not 0 <= relational <= 1:
        raise ValueError(f"relational must be a fraction in [0, 1], got {relational!r}")
    if relational > 0 and cfg.max_objects < 3:
        raise ValueError(f"relational items need scenes of 3 objects (two twins and a landmark), but "
                         f"config.max_objects={cfg.max_objects}; use relational=0 or max_objects >= 3")
    rng = np.random.default_rng([seed, 64])
    items: list[dict[str, Any]] = []
    for _ in range(n):
        want_relation = bool(rng.random() < relational)  # drawn once per item, so the fraction is kept
        for _ in range(200):
            if want_relation:
                scene = sample_scene(rng, cfg, num_objects=(max(3, cfg.min_objects), cfg.max_objects))
                src, dst = (int(k) for k in rng.choice(len(scene), size=2, replace=False))
                scene = scene.replace(dst, color=scene[src].color, shape=scene[src].shape)  # same size: still placed
            else:
                scene = sample_scene(rng, cfg)
            options = [(i, kind, text) for i in range(len(scene)) for kind, text in _expressions(i, scene, cfg.margin)
                       if (kind == "relation") == want_relation]
            if options:  # else e.g. no clear relation to a one-of-a-kind landmark: draw another scene
                break
        else:
            raise ValueError(f"could not write a{' relational' if want_relation else 'n attribute'} referring item "
                             f"in 200 scenes with this config; allow more objects or change relational")
        target, kind, text = options[int(rng.integers(len(options)))]
        items.append({"image": render(scene, cfg.image_size), "text": text,
                      "box": _normalised_boxes(scene, cfg.image_size)[target], "target": target, "kind": kind,
                      "scene": scene})
    return items
