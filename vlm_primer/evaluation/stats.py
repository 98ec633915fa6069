"""Statistics for benchmark numbers: bootstrap intervals, WEAT/SEAT bias tests, Winoground scores.

Explained in notebook 07, §Intervals, §Bias and §Compositionality.

* **Intervals.** A benchmark score is a mean over items, and the items are a sample. The percentile
  bootstrap resamples the items with replacement, recomputes the score each time and reports the
  middle ``confidence`` of those scores (:func:`bootstrap_ci`). Two models scored on the *same*
  items are compared by resampling the items once for both (:func:`paired_bootstrap_diff`): the
  item-to-item variation that both models share cancels, so the interval of the difference is
  narrower than two separate intervals suggest.
* **Bias.** WEAT (Caliskan et al., 2017) and its sentence version SEAT (May et al., 2019) ask
  whether two sets of target embeddings ``X``, ``Y`` (say, words for flowers and insects) sit
  differently between two sets of attribute embeddings ``A``, ``B`` (pleasant and unpleasant). Each
  target ``w`` gets the association ``s(w, A, B) = mean_a cos(w, a) - mean_b cos(w, b)``; the
  effect size is a standardised difference of means (:func:`weat_effect_size`) and the p-value
  comes from a permutation test that re-partitions ``X ∪ Y`` (:func:`weat_test`).
* **Compositionality.** A Winoground example (Thrush et al., 2022) is two images and two captions
  with the same words in a different order. With ``s[i, j]`` the score of image ``i`` and caption
  ``j`` (the correct pairs are ``(0, 0)`` and ``(1, 1)``), the *text score* asks that each image
  prefer its own caption, the *image score* that each caption prefer its own image, and the *group
  score* both (:func:`winoground_scores`). Ties count as failures.

All inputs are converted to float64 NumPy arrays on the CPU; the randomness comes from
``numpy.random.default_rng(seed)``, so a result is a function of its arguments.
"""

from __future__ import annotations

import itertools
import math
import numbers
from typing import Any, Callable

import numpy as np
import torch

from vlm_primer.validate import as_tensor, check_int

__all__ = [
    "bootstrap_ci",
    "paired_bootstrap_diff",
    "weat_association",
    "weat_effect_size",
    "weat_test",
    "winoground_outcomes",
    "winoground_scores",
]

# Resampled index matrices are built a block of rows at a time, at most this many entries each.
_BLOCK_ENTRIES = 1 << 22


# --------------------------------------------------------------------------- argument checks


def _as_float_array(x: Any, name: str, expected: str) -> np.ndarray:
    """``x`` (tensor, array or list) as a float64 array, refusing non-numbers and non-finite values."""
    t = as_tensor(x, name, expected)
    if t.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    arr = t.detach().cpu().to(torch.float64).numpy()
    if not np.isfinite(arr).all():
        bad = arr[~np.isfinite(arr)][:4].tolist()
        raise ValueError(f"{name} must be finite, got {bad}")
    return arr


def _scores(x: Any, name: str) -> np.ndarray:
    """A non-empty 1-D array of per-item scores."""
    arr = _as_float_array(x, name, "a 1-D array of per-item scores")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score per item), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: the bootstrap needs at least one item")
    return arr


def _embeddings(x: Any, name: str) -> np.ndarray:
    """A non-empty ``(N, D)`` matrix of embeddings, no row of zeros (its cosine is undefined)."""
    arr = _as_float_array(x, name, "an (N, D) matrix of embeddings")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be an (N, D) matrix (one embedding per row), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    zero = np.flatnonzero(np.linalg.norm(arr, axis=1) == 0)
    if zero.size:
        raise ValueError(f"{name} has all-zero rows {zero[:10].tolist()}: their cosine similarity is undefined")
    return arr


def _check_seed(seed: Any) -> int | None:
    return None if seed is None else check_int(seed, "seed", 0)


def _check_confidence(confidence: Any) -> float:
    if not isinstance(confidence, numbers.Real) or isinstance(confidence, bool):
        raise TypeError(f"confidence must be a float in (0, 1), got {confidence!r} ({type(confidence).__name__})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1) (0.95 for a 95% interval), got {confidence!r}")
    return float(confidence)


