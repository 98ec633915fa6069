"""Grounding recipes (chapter 06b): box utilities and loss against transformers' DETR code, Kosmos-2 location tokens
against transformers' Kosmos2 processor functions, referring items on Shapes World."""

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vlm_primer.recipes.grounding import (BoxHead, box_cxcywh_to_xyxy, box_iou, box_loss, box_to_location_tokens,
                                          box_xyxy_to_cxcywh, generalized_box_iou, largest_object_baseline,
                                          location_text, location_tokens_to_box, parse_location_text,
                                          referring_accuracy, referring_accuracy_by_kind, referring_items,
                                          resolve_expression)
from vlm_primer.world import WorldConfig, boxes
from vlm_primer.world.scene import relation_holds
from vlm_primer.world.vocab import RELATION_PHRASES

hf_det = pytest.importorskip("transformers.loss.loss_for_object_detection")
hf_kosmos = pytest.importorskip("transformers.models.kosmos2.processing_kosmos2")


def random_boxes(g, n, degenerate=True):
    """Normalised corner boxes, a third of them degenerate (zero width or height, points) when asked."""
    xy = torch.rand(n, 2, 2, generator=g, dtype=torch.float64)
    b = torch.cat([xy.min(1).values, xy.max(1).values], -1)
    if degenerate:
        k = n // 9
        b[:k, 2] = b[:k, 0]                       # zero width
        b[k:2 * k, 3] = b[k:2 * k, 1]             # zero height
        b[2 * k:3 * k, 2:] = b[2 * k:3 * k, :2]   # points
    return b


# --- boxes -----------------------------------------------------------------------------------------------------

def test_giou_and_iou_equal_transformers_on_random_and_degenerate_boxes():
    g = torch.Generator().manual_seed(0)
    b1, b2 = random_boxes(g, 90), random_boxes(g, 70)
    b2[:5] = b1[40:45]                                    # identical boxes
    b2[5:10] = b1[45:50].clone()                          # touching boxes: share an edge
    b2[5:10, 0], b2[5:10, 2] = b1[45:50, 2], b1[45:50, 2] + 0.1
    for a, b in ((b1, b2), (b1.float(), b2.float())):
        ours, ref = generalized_box_iou(a, b), hf_det.generalized_box_iou(a, b)
        assert ours.shape == (len(a), len(b))
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0, equal_nan=True)
        torch.testing.assert_close(box_iou(a, b), hf_det.box_iou(a, b)[0], atol=1e-6, rtol=0, equal_nan=True)
    ref = hf_det.generalized_box_iou(b1, b2)
    assert torch.isnan(ref).any() and not torch.isnan(ref).all()  # points against points: 0/0 on both sides
    assert torch.allclose(generalized_box_iou(b1[40:45], b1[40:45]).diagonal()[:3], torch.ones(3, dtype=b1.dtype))
    touching = generalized_box_iou(b1[45:50], b2[5:10]).diagonal()
    assert torch.allclose(touching, hf_det.generalized_box_iou(b1[45:50], b2[5:10]).diagonal())
    finite = ref[torch.isfinite(ref)]
    assert finite.min() >= -1 and finite.max() <= 1


def test_giou_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [3.0, 0.0, 4.0, 1.0]])
    # overlap 1, union 7, enclosing 9; disjoint: iou 0, union 5, enclosing 8
    torch.testing.assert_close(generalized_box_iou(a, b), torch.tensor([[1 / 7 - 2 / 9, 0 - 3 / 8]]))
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 0.0]]))


def test_box_format_round_trip():
    g = torch.Generator().manual_seed(1)
    b = random_boxes(g, 50, degenerate=False).view(5, 10, 4)
    c = box_xyxy_to_cxcywh(b)
    torch.testing.assert_close(box_cxcywh_to_xyxy(c), b)
    torch.testing.assert_close(c[..., 2], b[..., 2] - b[..., 0])
    assert torch.equal(box_cxcywh_to_xyxy(torch.tensor([0.5, 0.5, 0.2, 0.4])), torch.tensor([0.4, 0.3, 0.6, 0.7]))


