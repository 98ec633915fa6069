"""Checks for the exercises of chapter 03 (masking: MAE, MLM, FLAVA, MaskVLM). Explained in notebook 03, §Exercises."""

from __future__ import annotations

import math

import torch

from vlm_primer.exercises import Wrong, close, exercise, number


@exercise("03.1", "MAE's kept patches")
def mae_keep(fn) -> None:
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(3, 10, generator=g)
    for ratio in (0.75, 0.5, 0.0, 0.85):  # 0.85: 1.5 patches, int keeps 1 (round would keep 2)
        got = torch.as_tensor(fn(noise.clone(), ratio)).long()
        n_keep = int(10 * (1 - ratio))
        want = noise.argsort(1)[:, :n_keep]
        if got.shape != want.shape:
            raise Wrong(f"ratio {ratio}: MAE keeps int(N * (1 - ratio)) = {n_keep} patches per row, got shape "
                        f"{tuple(got.shape)}")
        if torch.equal(got, noise.argsort(1, descending=True)[:, :n_keep]):
            raise Wrong("MAE keeps the patches with the *smallest* noise (ascending sort)")
        if torch.equal(got.sort(1).values, want.sort(1).values) and not torch.equal(got, want):
            raise Wrong("the right patches, in the wrong order: keep them in the order of the sorted noise")
        if not torch.equal(got, want):
            raise Wrong(f"ratio {ratio}: wrong patches kept")


@exercise("03.2", "The per-patch normalised target")
def norm_pix(fn) -> None:
    g = torch.Generator().manual_seed(1)
    patches = torch.rand(2, 5, 12, generator=g) * 3
    patches[0, 0] = 0.5  # a flat patch: its variance is 0
    got = torch.as_tensor(fn(patches.clone())).double()
    x = patches.double()
    want = (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True) + 1e-6) ** 0.5
    if got.shape != patches.shape:
        raise Wrong(f"one target per pixel: shape {tuple(patches.shape)}, got {tuple(got.shape)}")
    if not torch.isfinite(got).all():
        raise Wrong("a flat patch has variance 0: add 1e-6 to the variance before the square root")
    biased = (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True, unbiased=False) + 1e-6) ** 0.5
    if torch.allclose(got, biased, atol=1e-6) and not torch.allclose(got, want, atol=1e-6):
        raise Wrong("MAE (and torch.var) use the unbiased variance, dividing by n - 1")
    globally = (x - x.mean()) / (x.var() + 1e-6) ** 0.5
    if torch.allclose(got, globally, atol=1e-6):
        raise Wrong("normalise each patch by its own mean and variance, not the whole batch's")
    close(got, want, "the normalised targets", rtol=1e-5, atol=1e-6)


@exercise("03.3", "The loss on hidden patches only")
def masked_mse(fn) -> None:
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(2, 6, 4, generator=g), torch.randn(2, 6, 4, generator=g)
    mask = torch.tensor([[1, 1, 0, 0, 0, 1], [0, 1, 1, 1, 0, 0]], dtype=torch.float)
    got = torch.as_tensor(fn(pred.clone(), target.clone(), mask.clone())).double()
    per = (pred - target).double().pow(2).mean(-1)
    want = (per * mask).sum() / mask.sum()
    if got.ndim != 0:
        raise Wrong("the loss is one number")
    if torch.allclose(got, per.mean(), atol=1e-6):
        raise Wrong("the loss counts only the hidden patches (mask = 1): the visible ones are free to copy")
    if torch.allclose(got, (per * mask).sum() / mask.numel(), atol=1e-6):
        raise Wrong("divide by the number of hidden patches, not by all patches")
    close(got, want, "the masked MSE", rtol=1e-5, atol=1e-6)


@exercise("03.4", "The rate of a code")
def code_entropy(fn) -> None:
    cases = [(torch.tensor([0, 0, 1, 1]), 2, 1.0), (torch.tensor([3, 3, 3, 3]), 4, 0.0),
             (torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]), 4, 2.0), (torch.tensor([0, 0, 0, 1]), 2, None)]
    for ids, k, want in cases:
        got = number(fn(ids.clone(), k), "the rate")
        if want is None:
            want = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
        if abs(got - want * math.log(2)) < 1e-6 and want:
            raise Wrong("the rate is in bits: use log base 2")
        if math.isnan(got):
            raise Wrong("codes that are never used have p = 0 and contribute 0 (skip them, 0 log 0 = 0)")
        if abs(got - want) > 1e-6:
            raise Wrong(f"codes {ids.tolist()} of {k}: expected the entropy of their frequencies, got {got:.4f}")


@exercise("03.5", "MLM accuracy")
def mlm_accuracy(fn) -> None:
    logits = torch.zeros(2, 4, 5)
    labels = torch.tensor([[-100, 2, -100, 4], [1, -100, -100, -100]])
    for b, t, c in ((0, 1, 2), (0, 3, 0), (1, 0, 1), (0, 0, 3), (1, 2, 3)):
        logits[b, t, c] = 5.0
    got = number(fn(logits.clone(), labels.clone()), "the accuracy")
    if abs(got - 0.25) < 1e-6:
        raise Wrong("score only the masked positions (labels != -100): the others are not predictions")
    if abs(got - 2 / 3) > 1e-6:
        raise Wrong(f"2 of the 3 masked words are right: the fraction is off (got {got:.4f})")
    # a second case: a masked word whose id is 0 (a real token, not "unmasked"), 1 of 4 right
    logits2, labels2 = torch.zeros(1, 5, 3), torch.tensor([[0, -100, 2, 1, 0]])
    logits2[0, :, 1] = 5.0
    if abs(number(fn(logits2, labels2), "the accuracy") - 0.25) > 1e-6:
        raise Wrong("every position whose label is not -100 is scored, label 0 included")
