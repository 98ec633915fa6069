"""The linear probe: how much of a property a frozen representation holds in a linearly readable form.

Explained in notebook 03, §Linear probe. Features are standardised with the training set's statistics, then a
multinomial logistic regression (L2 penalty ``weight_decay``) is fitted with L-BFGS on the full batch; the score is
the test accuracy. The same fit as scikit-learn's ``LogisticRegression`` (checked in the tests), in torch. One fixed
penalty: CLIP's linear-probe protocol sweeps it on a validation split, which this does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["LinearProbe", "linear_probe"]


@dataclass
class LinearProbe:
    accuracy: float          # on the test features
    train_accuracy: float
    weight: torch.Tensor     # (classes, dim) on standardised features
    bias: torch.Tensor       # (classes,)
    mean: torch.Tensor       # the training features' mean and std used to standardise
    std: torch.Tensor

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        return (((features - self.mean) / self.std) @ self.weight.T + self.bias).argmax(-1)


def _check(x: torch.Tensor, y: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.dtype.is_floating_point:
        raise ValueError(f"{name} features must be a float tensor (N, dim), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    y = torch.as_tensor(y)
    if y.shape != (len(x),) or y.dtype.is_floating_point:
        raise ValueError(f"{name} labels must be integers of shape ({len(x)},), got {y.dtype} {tuple(y.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} features hold NaN or inf")
    return x.double(), y.long()


def linear_probe(train_x: torch.Tensor, train_y, test_x: torch.Tensor, test_y, *, weight_decay: float = 1e-3,
                 max_iter: int = 200) -> LinearProbe:
    """Fit a linear classifier on frozen ``train_x`` ``(N, dim)`` with integer labels ``train_y`` and report its
    accuracy on ``test_x`` / ``test_y``. ``weight_decay`` is the L2 penalty on the weights (per example, i.e.
    scikit-learn's ``C = 1 / (N * weight_decay)``)."""
    train_x, train_y = _check(train_x, train_y, "train")
    test_x, test_y = _check(test_x, test_y, "test")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train and test features differ in width: {train_x.shape[1]} vs {test_x.shape[1]}")
    classes = int(max(train_y.max(), test_y.max())) + 1
    if len(train_y.unique()) < 2:
        raise ValueError("the training labels hold a single class: nothing to probe")
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-8)
    xs = (train_x - mean) / std
    w = torch.zeros(classes, xs.shape[1], dtype=torch.double, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.double, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xs @ w.T + b, train_y) + 0.5 * weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    probe = LinearProbe(0.0, 0.0, w.detach(), b.detach(), mean, std)
    probe.accuracy = (probe.predict(test_x) == test_y).double().mean().item()
    probe.train_accuracy = (probe.predict(train_x) == train_y).double().mean().item()
    return probe
