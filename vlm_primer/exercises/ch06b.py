"""Checks for the exercises of chapter 06b (training recipes II: GIoU, Kosmos-2 location tokens, the DPO loss, LoRA's
forward pass, NF4 rounding, CLIP-Adapter's blend, the accumulated loss). Explained in notebook 06b, §Exercises."""

from __future__ import annotations

import math

import torch

from vlm_primer.exercises import Wrong, close, exercise, number


@exercise("06b.1", "Generalized IoU of two boxes")
def giou(fn) -> None:
    # (A, B, IoU, GIoU): overlapping, disjoint (IoU 0, GIoU < 0), identical, nested (C = the outer box)
    cases = (((0, 0, 2, 2), (1, 1, 3, 3), 1 / 7, 1 / 7 - 2 / 9), ((0, 0, 1, 1), (2, 0, 3, 1), 0.0, -1 / 3),
             ((0, 0, 1, 1), (0, 0, 1, 1), 1.0, 1.0), ((0, 0, 4, 4), (1, 1, 2, 2), 1 / 16, 1 / 16),
             ((0, 0, 1, 1), (2, 2, 3, 3), 0.0, -7 / 9), ((0, 0, 1, 1), (2, 0.5, 3, 2), 0.0, -7 / 12))  # apart on both axes
    for a, b, iou, want in cases:
        got = number(fn(tuple(map(float, a)), tuple(map(float, b))), "GIoU")
        if abs(got - iou) < 1e-9 and abs(iou - want) > 1e-9:
            raise Wrong("that is the IoU: subtract (|C| - |A ∪ B|) / |C|, C the smallest box enclosing both")
        if abs(got - want) > 1e-6:
            hint = " (an intersection's width and height are at least 0)" if iou == 0 else ""
            raise Wrong(f"GIoU of {a} and {b} is off: IoU - (|C| - |A ∪ B|) / |C|{hint}")


@exercise("06b.2", "Kosmos-2 location tokens")
def location_tokens(fn) -> None:
    for box, bins in (((0.1, 0.2, 0.5, 0.6), 32), ((0.0, 0.0, 1.0, 1.0), 32), ((0.3, 0.3, 0.32, 0.31), 8)):
        x0, y0, x1, y1 = box
        want = (math.floor(y0 * bins) * bins + math.floor(x0 * bins),
                math.ceil(y1 * bins - 1) * bins + math.ceil(x1 * bins - 1))
        got = tuple(int(v) for v in fn(box, bins))
        if len(got) != 2:
            raise Wrong("return the two patch indices (top-left, bottom-right)")
        if got == want:
            continue
        if got == (math.floor(x0 * bins) * bins + math.floor(y0 * bins), math.ceil(x1 * bins - 1) * bins
                   + math.ceil(y1 * bins - 1)):
            raise Wrong("indices run row by row: row (from y) times the number of bins plus column (from x)")
        if got[0] == want[0] and got[1] == math.floor(y1 * bins) * bins + math.floor(x1 * bins) != want[1]:
            raise Wrong("the bottom-right corner takes the bin that *contains* it: ceil(v · P - 1), so a corner on a "
                        "bin edge stays in the bin before it")
        if got != want:
            raise Wrong(f"the location tokens of {box} with {bins} bins are off")


@exercise("06b.3", "The DPO loss")
def dpo(fn) -> None:
    g = torch.Generator().manual_seed(3)
    pc, pr, rc, rr = (-10 * torch.rand(5, generator=g, dtype=torch.float64) for _ in range(4))
    for beta in (0.1, 0.5):
        margin = beta * ((pc - rc) - (pr - rr))
        want = -torch.nn.functional.logsigmoid(margin).mean()
        got = fn(pc.clone(), pr.clone(), rc.clone(), rr.clone(), beta)
        got = number(got.mean() if isinstance(got, torch.Tensor) else got, "the loss")
        if abs(got - float(-torch.nn.functional.logsigmoid(-margin).mean())) < 1e-9:
            raise Wrong("the sign is flipped: the loss should fall as the chosen answer gains on the rejected one")
        if abs(got - float(-torch.nn.functional.logsigmoid(margin / beta).mean())) < 1e-9:
            raise Wrong("multiply the log-ratio difference by beta")
        if abs(got - float(want)) > 1e-6:
            raise Wrong("-log σ(β [(log π(y_c) - log π_ref(y_c)) - (log π(y_r) - log π_ref(y_r))]), averaged")
    if abs(number(fn(pc, pr, pc, pr, 0.1), "the loss") - math.log(2)) > 1e-6:
        raise Wrong("with policy = reference every reward is zero and the loss is log 2")


