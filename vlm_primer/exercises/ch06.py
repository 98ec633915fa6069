"""Checks for the exercises of chapter 06 (training recipes I: Zipf frequencies, a filter's precision and recall,
DataComp's keep-top filter, SemDeDup's rule, the 6ND rule with attention, GPU-hours). Explained in notebook 06,
§Exercises."""

from __future__ import annotations

import numpy as np
import torch

from vlm_primer.exercises import Wrong, close, exercise, number


def _bools(x, n: int, what: str) -> list[bool]:
    out = [bool(v) for v in (x.tolist() if hasattr(x, "tolist") else x)]
    if len(out) != n:
        raise Wrong(f"{what} should have one entry per item ({n}), got {len(out)}")
    return out


@exercise("06.1", "Zipf frequencies")
def zipf(fn) -> None:
    for n, s in ((6, 2.0), (10, 1.0), (4, 0.0)):
        want = np.arange(1, n + 1, dtype=float) ** -s
        want /= want.sum()
        got = np.asarray(fn(n, s), dtype=float).ravel()
        if got.shape != (n,):
            raise Wrong(f"return one probability per rank ({n}), got shape {got.shape}")
        if abs(got.sum() - 1) > 1e-6:
            raise Wrong("the probabilities should sum to 1: divide by the sum of r ** -s")
        if s and np.allclose(got, want[::-1]):
            raise Wrong("rank 1 is the most frequent: p(r) grows as r ** -s shrinks")
        close(torch.tensor(got), torch.tensor(want), f"p(r) for n={n}, s={s}")


@exercise("06.2", "A filter's precision and recall")
def precision_recall(fn) -> None:
    removed = [True, True, False, False, True, False, True, False]
    bad = [True, False, True, False, True, False, True, True]
    got = np.asarray(fn(list(removed), list(bad)), dtype=float).ravel()
    if got.shape != (2,):
        raise Wrong("return (precision, recall)")
    if np.allclose(got, [3 / 5, 3 / 4]):
        raise Wrong("precision and recall are swapped: precision asks how many removed pairs were bad")
    close(torch.tensor(got), torch.tensor([3 / 4, 3 / 5]), "(precision, recall)")
    none = np.asarray(fn([False] * 3, [True, False, True]), dtype=float).ravel()
    if not np.isfinite(none).all() or none[1] != 0:
        raise Wrong("a filter that removes nothing has recall 0 and no division by zero (precision 0 by convention)")


@exercise("06.3", "DataComp's keep-top filter")
def keep_top(fn) -> None:
    scores = [0.3, 0.9, 0.1, 0.5, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0]
    got = _bools(fn(list(scores), 0.4), 10, "the mask")
    want = [False, True, False, False, True, False, True, False, True, False]
    if got == [not w for w in want] or sum(got) == 6:
        raise Wrong("keep the pairs with the *highest* CLIPScore")
    if sum(got) != 4:
        raise Wrong(f"keep round(0.4 * 10) = 4 pairs, got {sum(got)}")
    if got != want:
        raise Wrong("keep the four best-scored pairs")


@exercise("06.4", "SemDeDup's rule in one cluster")
def semdedup(fn) -> None:
    # the rows are not in centroid order: an answer that ranks by index instead is caught
    x = torch.tensor([[0.995, 0.0998], [1.0, 0.0], [0.1, 0.995], [0.6, 0.8], [0.0, 1.0]])
    x = x / x.norm(dim=1, keepdim=True)
    centroid = torch.nn.functional.normalize(x.mean(0), dim=0)
    order = (x @ centroid).argsort()  # farthest from the centroid first
    want = [False] * 5
    for pos, j in enumerate(order.tolist()):
        want[j] = any(float(x[i] @ x[j]) > 1 - 0.01 for i in order[:pos].tolist())
    got = _bools(fn(x.clone(), centroid.clone(), 0.01), 5, "the removal mask")
    if sum(got) == 2 * sum(want):
        raise Wrong("a near pair loses one member, not both: compare each item only with those ranked before it")
    if got != want:
        raise Wrong("rank from farthest to nearest the centroid, then drop an item whose cosine with an earlier "
                    "one exceeds 1 - eps")


@exercise("06.5", "Training FLOPs of a transformer")
def train_flops(fn) -> None:
    for params, tokens, layers, width in ((1e6, 64, 2, 64), (8.6e7, 197, 12, 768)):
        batch = 32
        forward = 2 * params * tokens * batch + 4 * layers * tokens ** 2 * width * batch
        got = number(fn(params, tokens, layers, width, batch), "the FLOPs")
        if abs(got - 6 * params * tokens * batch) / (6 * params * tokens * batch) < 1e-9:
            raise Wrong("6·N·D leaves attention out: add 2·2·layers·s²·width per sample for a forward pass, "
                        "then count the training step")
        if abs(got - forward) / forward < 1e-9:
            raise Wrong("that is one forward pass: training adds a backward pass that costs twice as much")
        if abs(got - 3 * forward) / (3 * forward) > 1e-9:
            raise Wrong("3 × (2·N·s + 4·layers·s²·width) per sample, times the batch")


@exercise("06.6", "GPU-hours")
def gpu_hours(fn) -> None:
    got = number(fn(3.6e21, 312.0, 0.4), "the GPU-hours")
    want = 3.6e21 / (312e12 * 0.4) / 3600
    if abs(got - want * 0.4 * 0.4) / want < 1e-6 or abs(got - 3.6e21 / (312e12 / 0.4) / 3600) / want < 1e-6:
        raise Wrong("the GPU delivers peak × MFU FLOP/s: divide the FLOPs by that")
    if abs(got - want * 3600) / (want * 3600) < 1e-6:
        raise Wrong("that is GPU-seconds: divide by 3,600")
    if abs(got - want) / want > 1e-6:
        raise Wrong("FLOPs / (peak TFLOP/s × 1e12 × MFU) / 3600")
