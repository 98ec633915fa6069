"""Generative classifiers: a text-to-image model turned into a zero-shot classifier by Bayes' rule.

Explained in notebook 04b, §Generative classifiers (survey §2.4.3). Given class prompts ``c_1 .. c_n`` and an image
``x``, ``p(c_i | x) = p(c_i) p(x | c_i) / sum_j p(c_j) p(x | c_j)``, so a model that scores ``log p(x | c)`` is a
classifier with no classification training at all:

* an **autoregressive** model over VQ image tokens ``t_1 .. t_K`` gives it exactly:
  ``log p(x | c) = sum_j log p(t_j | t_<j, c)`` (:func:`autoregressive_scores`);
* a **diffusion** model gives a bound: ``log p(x | c) >= -E_{t, eps} ||eps - eps_theta(x_t, t, c)||^2 + const``,
  estimated by Monte Carlo with the *same* ``(t, eps)`` draws for every class, so the classes are compared on
  equal noise and the estimate's variance mostly cancels in the comparison, as Diffusion Classifier does
  (:func:`diffusion_scores`).

Both cost one model evaluation per (image, class[, sample]), which is the price the survey warns about: a CLIP
embeds the image once and the classes once.
"""

from __future__ import annotations

import torch
from einops import repeat
from tqdm.auto import tqdm

from vlm_primer.validate import check_finite, check_images, check_int, check_mask, check_tokens

__all__ = ["autoregressive_scores", "diffusion_pair_scores", "diffusion_scores", "posterior",
           "stratified_timesteps"]


def _check_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    prompt_ids = check_tokens(prompt_ids, name="prompt_ids", device=device)
    prompt_mask = check_mask(prompt_mask, shape=tuple(prompt_ids.shape), name="prompt_mask", like="prompt_ids",
                             device=device)
    return prompt_ids, prompt_mask


@torch.no_grad()
def autoregressive_scores(model: torch.nn.Module, image_codes: torch.Tensor, prompt_ids: torch.Tensor,
                          prompt_mask: torch.Tensor, batch_size: int = 1024, progress: bool = False) -> torch.Tensor:
    """``log p(x | c)`` for every image (its VQ codes ``(B, K)``) and class prompt (``(C, L)`` ids and mask) under an
    :class:`~vlm_primer.generative.early_fusion.EarlyFusion` model: a ``(B, C)`` tensor of summed image-token
    log-probabilities. Explained in notebook 04b, §Generative classifiers."""
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = _check_prompts(prompt_ids, prompt_mask, device)
    image_codes = check_tokens(image_codes, name="image_codes", device=device)
    B, C = len(image_codes), len(prompt_ids)
    codes = repeat(image_codes, "b k -> (b c) k", c=C)
    ids, mask = repeat(prompt_ids, "c l -> (b c) l", b=B), repeat(prompt_mask, "c l -> (b c) l", b=B)
    out = []
    for i in tqdm(range(0, B * C, batch_size), disable=not progress, desc="log p(x|c)"):
        out.append(model.eval().image_log_likelihood(ids[i:i + batch_size], mask[i:i + batch_size],
                                                     codes[i:i + batch_size]))
    return torch.cat(out).view(B, C)


def _check_samples(samples: int, num_train_timesteps: int) -> None:
    check_int(samples, "samples", 1, num_train_timesteps, hint="Monte Carlo draws per image")


def stratified_timesteps(samples: int, num_train_timesteps: int, generator: torch.Generator | None = None
                         ) -> torch.Tensor:
    """``samples`` timesteps covering ``[0, T)`` evenly: one uniform draw in each of ``samples`` equal strata
    (lower variance than ``samples`` independent draws; Diffusion Classifier uses evenly spaced ones)."""
    _check_samples(samples, num_train_timesteps)
    edges = torch.linspace(0, num_train_timesteps, samples + 1)
    u = torch.rand(samples, generator=generator)
    return (edges[:-1] + u * (edges[1:] - edges[:-1])).long().clamp_(0, num_train_timesteps - 1)


