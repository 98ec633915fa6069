"""A patch codebook: the image tokenizer FLAVA's masked image modelling predicts, made by k-means.

Explained in notebook 03, §FLAVA. FLAVA (like BEiT) does not regress pixels: each patch gets the id of a code from a
separately trained image tokenizer (DALL-E's dVAE, 8192 codes) and MIM is classification over those ids. Training a
dVAE is chapter 04b's subject; here the tokenizer is the simplest vector quantiser there is: k-means over the pixel
vectors of training patches. :meth:`encode` maps every patch to its nearest code, :meth:`decode` paints each patch
with its code; the same two functions measure rate and distortion in notebook 03, §Rate and distortion.
"""

from __future__ import annotations

import torch

from vlm_primer.masking.masks import patchify, unpatchify

__all__ = ["PatchCodebook", "kmeans", "rate_distortion"]


def kmeans(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means on the rows of ``x`` ``(N, D)`` with k-means++ seeding; returns the ``(k, D)`` centres. A centre
    that loses all its points is re-seeded on the point farthest from its centre."""
    if not isinstance(k, int) or k < 2:
        raise ValueError(f"a codebook needs k >= 2 codes, got {k!r}")
    if len(x) < k:
        raise ValueError(f"{len(x)} points cannot fill {k} codes")
    g = torch.Generator().manual_seed(seed)
    codes = x[torch.randint(len(x), (1,), generator=g)]
    for _ in range(k - 1):  # k-means++: each new centre far from the ones chosen
        d = torch.cdist(x, codes).min(1).values.pow(2)
        codes = torch.cat([codes, x[torch.multinomial(d + 1e-12, 1, generator=g)]])
    for _ in range(iters):
        dist = torch.cdist(x, codes)
        assign = dist.argmin(1)
        for j in range(k):
            members = x[assign == j]
            codes[j] = members.mean(0) if len(members) else x[dist.min(1).values.argmax()]
    return codes


def rate_distortion(features: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (2, 4, 8, 16, 32),
                    seed: int = 0) -> list[dict[str, float]]:
    """Survey §2.3.3 on a toy: quantise each representation ``features`` ``(N, D)`` to one of ``k`` codes (k-means),
    then measure the **rate**, the entropy of the code in bits (what the code can carry about the input, at most
    ``log2 k``), and the **distortion**, the mean squared error of rebuilding each ``targets`` row ``(N, ...)`` as the
    mean of its code's rows (the best a decoder that sees only the code can do in squared error). Explained in
    notebook 03, §Rate and distortion."""
    if len(features) != len(targets):
        raise ValueError(f"features ({len(features)}) and targets ({len(targets)}) must have the same rows")
    flat = targets.reshape(len(targets), -1).double()
    out = []
    for k in ks:
        codes = kmeans(features.double(), k, seed=seed)
        assign = torch.cdist(features.double(), codes).argmin(1)
        p = torch.bincount(assign, minlength=k).double() / len(assign)
        rate = -(p[p > 0] * p[p > 0].log2()).sum()
        means = torch.zeros(k, flat.shape[1], dtype=torch.double).index_add_(0, assign, flat)
        means = means / torch.bincount(assign, minlength=k).clamp_min(1)[:, None]
        out.append({"k": k, "rate_bits": rate.item(), "distortion": (flat - means[assign]).pow(2).mean().item()})
    return out


class PatchCodebook:
    """``k`` codes of ``patch_size x patch_size`` patches; ``codes`` ``(k, p*p*C)``."""

    def __init__(self, codes: torch.Tensor, patch_size: int, channels: int = 3) -> None:
        if codes.ndim != 2 or codes.shape[1] != patch_size**2 * channels:
            raise ValueError(f"codes must be (k, {patch_size**2 * channels}), got {tuple(codes.shape)}")
        self.codes, self.patch_size, self.channels = codes, patch_size, channels

    @classmethod
    def fit(cls, images: torch.Tensor, k: int, patch_size: int, iters: int = 20, seed: int = 0,
            max_patches: int = 50_000) -> "PatchCodebook":
        """k-means (Lloyd's algorithm, k-means++-style seeding) on the patches of ``images`` ``(B, C, H, W)``; a
        code that loses all its patches is re-seeded on the patch farthest from its code."""
        g = torch.Generator().manual_seed(seed)
        x = patchify(images.float(), patch_size).reshape(-1, patch_size**2 * images.shape[1])
        if len(x) > max_patches:
            x = x[torch.randperm(len(x), generator=g)[:max_patches]]
        codes = kmeans(x, k, iters, seed)
        return cls(codes, patch_size, images.shape[1])

    @property
    def k(self) -> int:
        return len(self.codes)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> code ids ``(B, N)``, row-major patches (FLAVA's ``mim_labels``)."""
        x = patchify(images.float(), self.patch_size)
        if x.shape[-1] != self.codes.shape[1]:
            raise ValueError(f"images with {images.shape[1]} channels do not match a codebook of "
                             f"{self.channels}-channel patches")
        return torch.cdist(x, self.codes[None].to(x)).argmin(-1)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids ``(B, N)`` -> images painted patch by patch with their codes ``(B, C, H, W)``."""
        return unpatchify(self.codes[ids], self.patch_size, self.channels)
