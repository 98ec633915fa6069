"""The linear probe equals scikit-learn's LogisticRegression (same penalty) and says what it cannot do."""

from __future__ import annotations

import pytest
import torch

from vlm_primer.evaluation import linear_probe


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=g) * torch.linspace(0.5, 3, 12)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.7 * torch.randn(n, generator=g) > 0).long() + (x[:, 2] > 1.5).long()
    return x, y


def test_matches_scikit_learn_logistic_regression():
    sklearn = pytest.importorskip("sklearn.linear_model")
    (x, y), (xt, yt) = _data(300, 0), _data(200, 1)
    probe = linear_probe(x, y, xt, yt, weight_decay=1e-2)
    mean, std = x.double().mean(0), x.double().std(0)
    ref = sklearn.LogisticRegression(C=1 / (300 * 1e-2), max_iter=10_000, tol=1e-12).fit(
        ((x - mean) / std).numpy(), y.numpy())
    torch.testing.assert_close(probe.weight, torch.tensor(ref.coef_), atol=1e-3, rtol=1e-3)
    assert probe.accuracy == pytest.approx(ref.score(((xt - mean) / std).numpy(), yt.numpy()), abs=1e-9)
    assert 0.6 < probe.accuracy < 1.0 and probe.train_accuracy >= probe.accuracy - 0.1


def test_bad_input_is_named():
    x, y = _data(20, 0)
    with pytest.raises(ValueError, match="single class"):
        linear_probe(x, torch.zeros(20, dtype=torch.long), x, y)
    with pytest.raises(ValueError, match="differ in width"):
        linear_probe(x, y, x[:, :5], y)
    with pytest.raises(ValueError, match="labels must be integers"):
        linear_probe(x, y.float(), x, y)
    with pytest.raises(ValueError, match="NaN"):
        linear_probe(x.masked_fill(x > 2, float("nan")), y, x, y)