def test_box_loss_by_hand():
    pred = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.4, 0.6]])
    true = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.3, 0.2, 0.5, 0.6]])
    # pair 0 is exact. pair 1: cxcywh (0.3, 0.4, 0.2, 0.4) vs (0.4, 0.4, 0.2, 0.4): L1 = 0.1;
    # overlap 0.1 x 0.4 = 0.04, union 0.08 + 0.08 - 0.04 = 0.12, enclosing 0.3 x 0.4 = 0.12: GIoU = 1/3
    l1, giou = 0.1 / 2, (1 - 1 / 3) / 2
    torch.testing.assert_close(box_loss(pred, true), torch.tensor(5 * l1 + 2 * giou))
    torch.testing.assert_close(box_loss(pred, true, l1_weight=1.0, giou_weight=0.0), torch.tensor(l1))
    assert box_loss(true, true).item() == pytest.approx(0.0, abs=1e-7)
    # X-VLM's form: F.l1_loss on cxcywh summed / N, plus 1 - diag(GIoU) of transformers
    ref = (torch.nn.functional.l1_loss(box_xyxy_to_cxcywh(pred), box_xyxy_to_cxcywh(true), reduction="sum") / 2,
           (1 - hf_det.generalized_box_iou(pred, true).diagonal()).sum() / 2)
    torch.testing.assert_close(box_loss(pred, true, 1.0, 1.0), ref[0] + ref[1])


def test_box_head_shapes_and_gradient():
    torch.manual_seed(0)
    head = BoxHead(16)
    feats = torch.randn(3, 5, 16, requires_grad=True)
    out = head(feats)
    assert out.shape == (3, 5, 4)
    c = head.cxcywh(feats)
    assert ((c > 0) & (c < 1)).all()
    torch.testing.assert_close(out, box_cxcywh_to_xyxy(c))
    assert (out[..., 2:] >= out[..., :2]).all()
    target = torch.tensor([[0.2, 0.3, 0.6, 0.9]]).expand(15, 4)
    loss = box_loss(out.reshape(-1, 4), target)
    loss.backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    x = torch.randn(15, 16)
    first = box_loss(head(x), target).item()
    for _ in range(60):
        opt.zero_grad()
        box_loss(head(x), target).backward()
        opt.step()
    assert box_loss(head(x), target).item() < 0.2 * first


# --- Kosmos-2 location tokens ----------------------------------------------------------------------------------

@pytest.mark.parametrize("num_bins", [32, 16, 7, 10, 64, 1])
def test_location_tokens_equal_transformers_kosmos2(num_bins):
    g = torch.Generator().manual_seed(num_bins)
    boxes = random_boxes(g, 1000, degenerate=False)
    boxes[:20] = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)   # the whole image
    boxes[20:40] = (torch.tensor([1, 2, 3, 5], dtype=torch.float64) / 8)   # corners on bin edges (for 8, 16, 32, 64)
    tokens = box_to_location_tokens(boxes, num_bins)
    assert tokens.shape == (1000, 2) and tokens.dtype == torch.int64
    ref = [hf_kosmos.coordinate_to_patch_index(tuple(b.tolist()), num_bins) for b in boxes]
    assert tokens.tolist() == [list(r) for r in ref]
    back = location_tokens_to_box(tokens, num_bins)
    ref_back = torch.tensor([hf_kosmos.patch_index_to_coordinate(a, b, num_bins) for a, b in ref])
    torch.testing.assert_close(back, ref_back.float(), atol=1e-7, rtol=0)
    assert ((back - boxes.float()).abs() <= 1 / num_bins + 1e-6).all()  # round trip: off by at most one bin
    # single boxes and plain sequences
    assert box_to_location_tokens(tuple(boxes[50].tolist()), num_bins).tolist() == list(ref[50])