def _check_statistic(statistic: Any) -> Callable[..., Any]:
    if not callable(statistic):
        raise TypeError(f"statistic must be callable (np.mean, np.median, ...), got {type(statistic).__name__}")
    return statistic


# --------------------------------------------------------------------------- bootstrap


def _apply(statistic: Callable[..., Any], samples: np.ndarray) -> np.ndarray:
    """``statistic`` of each row of ``samples`` (any leading shape), reduced over the last axis."""
    out = np.asarray(statistic(samples, axis=-1), dtype=np.float64)
    if out.shape != samples.shape[:-1]:
        raise ValueError(
            f"statistic must reduce over the keyword argument axis (like np.mean): on an array of shape "
            f"{samples.shape} with axis=-1 it returned shape {out.shape}, expected {samples.shape[:-1]}"
        )
    return out


def _bootstrap_distribution(
    estimate: Callable[[np.ndarray], np.ndarray], n_items: int, n_resamples: int, seed: int | None
) -> np.ndarray:
    """``estimate(idx)`` for ``n_resamples`` rows ``idx`` of ``n_items`` item indices drawn with replacement."""
    rng = np.random.default_rng(seed)
    rows = max(1, _BLOCK_ENTRIES // n_items)
    blocks = []
    for start in range(0, n_resamples, rows):
        idx = rng.integers(0, n_items, size=(min(rows, n_resamples - start), n_items))
        blocks.append(estimate(idx))
    return np.concatenate(blocks)


def _percentile_interval(distribution: np.ndarray, confidence: float) -> tuple[float, float]:
    """The middle ``confidence`` of the bootstrap distribution (linear interpolation, as NumPy/SciPy)."""
    alpha = (1 - confidence) / 2
    low, high = np.quantile(distribution, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_ci(
    values: Any,
    statistic: Callable[..., Any] = np.mean,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int | None = 0,
) -> tuple[float, float, float]:
    """``(estimate, low, high)``: a statistic of per-item scores and its percentile bootstrap interval.

    ``values``: ``(N,)`` per-item scores (a tensor, array or list; 0/1 correctness for an accuracy).
    ``statistic`` reduces over a keyword argument ``axis``, like ``np.mean`` (the default) or
    ``np.median``; it is applied to all resamples at once. The ``n_resamples`` resamples draw
    ``N`` items with replacement from ``numpy.random.default_rng(seed)``; ``low`` and ``high`` are the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of their statistics, which is
    ``scipy.stats.bootstrap(..., method="percentile")`` up to Monte Carlo error.

    Explained in notebook 07, §Intervals.
    """
    x = _scores(values, "values")
    statistic = _check_statistic(statistic)
    n_resamples = check_int(n_resamples, "n_resamples", 1)
    confidence = _check_confidence(confidence)
    seed = _check_seed(seed)
    estimate = float(_apply(statistic, x))
    distribution = _bootstrap_distribution(lambda idx: _apply(statistic, x[idx]), len(x), n_resamples, seed)
    return (estimate, *_percentile_interval(distribution, confidence))


def paired_bootstrap_diff(
    a: Any,
    b: Any,
    statistic: Callable[..., Any] = np.mean,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int | None = 0,
) -> tuple[float, float, float]:
    """``(diff, low, high)``: ``statistic(a) - statistic(b)`` for two models scored on the same items.

    ``a[i]`` and ``b[i]`` are the two models' scores on item ``i``. Each resample draws one set of
    items and uses it for both models, so the interval reflects only how the models *differ* item by
    item. An interval that excludes 0 says the difference is larger than the item sampling explains.
    Arguments as for :func:`bootstrap_ci`.

    Explained in notebook 07, §Intervals.
    """
    a = _scores(a, "a")
    b = _scores(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a {a.shape} and b {b.shape} must score the same items (paired), so have the same length")
    statistic = _check_statistic(statistic)
    n_resamples = check_int(n_resamples, "n_resamples", 1)
    confidence = _check_confidence(confidence)
    seed = _check_seed(seed)
    diff = float(_apply(statistic, a) - _apply(statistic, b))
    distribution = _bootstrap_distribution(
        lambda idx: _apply(statistic, a[idx]) - _apply(statistic, b[idx]), len(a), n_resamples, seed
    )
    return (diff, *_percentile_interval(distribution, confidence))


# --------------------------------------------------------------------------- WEAT / SEAT


def _unit_rows(m: np.ndarray) -> np.ndarray:
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def _association(W: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    w = _unit_rows(W)
    return (w @ _unit_rows(A).T).mean(axis=1) - (w @ _unit_rows(B).T).mean(axis=1)


def _weat_inputs(**matrices: Any) -> dict[str, np.ndarray]:
    """The named embedding matrices, checked, with one embedding size D between them."""
    arrays = {name: _embeddings(m, name) for name, m in matrices.items()}
    dims = {name: arr.shape[1] for name, arr in arrays.items()}
    if len(set(dims.values())) > 1:
        desc = ", ".join(f"{name}: D={d}" for name, d in dims.items())
        raise ValueError(f"all embeddings need the same size D, got {desc}")
    return arrays


def weat_association(W: Any, A: Any, B: Any) -> np.ndarray:
    """``(N,)`` WEAT association ``s(w, A, B) = mean_a cos(w, a) - mean_b cos(w, b)`` of each row ``w`` of ``W``.

    ``W``, ``A``, ``B``: ``(N, D)``, ``(N_A, D)``, ``(N_B, D)`` embeddings, one per row. Positive
    means ``w`` is closer to the attributes ``A`` than to ``B``.

    Explained in notebook 07, §Bias.
    """
    m = _weat_inputs(W=W, A=A, B=B)
    return _association(m["W"], m["A"], m["B"])


def _effect_size(sx: np.ndarray, sy: np.ndarray) -> float:
    spread = np.std(np.concatenate([sx, sy]), ddof=1)
    if spread == 0:
        raise ValueError(
            "every target of X and Y has the same association s(w, A, B), so the effect size "
            "(a difference divided by their standard deviation) is undefined"
        )
    return float((sx.mean() - sy.mean()) / spread)


def weat_effect_size(X: Any, Y: Any, A: Any, B: Any) -> float:
    """WEAT/SEAT effect size ``(mean_x s(x) - mean_y s(y)) / std_{w in X ∪ Y} s(w)``.

    ``X``, ``Y``: target embeddings (rows), ``A``, ``B``: attribute embeddings, all of one size D;
    ``s`` is :func:`weat_association` and the standard deviation is the sample one (``ddof=1``), as in
    Caliskan et al. (2017). The value lies in about ``[-2, 2]``; positive means ``X`` leans to ``A``
    and ``Y`` to ``B``. Targets that are all equally associated make it undefined
    (a ``ValueError``).

    Explained in notebook 07, §Bias.
    """
    m = _weat_inputs(X=X, Y=Y, A=A, B=B)
    return _effect_size(_association(m["X"], m["A"], m["B"]), _association(m["Y"], m["A"], m["B"]))


def _permutation_p_value(sx: np.ndarray, sy: np.ndarray, n_resamples: int, seed: int | None) -> float:
    """One-sided p-value of ``sum(sx) - sum(sy)`` over re-partitions of the pooled values.

    The counting follows ``scipy.stats.permutation_test(..., permutation_type="independent",
    alternative="greater")``: exact when ``n_resamples`` covers every partition, else random
    partitions with one added to the count and to the number of partitions; a partition counts when
    its statistic reaches the observed one up to a relative tolerance of 100 float64 epsilons. Ties, the observed
    partition included, count (scipy's ``>=``); Caliskan et al. write a strict ``>``, which gives a p-value smaller
    by the ties' share (at least ``1 / C(n, k)`` when exact).
    """
    pooled = np.concatenate([sx, sy])
    n, k = len(pooled), len(sx)
    observed = sx.sum() - sy.sum()
    n_partitions = math.comb(n, k)
    exact = n_resamples >= n_partitions
    if exact:  # every way to choose which k values play X, each once
        orders = []
        for chosen in itertools.combinations(range(n), k):
            rest = sorted(set(range(n)) - set(chosen))
            orders.append(list(chosen) + rest)
        orders = np.array(orders, dtype=np.int64).reshape(n_partitions, n)
    else:  # random shuffles; the first k values play X
        rng = np.random.default_rng(seed)
        orders = np.stack([rng.permutation(n) for _ in range(n_resamples)])
    shuffled = pooled[orders]
    null = shuffled[:, :k].sum(axis=1) - shuffled[:, k:].sum(axis=1)
    tolerance = abs(observed) * np.finfo(np.float64).eps * 100  # equal up to rounding counts as equal
    at_least = int(np.count_nonzero(null >= observed - tolerance))
    if exact:
        return at_least / n_partitions
    return (at_least + 1) / (n_resamples + 1)


def weat_test(
    X: Any, Y: Any, A: Any, B: Any, n_resamples: int = 10000, seed: int | None = 0
) -> dict[str, float]:
    """WEAT/SEAT effect size and one-sided permutation p-value.

    Returns ``{"effect_size", "p_value", "statistic"}``. The test statistic is
    ``sum_x s(x) - sum_y s(y)`` (``s`` from :func:`weat_association`); the p-value is the share of
    re-partitions of ``X ∪ Y`` into sets of sizes ``|X|`` and ``|Y|`` (equal halves in WEAT) whose
    statistic is at least the observed one. When there are at most ``n_resamples`` partitions all are
    enumerated (an exact test); otherwise ``n_resamples`` random ones are drawn with
    ``numpy.random.default_rng(seed)`` and the p-value is ``(count + 1) / (n_resamples + 1)``. Both
    match ``scipy.stats.permutation_test(..., alternative="greater")`` (the random case exactly when
    scipy is given ``rng=seed``).

    Explained in notebook 07, §Bias.
    """
    n_resamples = check_int(n_resamples, "n_resamples", 1)
    seed = _check_seed(seed)
    m = _weat_inputs(X=X, Y=Y, A=A, B=B)
    sx = _association(m["X"], m["A"], m["B"])
    sy = _association(m["Y"], m["A"], m["B"])
    return {
        "effect_size": _effect_size(sx, sy),
        "p_value": _permutation_p_value(sx, sy, n_resamples, seed),
        "statistic": float(sx.sum() - sy.sum()),
    }


# --------------------------------------------------------------------------- Winoground


def winoground_outcomes(s: Any) -> dict[str, np.ndarray]:
    """Per-example Winoground successes: ``{"text", "image", "group"}``, each an ``(N,)`` bool array.

    ``s``: ``(N, 2, 2)`` scores, ``s[n, i, j]`` = score of image ``i`` with caption ``j`` in example
    ``n``; caption ``j`` describes image ``j``. Text: ``s[0,0] > s[0,1]`` and ``s[1,1] > s[1,0]``
    (each image prefers its caption). Image: ``s[0,0] > s[1,0]`` and ``s[1,1] > s[0,1]`` (each caption
    prefers its image). Group: both. Ties are failures. Feed an outcome to :func:`bootstrap_ci` for
    an interval.

    Explained in notebook 07, §Compositionality.
    """
    s = _as_float_array(s, "s", "an (N, 2, 2) array of image-caption scores")
    if s.ndim != 3 or s.shape[1:] != (2, 2):
        raise ValueError(f"s must have shape (N, 2, 2) (example, image, caption), got {s.shape}")
    if s.shape[0] == 0:
        raise ValueError("s is empty: no Winoground example to score")
    text = (s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])
    image = (s[:, 0, 0] > s[:, 1, 0]) & (s[:, 1, 1] > s[:, 0, 1])
    return {"text": text, "image": image, "group": text & image}


def winoground_scores(s: Any) -> dict[str, float]:
    """Winoground text, image and group scores: ``{"text", "image", "group"}`` as fractions in [0, 1].

    The share of examples that pass each test of :func:`winoground_outcomes`. A model that scores at
    random gets 1/4, 1/4 and 1/6 in expectation.

    Explained in notebook 07, §Compositionality.
    """
    return {name: float(ok.mean()) for name, ok in winoground_outcomes(s).items()}
