"""Denoising diffusion: the noise schedule, the forward process and two samplers (DDPM, DDIM). No network here.

Explained in notebook 04b, §Diffusion. A *noise schedule* ``beta_1 .. beta_T`` (``T = num_train_timesteps``,
indexed ``t = 0 .. T-1`` in code, as in ``diffusers``) defines the **forward process**, which adds a little Gaussian
noise at every step. Its ``t``-step marginal has a closed form, with ``alpha_t = 1 - beta_t`` and
``alphabar_t = prod_{s<=t} alpha_s`` (``alphas_cumprod``)::

    q(x_t | x_0) = N( sqrt(alphabar_t) x_0, (1 - alphabar_t) I )   i.e.   x_t = sqrt(alphabar_t) x_0 + sqrt(1 - alphabar_t) eps

so training never runs the chain: draw ``t`` and ``eps ~ N(0, I)``, make ``x_t`` in one go (:func:`add_noise`) and
teach a network to predict ``eps`` from ``(x_t, t)`` with a mean squared error (**eps-prediction**, Ho et al. 2020,
"Denoising Diffusion Probabilistic Models"). From a predicted ``eps`` the clean image is estimated as
``x0_hat = (x_t - sqrt(1 - alphabar_t) eps) / sqrt(alphabar_t)`` (clipped to ``[-1, 1]`` by default).

Sampling starts from pure noise ``x_T ~ N(0, I)`` and walks back:

* **DDPM** (:func:`ddpm_step`), the *ancestral* step: ``x_{t-1}`` is drawn from the Gaussian posterior
  ``q(x_{t-1} | x_t, x0_hat)``, mean ``c0 x0_hat + ct x_t`` (Ho et al. eq. 7), variance
  ``(1 - alphabar_prev) / (1 - alphabar_t) beta_t`` ("fixed_small"); fresh noise at every step but the last.
* **DDIM** (:func:`ddim_step`, Song et al. 2021, "Denoising Diffusion Implicit Models"): the same marginals with a
  non-Markovian process, ``x_prev = sqrt(alphabar_prev) x0_hat + sqrt(1 - alphabar_prev - sigma^2) eps + sigma z``,
  ``sigma = eta sqrt(posterior variance)``. With ``eta = 0`` it is **deterministic** (an ODE-like map from noise to
  image) and takes big strides: 25-50 steps instead of 1000.

Both walk a subsequence of the ``T`` training steps (:func:`inference_timesteps`, "leading", "trailing" or
"linspace" spacing). Every function matches ``diffusers`` (``DDPMScheduler``/``DDIMScheduler`` with
``prediction_type="epsilon"``, ``steps_offset=0``, ``set_alpha_to_one=True``) to float precision: the schedule is
float32 as there, and the per-step coefficients are computed with the same float32 scalars
(``tests/test_generative_diffusion.py``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from vlm_primer.validate import check_choice, check_finite, check_int, value_checks_enabled

__all__ = ["BETA_SCHEDULES", "NoiseSchedule", "SPACINGS", "Step", "add_noise", "ddim_step", "ddpm_step",
           "inference_timesteps"]

BETA_SCHEDULES = ("linear", "scaled_linear", "cosine", "squaredcos_cap_v2")  # the last two are one schedule
SPACINGS = ("leading", "trailing", "linspace")


def _cosine_betas(num_steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule (2021, "Improved DDPM"): ``alphabar(s) = cos((s + 0.008) / 1.008 pi/2)^2``
    on ``s in [0, 1]``, ``beta_t = 1 - alphabar((t+1)/T) / alphabar(t/T)`` capped at ``max_beta``. Python floats,
    then float32, as ``diffusers``' ``betas_for_alpha_bar``."""
    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor([min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta)
                         for i in range(num_steps)], dtype=torch.float32)