def test_location_text_round_trip_and_kosmos2_format():
    n = 32
    proc = SimpleNamespace(num_patch_index_tokens=n * n)  # all _convert_bbox_to_patch_index_tokens reads of self
    g = torch.Generator().manual_seed(5)
    for box in random_boxes(g, 50, degenerate=False):
        text = location_text(box_to_location_tokens(box, n))
        a, b = hf_kosmos.Kosmos2Processor._convert_bbox_to_patch_index_tokens(proc, tuple(box.tolist()))
        assert text == a + b
        assert parse_location_text(text) == [tuple(box_to_location_tokens(box, n).tolist())]
        _, entities = hf_kosmos.clean_text_and_extract_entities_with_bboxes(
            f"<grounding><phrase> a thing</phrase><object>{text}</object>", n)
        torch.testing.assert_close(location_tokens_to_box(parse_location_text(text)[0], n),
                                   torch.tensor(entities[0][2][0], dtype=torch.float32))
    assert location_text((12, 345)) == "<patch_index_0012><patch_index_0345>"
    assert parse_location_text("a <patch_index_0012><patch_index_0345> b <patch_index_0001><patch_index_1023>") == [
        (12, 345), (1, 1023)]


# --- scoring and referring items ------------------------------------------------------------------------------

def test_referring_accuracy_by_hand():
    true = torch.tensor([[0.0, 0.0, 0.5, 0.5]] * 3)
    pred = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.25], [0.0, 0.0, 0.5, 0.2]])  # IoU 1, 0.5, 0.4
    assert referring_accuracy(pred, true) == pytest.approx(2 / 3)
    assert referring_accuracy(pred, true, threshold=0.9) == pytest.approx(1 / 3)
    by_kind = referring_accuracy_by_kind(pred, true, ["relation", "attribute", "relation"])
    assert list(by_kind) == ["all", "attribute", "relation"]
    assert by_kind == pytest.approx({"all": 2 / 3, "attribute": 1.0, "relation": 0.5})
    with pytest.raises(ValueError, match="kinds must hold one label per box"):
        referring_accuracy_by_kind(pred, true, ["relation"])
    with pytest.raises(ValueError, match="kinds"):
        referring_accuracy_by_kind(pred, true, "abc")


def parse(text):
    rels = {RELATION_PHRASES[r][0]: r for r in RELATION_PHRASES}
    m = re.fullmatch(r"the (\w+) (\w+)(?: (left of|right of|above|below) the (\w+) (\w+))?", text)
    assert m, text
    return m.group(1), m.group(2), rels.get(m.group(3)), m.group(4), m.group(5)


def test_referring_items_are_unambiguous_and_boxes_are_normalised():
    cfg = WorldConfig(max_objects=4)
    items = referring_items(60, cfg, seed=3)
    again = referring_items(60, cfg, seed=3)
    assert [i["text"] for i in items] == [i["text"] for i in again]
    kinds = [i["kind"] for i in items]
    assert 15 <= kinds.count("relation") <= 45 and kinds.count("attribute") >= 15
    assert any(" left of " in i["text"] or " right of " in i["text"] for i in items)
    for it in items:
        scene, t = it["scene"], it["target"]
        assert it["image"].shape == (3, cfg.image_size, cfg.image_size)
        box = it["box"]
        assert box.shape == (4,) and (box >= 0).all() and (box <= 1).all() and (box[2:] > box[:2]).all()
        obj = scene[t]
        assert obj.x == pytest.approx(float(box[0] + box[2]) / 2, abs=0.02)
        color, shape, rel, lcolor, lshape = parse(it["text"])
        fits = [i for i, o in enumerate(scene) if (o.color, o.shape) == (color, shape)]
        assert (color, shape) == (obj.color, obj.shape)
        if rel is None:
            assert it["kind"] == "attribute" and fits == [t]
        else:
            assert it["kind"] == "relation" and len(fits) >= 2  # a twin is there: the relation is needed
            landmarks = [o for o in scene if (o.color, o.shape) == (lcolor, lshape)]
            assert len(landmarks) == 1
            assert [i for i in fits if relation_holds(scene[i], landmarks[0], rel, cfg.margin)] == [t]
            # no twin is even loosely in the relation
            assert not any(relation_holds(scene[i], landmarks[0], rel, 0.0) for i in fits if i != t)
        assert resolve_expression(it["text"], scene, cfg.margin) == [t]
    only_attr = referring_items(10, cfg, seed=0, relational=0.0)
    assert {i["kind"] for i in only_attr} == {"attribute"}