def _draws(images: torch.Tensor, samples: int, num_train_timesteps: int, seed: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The Monte Carlo draws of each image: ``(B, samples)`` stratified timesteps and ``(B, samples, C, H, W)``
    noise, a function of ``seed``, the number of images and the image's index (every timestep is drawn before any
    noise), so every class and every caption of one batch of images sees the same."""
    g = torch.Generator().manual_seed(seed)
    t = torch.stack([stratified_timesteps(samples, num_train_timesteps, g) for _ in range(len(images))])
    noise = torch.randn(len(images), samples, *images.shape[1:], generator=g)
    return t.to(images.device), noise.to(images.device)


def _denoising_error(model: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                     context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
    """``||eps - eps_theta(x_t, t, c)||^2`` per row (mean over pixels): one Monte Carlo term of the ELBO."""
    return (model.eps(x_t, t, context, context_mask) - noise).pow(2).flatten(1).mean(1)


def _check_diffusion_inputs(model, images, prompt_ids, prompt_mask, samples):
    device = next(model.parameters()).device
    images = check_images(images, name="images", channels=model.cfg.in_channels, size=model.cfg.image_size,
                          device=device)
    check_finite(images, "images")
    _check_samples(samples, model.cfg.num_train_timesteps)
    return (images, *_check_prompts(prompt_ids, prompt_mask, device))


@torch.no_grad()
def diffusion_scores(model: torch.nn.Module, images: torch.Tensor, prompt_ids: torch.Tensor,
                     prompt_mask: torch.Tensor, samples: int = 16, seed: int = 0, batch_size: int = 1024,
                     progress: bool = False) -> torch.Tensor:
    """Monte Carlo estimate of the diffusion ELBO, ``-mean_s ||eps_s - eps_theta(x_{t_s}, t_s, c)||^2 / D`` (the
    squared error averaged over the ``D = 3·H·W`` pixels: the bound divided by ``D``, up to a constant; the argmax
    over classes is the same, a :func:`posterior` of it is flatter unless it is multiplied by ``D``), for every
    image ``(B, 3, H, W)`` (in the model's pixel range) and class prompt: a ``(B, C)`` tensor.

    Each image gets ``samples`` draws of ``(t, eps)`` (stratified timesteps, seeded by ``seed``); every class is
    scored on the *same* draws. Explained in notebook 04b, §Generative classifiers."""
    from vlm_primer.generative.diffusion import add_noise

    images, prompt_ids, prompt_mask = _check_diffusion_inputs(model, images, prompt_ids, prompt_mask, samples)
    model = model.eval()
    context, context_mask = model.encode_text(prompt_ids, prompt_mask)         # each class encoded once
    B, C = len(images), len(prompt_ids)
    t_all, noise_all = _draws(images, samples, model.cfg.num_train_timesteps, seed)
    scores = torch.zeros(B, C, device=images.device)
    per_chunk = max(1, batch_size // C)                                          # (image, sample) pairs per forward
    jobs = torch.cartesian_prod(torch.arange(B), torch.arange(samples)).to(images.device)
    for i in tqdm(range(0, len(jobs), per_chunk), disable=not progress, desc="diffusion ELBO"):
        bi, si = jobs[i:i + per_chunk].unbind(1)
        t, noise, n = t_all[bi, si], noise_all[bi, si], len(bi)
        x_t = add_noise(model.schedule, images[bi], noise, t)                   # one noisy image per draw...
        err = _denoising_error(model, repeat(x_t, "n ... -> (n c) ...", c=C), repeat(t, "n -> (n c)", c=C),
                               repeat(noise, "n ... -> (n c) ...", c=C),                 # ...for every class
                               repeat(context, "c l d -> (n c) l d", n=n), repeat(context_mask, "c l -> (n c) l", n=n))
        err = err.view(n, C)
        scores.index_add_(0, bi, -err / samples)
    return scores


@torch.no_grad()
def diffusion_pair_scores(model: torch.nn.Module, images: torch.Tensor, input_ids: torch.Tensor,
                          attention_mask: torch.Tensor, samples: int = 16, seed: int = 0) -> torch.Tensor:
    """The same estimate for ``B`` (image, caption) pairs, ``(B,)``: image ``b`` gets the draws it gets in
    :func:`diffusion_scores` on the same images with the same ``seed``, so two captions of one image are compared
    on equal noise (chapter 01's Winoground-style pairs). Explained in notebook 04b, §Generative classifiers."""
    from vlm_primer.generative.diffusion import add_noise

    images, ids, mask = _check_diffusion_inputs(model, images, input_ids, attention_mask, samples)
    if len(ids) != len(images):
        raise ValueError(f"input_ids ({len(ids)}) and images ({len(images)}) must pair up one to one")
    model = model.eval()
    context, context_mask = model.encode_text(ids, mask)
    t_all, noise_all = _draws(images, samples, model.cfg.num_train_timesteps, seed)
    score = torch.zeros(len(images), device=images.device)
    for s in range(samples):
        x_t = add_noise(model.schedule, images, noise_all[:, s], t_all[:, s])
        score -= _denoising_error(model, x_t, t_all[:, s], noise_all[:, s], context, context_mask) / samples
    return score


def posterior(scores: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
    """Bayes' rule on ``(B, C)`` log-likelihood scores: ``p(c | x)`` with a uniform prior unless ``prior`` ``(C,)``
    (probabilities) is given. Explained in notebook 04b, §Generative classifiers."""
    if scores.dim() != 2:
        raise ValueError(f"scores must have shape (B, C), got {tuple(scores.shape)}")
    if prior is not None:
        if prior.shape != scores.shape[1:] or (prior < 0).any() or not torch.isclose(prior.sum(), prior.new_tensor(1.0)):
            raise ValueError(f"prior must be C={scores.shape[1]} probabilities summing to 1, got shape "
                             f"{tuple(prior.shape)}")
        scores = scores + prior.log()
    return scores.softmax(-1)