class NoiseSchedule(nn.Module):
    """``betas``, ``alphas = 1 - betas`` and ``alphas_cumprod`` (``alphabar_t``), float32 tensors of shape ``(T,)``.

    Build it with :meth:`make`. It is a module holding (non-persistent) buffers, so a model that owns one moves it
    with ``.to(device)``; it stays float32 when the model is cast (``model.half()``), as ``diffusers`` keeps its
    schedule. Explained in notebook 04b, §Diffusion.
    """

    def __init__(self, betas: torch.Tensor) -> None:
        super().__init__()
        if not isinstance(betas, torch.Tensor) or betas.ndim != 1 or len(betas) == 0:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got {betas!r}")
        betas = betas.float()
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError(f"betas must lie in (0, 1), got min {float(betas.min())}, max {float(betas.max())}")
        alphas = 1.0 - betas
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("alphas", alphas, persistent=False)
        self.register_buffer("alphas_cumprod", torch.cumprod(alphas, dim=0), persistent=False)

    @classmethod
    def make(cls, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
             kind: str = "linear") -> "NoiseSchedule":
        """``linear``: ``beta`` evenly spaced from ``beta_start`` to ``beta_end`` (DDPM); ``scaled_linear``: evenly
        spaced in ``sqrt(beta)`` (Stable Diffusion); ``cosine`` (= ``diffusers``' ``squaredcos_cap_v2``): the
        improved-DDPM cosine schedule, which ignores ``beta_start``/``beta_end``. As in ``diffusers``, ``linear`` is
        not rescaled by ``1000 / num_train_timesteps`` (improved-diffusion's ``get_named_beta_schedule`` is), so for
        ``T != 1000`` its final alphabar differs from theirs."""
        check_int(num_train_timesteps, "num_train_timesteps", 2)
        check_choice(kind, BETA_SCHEDULES, "kind")
        for name, v in (("beta_start", beta_start), ("beta_end", beta_end)):
            check_finite(v, name)
            if not 0 < v < 1:
                raise ValueError(f"{name} must lie in (0, 1), got {v!r}")
        if beta_end < beta_start:
            raise ValueError(f"beta_end={beta_end} must be >= beta_start={beta_start}")
        n = int(num_train_timesteps)
        if kind == "linear":
            betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
        elif kind == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float32) ** 2
        else:
            betas = _cosine_betas(n)
        return cls(betas)

    @property
    def num_train_timesteps(self) -> int:
        return len(self.betas)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for name, b in self._buffers.items():  # follow the device, never the dtype
            if b is not None and b.dtype != torch.float32:
                self._buffers[name] = b.float()
        return self

    def extra_repr(self) -> str:
        return f"num_train_timesteps={self.num_train_timesteps}"


@dataclass
class Step:
    prev_sample: torch.Tensor             # x_{t_prev}
    pred_original_sample: torch.Tensor    # x0_hat (clipped when clip_sample)


# --------------------------------------------------------------------------- checks


def _check_schedule(schedule: NoiseSchedule) -> None:
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule (NoiseSchedule.make(...)), got {type(schedule).__name__}")


def _check_t(t, schedule: NoiseSchedule, name: str = "t", allow_negative: bool = False) -> int:
    """An int timestep (or a 0-d integer tensor) in ``[0, T)``; ``allow_negative``: any ``t < 0`` means "before 0"."""
    if isinstance(t, torch.Tensor) and t.ndim == 0 and not (t.is_floating_point() or t.dtype == torch.bool):
        t = int(t)
    if not isinstance(t, numbers.Integral) or isinstance(t, bool):
        raise TypeError(f"{name} must be an int timestep, got {t!r} ({type(t).__name__})")
    T = schedule.num_train_timesteps
    if t >= T or (t < 0 and not allow_negative):
        raise ValueError(f"{name}={t} is outside [0, {T}) (num_train_timesteps={T})")
    return int(t)