@exercise("06b.4", "LoRA's forward pass")
def lora(fn) -> None:
    g = torch.Generator().manual_seed(4)
    x, W, b = torch.randn(3, 6, generator=g), torch.randn(5, 6, generator=g), torch.randn(5, generator=g)
    A, B = torch.randn(2, 6, generator=g), torch.randn(5, 2, generator=g)
    want = x @ W.T + b + (16 / 2) * (x @ A.T @ B.T)
    got = fn(x.clone(), W.clone(), b.clone(), A.clone(), B.clone(), 16.0)
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        raise Wrong(f"return the layer's output, shape {tuple(want.shape)}")
    if torch.allclose(got, x @ W.T + b + 16 * (x @ A.T @ B.T), atol=1e-5):
        raise Wrong("the update is scaled by alpha / r, not alpha")
    if torch.allclose(got, x @ W.T + b, atol=1e-5):
        raise Wrong("that is the frozen layer alone: add the adapter's (alpha / r) · B A x")
    close(got, want, "W x + b + (alpha / r) · B A x", rtol=1e-5, atol=1e-5)


@exercise("06b.5", "Rounding a block to NF4")
def nf4(fn) -> None:
    from vlm_primer.recipes.quant import NF4

    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, generator=g) * 0.02
    absmax = x.abs().max()
    want = NF4[(x[:, None] / absmax - NF4).abs().argmin(dim=1)] * absmax
    got = fn(x.clone(), NF4.clone())
    if not isinstance(got, torch.Tensor):
        raise Wrong(f"return a tensor, got {type(got).__name__}")
    if got.shape != x.shape:
        raise Wrong("return the dequantised block: one value per input value")
    got = got.to(x.dtype)
    if torch.allclose(got, NF4[(x[:, None] - NF4).abs().argmin(dim=1)], atol=1e-7):
        raise Wrong("divide the block by its absmax before rounding, and multiply back after")
    close(got, want, "NF4[nearest level of x / absmax] · absmax", atol=1e-7)
    if not torch.equal(fn(torch.zeros(64), NF4.clone()), torch.zeros(64)):
        raise Wrong("an all-zero block has absmax 0: it should come back as zeros")


@exercise("06b.6", "CLIP-Adapter's residual blend")
def clip_adapter(fn) -> None:
    g = torch.Generator().manual_seed(6)
    f = torch.randn(4, 8, generator=g)
    W1, W2 = torch.randn(2, 8, generator=g), torch.randn(8, 2, generator=g)
    adapted = torch.relu(torch.relu(f @ W1.T) @ W2.T)
    for alpha in (0.2, 0.6):
        want = alpha * adapted + (1 - alpha) * f
        got = fn(f.clone(), W1.clone(), W2.clone(), alpha)
        if not isinstance(got, torch.Tensor) or got.shape != f.shape:
            raise Wrong("return one blended feature per input feature")
        if torch.allclose(got, (1 - alpha) * adapted + alpha * f, atol=1e-6):
            raise Wrong("alpha weighs the *adapter's* output (the paper's residual ratio)")
        close(got, want, "alpha · A(f) + (1 - alpha) · f", atol=1e-6)


@exercise("06b.7", "The accumulated loss")
def accumulated_loss(fn) -> None:
    for losses, items in (([2.0, 0.5], [3, 30]), ([1.0, 4.0, 2.0], [10, 10, 20]), ([0.7], [5])):
        want = sum(l * n for l, n in zip(losses, items)) / sum(items)
        got = number(fn(list(losses), list(items)), "the loss")
        if len(set(items)) > 1 and abs(got - sum(losses) / len(losses)) < 1e-9:
            raise Wrong("that is the plain average of the means: a token of a micro-batch of few tokens would count "
                        "more than one of a micro-batch of many; weigh each mean by its items")
        if abs(got - sum(l * n for l, n in zip(losses, items))) < 1e-9 and sum(items) != 1:
            raise Wrong("that is the sum of the token losses: divide by the number of items of the whole batch")
        if abs(got - want) > 1e-9:
            raise Wrong(f"the loss of micro-batches with mean losses {losses} over {items} items is off")