def test_largest_object_baseline_is_computed():
    items = referring_items(40, WorldConfig(max_objects=3), seed=7)
    scenes = [i["scene"] for i in items]
    base = largest_object_baseline(scenes)
    assert base.shape == (40, 4)
    for scene, b in zip(scenes, base):
        pixel = boxes(scene, 64)
        areas = (pixel[:, 2] - pixel[:, 0]) * (pixel[:, 3] - pixel[:, 1])
        assert torch.allclose(b * 64, pixel[int(areas.argmax())], atol=1e-4)
        if len({o.size for o in scene}) == 2:  # a large object beats every small one
            assert scene[int(areas.argmax())].size == "large"
    truth = torch.stack([i["box"] for i in items])
    acc = referring_accuracy(base, truth)
    one_object = np.mean([len(s) == 1 for s in scenes])
    assert one_object <= acc < 1.0  # right on one-object scenes, often wrong elsewhere: the control
    assert referring_accuracy(truth, truth) == 1.0


# --- bad input -------------------------------------------------------------------------------------------------

def test_bad_input_errors():
    good = torch.tensor([[0.1, 0.1, 0.5, 0.5]])
    with pytest.raises(ValueError, match=r"boxes2\[1\] = \[0\.5, 0\.1, 0\.2, 0\.5\] is not a box"):
        generalized_box_iou(good, torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.5, 0.1, 0.2, 0.5]]))
    with pytest.raises(ValueError, match=r"boxes1\[0\].*finite"):
        box_iou(torch.tensor([[0.1, float("nan"), 0.5, 0.5]]), good)
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        generalized_box_iou(torch.zeros(3), good)
    with pytest.raises(TypeError, match="boxes1 must be a torch.Tensor"):
        box_iou([[0, 0, 1, 1]], good)
    with pytest.raises(ValueError, match="same shape"):
        box_loss(good, good.repeat(2, 1))
    with pytest.raises(ValueError, match=r"target_xyxy\[0\] .* corners must lie in \[0, 1\]"):
        box_loss(good, torch.tensor([[0.1, 0.1, 1.5, 0.5]]))
    with pytest.raises(ValueError, match="giou_weight must be"):
        box_loss(good, good, giou_weight=-1.0)
    with pytest.raises(ValueError, match="empty"):
        referring_accuracy(torch.zeros(0, 4), torch.zeros(0, 4))
    with pytest.raises(ValueError, match="threshold must be"):
        referring_accuracy(good, good, threshold=0.0)
    with pytest.raises(ValueError, match=r"box \[0\.5, 0\.1, 0\.5, 0\.4\] \(#0\) is not a normalised box"):
        box_to_location_tokens([0.5, 0.1, 0.5, 0.4])
    with pytest.raises(ValueError, match=r"\(#1\) is not a normalised box"):
        box_to_location_tokens([[0.1, 0.1, 0.2, 0.2], [0.1, 0.1, 1.2, 0.2]])
    with pytest.raises(ValueError, match="num_bins must be"):
        box_to_location_tokens([0.1, 0.1, 0.2, 0.2], num_bins=0)
    with pytest.raises(ValueError, match=r"location tokens \[40, 3\] \(#0\)"):
        location_tokens_to_box([40, 3])  # bottom-right above the top-left
    with pytest.raises(ValueError, match=r"\[0, 1024\)"):
        location_tokens_to_box([0, 1024])
    with pytest.raises(ValueError, match="integer pairs"):
        location_tokens_to_box([0.5, 3.0])
    with pytest.raises(ValueError, match="dim must be an int"):
        BoxHead(0)
    with pytest.raises(ValueError, match=r"feature must be a tensor of shape \(\.\.\., 8\)"):
        BoxHead(8)(torch.zeros(2, 7))
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        referring_items(0)
    with pytest.raises(ValueError, match="max_objects=2"):
        referring_items(3, WorldConfig(max_objects=2))
    with pytest.raises(ValueError, match="relational must be"):
        referring_items(3, relational=1.5)
    with pytest.raises(ValueError, match="cannot read the expression"):
        resolve_expression("a red circle", referring_items(1)[0]["scene"])
    with pytest.raises(ValueError, match="non-empty sequence"):
        largest_object_baseline([])