def _check_sample(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim == 0 or x.numel() == 0:
        raise ValueError(f"{name} must be a non-empty batch (B, ...), got shape {tuple(x.shape)}")
    check_finite(x, name)
    return x


def _check_like(y: torch.Tensor | None, x: torch.Tensor, name: str, like: str) -> None:
    if y is None:
        return
    _check_sample(y, name)
    if y.shape != x.shape:
        raise ValueError(f"{name} must have the shape of {like} {tuple(x.shape)}, got {tuple(y.shape)}")


def _clip_range(clip_sample) -> float | None:
    """``True`` -> 1.0, ``False``/``None`` -> no clipping, a positive float -> that range."""
    if clip_sample is None or clip_sample is False:
        return None
    if clip_sample is True:
        return 1.0
    if not isinstance(clip_sample, numbers.Real) or isinstance(clip_sample, bool):
        raise TypeError(f"clip_sample must be True, False or a positive float range, got {clip_sample!r}")
    if not (math.isfinite(clip_sample) and clip_sample > 0):
        raise ValueError(f"clip_sample must be a positive finite range, got {clip_sample!r}")
    return float(clip_sample)


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn as ``diffusers``' ``randn_tensor``: on the generator's device
    (a CPU generator for a GPU tensor draws on the CPU), then moved to ``x``'s."""
    device = x.device if generator is None else generator.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


# --------------------------------------------------------------------------- forward process


def add_noise(schedule: NoiseSchedule, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The forward process in one go: ``x_t = sqrt(alphabar_t) x0 + sqrt(1 - alphabar_t) noise``.

    ``x0`` and ``noise`` ``(B, ...)``, ``t`` a ``(B,)`` integer tensor in ``[0, T)`` (one timestep per example).
    Explained in notebook 04b, §Diffusion."""
    _check_schedule(schedule)
    _check_sample(x0, "x0")
    _check_like(noise, x0, "noise", "x0")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be a (B,) integer tensor of timesteps, got {type(t).__name__}")
    if t.is_floating_point() or t.dtype == torch.bool or t.ndim != 1 or len(t) != len(x0):
        raise ValueError(f"t must be a (B,) = ({len(x0)},) integer tensor of timesteps, got dtype {t.dtype} "
                         f"shape {tuple(t.shape)}")
    T = schedule.num_train_timesteps
    if value_checks_enabled() and bool(((t < 0) | (t >= T)).any()):  # reads the values: a sync on a GPU
        raise ValueError(f"t has timesteps outside [0, {T}): min {int(t.min())}, max {int(t.max())}")
    ac = schedule.alphas_cumprod.to(device=x0.device, dtype=x0.dtype)[t.to(x0.device)]
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return (ac**0.5).view(shape) * x0 + ((1 - ac) ** 0.5).view(shape) * noise


# --------------------------------------------------------------------------- samplers


def inference_timesteps(num_train_timesteps: int, num_inference_steps: int, spacing: str = "leading") -> torch.Tensor:
    """The decreasing timesteps a sampler visits, ``(num_inference_steps,)`` int64, as ``diffusers``'
    ``set_timesteps`` with ``steps_offset=0``:

    * ``leading``: ``0, r, 2r, ...`` with ``r = T // n`` (reversed): ``T=1000, n=10`` -> ``900, 800, ..., 0``;
    * ``trailing``: ``round(T, T - T/n, ...) - 1``: ``999, 899, ..., 99`` (starts at the noisiest step);
    * ``linspace``: ``round(linspace(0, T - 1, n))`` reversed: ``999, 888, ..., 0``.
    """
    T = check_int(num_train_timesteps, "num_train_timesteps")
    n = check_int(num_inference_steps, "num_inference_steps", 1, T, hint="at most num_train_timesteps")
    check_choice(spacing, SPACINGS, "spacing")
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, n).round()[::-1].copy().astype(np.int64)
    elif spacing == "leading":
        ts = (np.arange(0, n) * (T // n)).round()[::-1].copy().astype(np.int64)
    else:
        ts = np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1
    return torch.from_numpy(ts)


def _previous(t: int, timesteps: Sequence[int] | torch.Tensor | None) -> int:
    """The timestep after ``t`` in ``timesteps`` (-1 after the last), or ``t - 1`` without them (``diffusers``'
    ``DDPMScheduler.previous_timestep``)."""
    if timesteps is None:
        return t - 1
    ts = timesteps.tolist() if isinstance(timesteps, torch.Tensor) else list(timesteps)
    if t not in ts:
        raise ValueError(f"t={t} is not one of the timesteps {ts[:8]}{' ...' if len(ts) > 8 else ''}")
    i = ts.index(t)
    return int(ts[i + 1]) if i + 1 < len(ts) else -1


def _alphas(schedule: NoiseSchedule, t: int, prev_t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alphabar_t, alphabar_prev)`` as 0-d float32 tensors; ``alphabar_prev = 1`` before step 0."""
    ac = schedule.alphas_cumprod
    return ac[t], ac[prev_t] if prev_t >= 0 else torch.ones((), dtype=ac.dtype, device=ac.device)


def _pred_x0(eps: torch.Tensor, x_t: torch.Tensor, alpha_prod_t: torch.Tensor, clip: float | None) -> torch.Tensor:
    """``x0_hat = (x_t - sqrt(1 - alphabar_t) eps) / sqrt(alphabar_t)``, clipped to ``[-clip, clip]``."""
    x0 = (x_t - (1 - alpha_prod_t) ** 0.5 * eps) / alpha_prod_t**0.5
    return x0 if clip is None else x0.clamp(-clip, clip)


def ddpm_step(
    schedule: NoiseSchedule,
    eps: torch.Tensor,
    t: int,
    x_t: torch.Tensor,
    noise: torch.Tensor | None = None,
    clip_sample: bool | float = True,
    timesteps: Sequence[int] | torch.Tensor | None = None,
    prev_t: int | None = None,
    generator: torch.Generator | None = None,
) -> Step:
    """One DDPM ancestral step ``x_t -> x_{prev_t}`` from the predicted noise ``eps`` (Ho et al. 2020, eq. 7).

    ``prev_t`` is ``t - 1`` when sampling all ``T`` steps; with fewer, pass the ``timesteps`` being walked
    (:func:`inference_timesteps`) and the next one is used (``-1`` after the last: ``alphabar_prev = 1``), or pass
    ``prev_t`` itself. The posterior mean uses ``x0_hat`` clipped to ``[-clip_sample, clip_sample]`` (``True`` = 1,
    ``False`` = no clipping); for ``t > 0`` the posterior standard deviation (variance clamped at ``1e-20``) times
    ``noise`` is added (``noise`` shaped like ``x_t``; drawn from ``generator`` when ``None``, as ``diffusers``
    draws it). Equals ``diffusers``' ``DDPMScheduler.step`` (epsilon prediction, ``fixed_small`` variance).
    Explained in notebook 04b, §Diffusion."""
    _check_schedule(schedule)
    t = _check_t(t, schedule)
    _check_sample(x_t, "x_t")
    _check_like(eps, x_t, "eps", "x_t")
    _check_like(noise, x_t, "noise", "x_t")
    clip = _clip_range(clip_sample)
    if prev_t is not None and timesteps is not None:
        raise ValueError("pass timesteps or prev_t, not both")
    prev_t = _previous(t, timesteps) if prev_t is None else _check_t(prev_t, schedule, "prev_t", allow_negative=True)
    if prev_t >= t:
        raise ValueError(f"prev_t={prev_t} must come before t={t}")

    alpha_prod_t, alpha_prod_t_prev = _alphas(schedule, t, prev_t)
    beta_prod_t, beta_prod_t_prev = 1 - alpha_prod_t, 1 - alpha_prod_t_prev
    current_alpha_t = alpha_prod_t / alpha_prod_t_prev
    current_beta_t = 1 - current_alpha_t

    x0 = _pred_x0(eps, x_t, alpha_prod_t, clip)
    # posterior mean: c0 * x0_hat + ct * x_t
    c0 = alpha_prod_t_prev**0.5 * current_beta_t / beta_prod_t
    ct = current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t
    prev = c0 * x0 + ct * x_t
    if t > 0:
        variance = torch.clamp(beta_prod_t_prev / beta_prod_t * current_beta_t, min=1e-20)
        noise = _randn_like(eps, generator) if noise is None else noise
        prev = prev + variance**0.5 * noise
    return Step(prev_sample=prev, pred_original_sample=x0)


def ddim_step(
    schedule: NoiseSchedule,
    eps: torch.Tensor,
    t: int,
    prev_t: int,
    x_t: torch.Tensor,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    clip_sample: bool | float = True,
    generator: torch.Generator | None = None,
) -> Step:
    """One DDIM step ``x_t -> x_{prev_t}`` (Song et al. 2021, eq. 12)::

        x_prev = sqrt(alphabar_prev) x0_hat + sqrt(1 - alphabar_prev - sigma^2) eps + sigma noise,
        sigma  = eta * sqrt((1 - alphabar_prev) / (1 - alphabar_t) * (1 - alphabar_t / alphabar_prev))

    ``eta = 0`` is deterministic; ``eta = 1`` has DDPM's variance (``eta`` in ``[0, 1]``). ``prev_t < 0`` means the last step
    (``alphabar_prev = 1``). ``noise`` is used only when ``eta > 0`` (drawn from ``generator`` when ``None``).
    Equals ``diffusers``' ``DDIMScheduler.step`` (``set_alpha_to_one=True``, the un-clipped ``eps`` in the direction
    term). Explained in notebook 04b, §Diffusion."""
    _check_schedule(schedule)
    t = _check_t(t, schedule)
    prev_t = _check_t(prev_t, schedule, "prev_t", allow_negative=True)
    if prev_t >= t:
        raise ValueError(f"prev_t={prev_t} must come before t={t}")
    _check_sample(x_t, "x_t")
    _check_like(eps, x_t, "eps", "x_t")
    _check_like(noise, x_t, "noise", "x_t")
    check_finite(eta, "eta")
    if not 0 <= eta <= 1:  # beyond 1 the direction term's square root can go negative
        raise ValueError(f"eta must lie in [0, 1], got {eta!r}")
    clip = _clip_range(clip_sample)

    alpha_prod_t, alpha_prod_t_prev = _alphas(schedule, t, prev_t)
    beta_prod_t, beta_prod_t_prev = 1 - alpha_prod_t, 1 - alpha_prod_t_prev
    x0 = _pred_x0(eps, x_t, alpha_prod_t, clip)
    variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
    std_dev_t = eta * variance**0.5
    direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** 0.5 * eps
    prev = alpha_prod_t_prev**0.5 * x0 + direction
    if eta > 0:
        noise = _randn_like(eps, generator) if noise is None else noise
        prev = prev + std_dev_t * noise
    return Step(prev_sample=prev, pred_original_sample=x0)
