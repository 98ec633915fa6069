"""Checks for the exercises of chapter 04b (text to image: VQ-VAE, early fusion, diffusion, generative classifiers).
Explained in notebook 04b, §Exercises."""

from __future__ import annotations

import math

import torch

from vlm_primer.exercises import Wrong, close, exercise, number


@exercise("04b.1", "Codebook perplexity")
def perplexity(fn) -> None:
    cases = [(torch.tensor([0, 1, 2, 3]), 4, 4.0), (torch.tensor([5, 5, 5]), 8, 1.0),
             (torch.tensor([0, 0, 0, 1]), 2, math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))]
    for ids, k, want in cases:
        got = number(fn(ids.clone(), k), "the perplexity")
        if math.isnan(got):
            raise Wrong("codes that are never used have p = 0 and contribute nothing (0 log 0 = 0)")
        ent = math.log(want)
        if abs(got - ent) < 1e-6 and want != 1.0:
            raise Wrong("that is the entropy: the perplexity is its exponential")
        if abs(got - 2 ** (ent / math.log(2))) > 1e-6 and abs(got - 2 ** ent) < 1e-6:
            raise Wrong("the entropy is in nats here: take exp, not 2 **")
        if abs(got - want) > 1e-6:
            raise Wrong(f"{k} codes, ids {ids.tolist()}: the value is off")


@exercise("04b.2", "The forward process")
def noisy(fn) -> None:
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    abar = torch.tensor([0.9, 0.5, 0.01])
    got = torch.as_tensor(fn(x0.clone(), noise.clone(), abar.clone()))
    a = abar.view(-1, 1, 1, 1)
    want = a.sqrt() * x0 + (1 - a).sqrt() * noise
    if got.shape != want.shape:
        raise Wrong(f"x_t has the image's shape {tuple(want.shape)}: broadcast abar_t over (B, 1, 1, 1)")
    if torch.allclose(got, a * x0 + (1 - a) * noise, atol=1e-5):
        raise Wrong("the coefficients are square roots: the variances, not the standard deviations, add to 1")
    close(got, want, "x_t")


@exercise("04b.3", "Classifier-free guidance")
def guide(fn) -> None:
    g = torch.Generator().manual_seed(1)
    u, c = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    for s in (3.0, 0.0, 1.0):
        got = torch.as_tensor(fn(u.clone(), c.clone(), s))
        if s == 3.0 and torch.allclose(got, c + s * (c - u), atol=1e-6):
            raise Wrong("start from the unconditional prediction and move s times the difference")
        if s == 3.0 and torch.allclose(got, u + s * (u - c), atol=1e-6):
            raise Wrong("guidance moves *towards* the conditional prediction: cond - uncond")
        close(got, u + s * (c - u), f"guidance at s = {s:g}")


@exercise("04b.4", "Predicting the clean image")
def predict_x0(fn) -> None:
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    for abar in (0.8, 0.1):
        x_t = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps
        got = torch.as_tensor(fn(x_t.clone(), eps.clone(), abar))
        if torch.allclose(got, (x_t - (1 - abar) * eps) / abar, atol=1e-5):
            raise Wrong("invert x_t = sqrt(abar) x0 + sqrt(1 - abar) eps: the coefficients are square roots")
        if got.abs().max() <= 1 and x0.abs().max() > 1:
            raise Wrong("no clipping here: return the exact inverse")
        close(got, x0, f"x0 at abar = {abar}", rtol=1e-4, atol=1e-5)


@exercise("04b.5", "Bayes' rule")
def class_posterior(fn) -> None:
    log_lik = torch.tensor([[-10.0, -11.0, -12.0], [-300.0, -301.0, -299.0]])
    log_prior = torch.tensor([0.2, 0.3, 0.5]).log()
    got = torch.as_tensor(fn(log_lik.clone(), log_prior.clone()))
    want = (log_lik.double() + log_prior.double()).softmax(-1)  # float32 steps are ~3e-5 at |z| = 300
    if torch.isnan(got).any():
        raise Wrong("exp(-300) underflows: normalise in log space (softmax, or subtract the row's maximum)")
    if torch.allclose(got, log_lik.softmax(-1), atol=1e-6):
        raise Wrong("the prior is missing: p(c | x) is proportional to p(c) p(x | c)")
    if got.shape == want.shape and torch.allclose(got.sum(0), torch.ones(3), atol=1e-4):
        raise Wrong("normalise over the classes of each image (dim -1), not over the images")
    close(got, want, "the posterior", rtol=1e-4, atol=1e-6)
