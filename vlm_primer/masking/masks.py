"""Masking utilities: which tokens or patches to hide, and how. Explained in notebook 03, §Two masking families.

* Text (BERT, Devlin et al. 2019): :func:`bert_mask_tokens` picks 15 % of the real tokens and corrupts them 80/10/10
  (``<mask>`` / a random token / unchanged); special tokens are never picked. :func:`span_mask` picks contiguous spans.
* Images (MAE, He et al. 2022): :func:`random_masking` shuffles each sample's patches by random ``noise`` and keeps
  the first ``int(N * (1 - ratio))``, exactly as MAE and ``transformers``' ``ViTMAE`` do; :func:`block_mask` hides
  rectangular blocks of the patch grid (BEiT) and :func:`mask_to_noise` turns any boolean mask into MAE's noise.
* :func:`patchify` / :func:`unpatchify`: images <-> per-patch pixel vectors in MAE's ``(p, q, c)`` order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
from einops import rearrange

from vlm_primer.validate import check_int, check_tokens

IGNORE_INDEX = -100  # labels of unmasked positions: the loss skips them (PyTorch's cross-entropy default)


def _check_ratio(ratio: float, name: str, upper_open: bool = True) -> float:
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not (0 <= ratio < 1 if upper_open
                                                                               else 0 <= ratio <= 1):
        raise ValueError(f"{name} must be a number in [0, 1{')' if upper_open else ']'}, got {ratio!r}")
    return float(ratio)


def bert_mask_tokens(input_ids: Any, *, mask_token_id: int, vocab_size: int, prob: float = 0.15,
                     special_ids: Iterable[int] = (0, 1, 2, 3), mask_frac: float = 0.8, random_frac: float = 0.1,
                     candidates: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masked-LM corruption. Returns ``(corrupted_ids, labels)``.

    Each token that is not in ``special_ids`` (and, when given, where the bool ``candidates`` ``(B, L)`` is true) is
    picked with probability ``prob``; a picked token becomes ``mask_token_id`` with probability ``mask_frac``, a
    uniformly random id not in ``special_ids`` with probability ``random_frac``, and stays itself otherwise. The
    default ``special_ids`` are the tokenizer's pad, unk, bos and eos; pass ``Tokenizer.special_ids`` to keep its
    ``<image>`` and chat tokens out as well, as notebook 03 does. ``labels`` hold the
    original id at picked positions and :data:`IGNORE_INDEX` elsewhere, so the loss is on picked tokens only
    (``transformers``' ``DataCollatorForLanguageModeling``, with specials guarded). Explained in notebook 03, §MLM.
    """
    prob = _check_ratio(prob, "prob", upper_open=False)
    for name, frac in (("mask_frac", mask_frac), ("random_frac", random_frac)):
        _check_ratio(frac, name, upper_open=False)
    if mask_frac + random_frac > 1 + 1e-9:
        raise ValueError(f"mask_frac + random_frac must be <= 1, got {mask_frac} + {random_frac}")
    ids = check_tokens(input_ids, vocab_size=vocab_size, name="input_ids")
    specials = torch.tensor(sorted(set(special_ids)) + [mask_token_id], dtype=ids.dtype, device=ids.device)
    if not 0 <= mask_token_id < vocab_size:
        raise ValueError(f"mask_token_id={mask_token_id} is outside the vocabulary [0, {vocab_size})")
    allowed = ~torch.isin(ids, specials)
    if candidates is not None:
        if candidates.shape != ids.shape:
            raise ValueError(f"candidates must have the shape of input_ids {tuple(ids.shape)}, "
                             f"got {tuple(candidates.shape)}")
        allowed &= candidates.to(device=ids.device, dtype=torch.bool)
    u = torch.rand(ids.shape, generator=generator).to(ids.device)
    picked = allowed & (u < prob)
    labels = ids.masked_fill(~picked, IGNORE_INDEX)
    how = torch.rand(ids.shape, generator=generator).to(ids.device)
    to_mask = picked & (how < mask_frac)
    to_random = picked & (how >= mask_frac) & (how < mask_frac + random_frac)
    # random replacements are drawn from the ordinary vocabulary, never a special token. The r-th ordinary id is r
    # plus the number of sorted special ids s_j with s_j - j <= r: found on the device, where listing the ordinary
    # ids (nonzero) would read values back to the host.
    special = sorted({int(i) for i in special_ids if 0 <= int(i) < vocab_size} | {mask_token_id})
    if len(special) == vocab_size:
        raise ValueError("the vocabulary has no ordinary (non-special) tokens to draw random replacements from")
    r = torch.randint(vocab_size - len(special), ids.shape, generator=generator).to(ids.device)
    draws = r + torch.searchsorted(torch.tensor([s - j for j, s in enumerate(special)], device=ids.device), r,
                                   right=True)
    corrupted = torch.where(to_mask, torch.full_like(ids, mask_token_id), ids)
    corrupted = torch.where(to_random, draws.to(ids.dtype), corrupted)
    return corrupted, labels


def span_mask(lengths: Any, max_len: int, ratio: float, span: int = 3,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Contiguous-span masking for text: a bool ``(B, max_len)`` mask hiding about ``ratio`` of each row's first
    ``lengths[b]`` positions, in spans of ``span`` tokens (SpanBERT-style; at least one token when ``ratio > 0``).
    Spans have a fixed length, where SpanBERT draws it from a geometric distribution (p = 0.2, at most 10 words) and
    masks whole words."""
    ratio = _check_ratio(ratio, "ratio")
    check_int(span, "span")
    lengths = torch.as_tensor(lengths, dtype=torch.long).flatten()
    if (lengths < 0).any() or (lengths > max_len).any():
        raise ValueError(f"lengths must lie in [0, {max_len}], got {lengths.tolist()}")
    out = torch.zeros(len(lengths), max_len, dtype=torch.bool)
    for b, n in enumerate(lengths.tolist()):
        target = round(n * ratio) if ratio > 0 else 0
        target = max(target, 1) if ratio > 0 and n > 0 else target
        while int(out[b, :n].sum()) < target:
            start = int(torch.randint(max(n - span + 1, 1), (1,), generator=generator))
            out[b, start:min(start + span, n)] = True
            if int(out[b, :n].sum()) > target:  # trim the overshoot from the end of this span
                extra = int(out[b, :n].sum()) - target
                stop = min(start + span, n)
                out[b, stop - extra:stop] = False
    return out


def block_mask(batch: int, grid: int, ratio: float, *, min_block: int = 2, max_block: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """BEiT's blockwise masking on a ``grid x grid`` patch grid: random rectangles are hidden until exactly
    ``N - int(N * (1 - ratio))`` of the ``N = grid**2`` patches are masked (MAE's count, so :func:`mask_to_noise`
    can feed it to :func:`random_masking` at the same ratio). Returns a bool ``(batch, grid**2)`` mask, True = hidden, row-major.
    Simplified: each side of a block is uniform in ``[min_block, max_block]``, and the last block is cut in raster
    order to hit the count exactly; BEiT draws a block's area (at least 16 patches) and aspect ratio (0.3 to 1/0.3),
    adds whole rectangles only, and may fall short of its target (75 of 196)."""
    ratio = _check_ratio(ratio, "ratio")
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    max_block = max_block or max(min_block, grid // 2)
    target = grid * grid - int(grid * grid * (1 - ratio))
    out = torch.zeros(batch, grid, grid, dtype=torch.bool)
    for b in range(batch):
        while int(out[b].sum()) < target:
            h, w = (int(torch.randint(min_block, max_block + 1, (1,), generator=generator)) for _ in range(2))
            h, w = min(h, grid), min(w, grid)
            top = int(torch.randint(grid - h + 1, (1,), generator=generator))
            left = int(torch.randint(grid - w + 1, (1,), generator=generator))
            block = torch.zeros(grid, grid, dtype=torch.bool)
            block[top:top + h, left:left + w] = True
            new = block & ~out[b]
            room = target - int(out[b].sum())
            if int(new.sum()) > room:  # keep only as many new patches as the target allows, in raster order
                keep = new.flatten().nonzero().squeeze(1)[:room]
                new = torch.zeros(grid * grid, dtype=torch.bool)
                new[keep] = True
                new = new.view(grid, grid)
            out[b] |= new
    return out.flatten(1)


def mask_to_noise(mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """MAE's ``noise`` ``(B, N)`` that makes :func:`random_masking` hide exactly the True patches of ``mask``
    (each row must hide the same number): kept patches get noise in [0, 1), hidden ones in [1, 2)."""
    if mask.ndim != 2 or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool (B, N) tensor, got {mask.dtype} {tuple(mask.shape)}")
    counts = mask.sum(1)
    if len(counts) and not (counts == counts[0]).all():
        raise ValueError(f"every row must hide the same number of patches for MAE, got {counts.tolist()}")
    return torch.rand(mask.shape, generator=generator).to(mask.device) + mask.float()


@dataclass
class MaskedPatches:
    """What :func:`random_masking` returns: the kept tokens, the mask (1 = hidden, in the original patch order),
    ``ids_restore`` (undoes the shuffle) and ``ids_keep`` (the kept patches' original indices)."""

    kept: torch.Tensor         # (B, n_keep, D)
    mask: torch.Tensor         # (B, N) float, 1 = masked
    ids_restore: torch.Tensor  # (B, N)
    ids_keep: torch.Tensor     # (B, n_keep)


def random_masking(x: torch.Tensor, ratio: float, noise: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> MaskedPatches:
    """MAE's per-sample random masking of tokens ``x`` ``(B, N, D)``: sort each row by ``noise`` (uniform by
    default), keep the ``int(N * (1 - ratio))`` smallest. Explained in notebook 03, §MAE."""
    ratio = _check_ratio(ratio, "mask ratio")
    if x.ndim != 3:
        raise ValueError(f"random_masking expects tokens (B, N, D), got shape {tuple(x.shape)}")
    b, n, d = x.shape
    n_keep = int(n * (1 - ratio))
    if n_keep < 1:
        raise ValueError(f"mask ratio {ratio} keeps no patch out of {n}")
    if noise is None:
        noise = torch.rand(b, n, generator=generator).to(x.device)
    elif noise.shape != (b, n):
        raise ValueError(f"noise must have shape (B, N) = {(b, n)}, got {tuple(noise.shape)}")
    ids_shuffle = torch.argsort(noise.to(x.device), dim=1)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :n_keep]
    kept = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, d))
    mask = torch.ones(b, n, device=x.device, dtype=x.dtype)
    mask[:, :n_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return MaskedPatches(kept=kept, mask=mask, ids_restore=ids_restore, ids_keep=ids_keep)


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, N, p*p*C)``, row-major patches, each flattened as ``(p, q, c)`` like MAE."""
    if images.ndim != 4 or images.shape[2] % patch_size or images.shape[3] % patch_size:
        raise ValueError(f"patchify needs images (B, C, H, W) with H and W multiples of {patch_size}, "
                         f"got {tuple(images.shape)}")
    return rearrange(images, "b c (h p) (w q) -> b (h w) (p q c)", p=patch_size, q=patch_size)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int = 3) -> torch.Tensor:
    """Inverse of :func:`patchify` for a square grid."""
    n = patches.shape[1]
    grid = int(round(n**0.5))
    if grid * grid != n or patches.shape[2] != patch_size**2 * channels:
        raise ValueError(f"unpatchify needs (B, grid^2, {patch_size**2 * channels}), got {tuple(patches.shape)}")
    return rearrange(patches, "b (h w) (p q c) -> b c (h p) (w q)", h=grid, p=patch_size, q=patch_size)
