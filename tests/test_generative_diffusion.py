"""Diffusion (notebook 04b, §Diffusion): the schedule, forward process and samplers against ``diffusers``, and the
text-conditioned DiT with classifier-free guidance."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from vlm_primer.generative.diffusion import (NoiseSchedule, Step, add_noise, ddim_step, ddpm_step,
                                             inference_timesteps)
from vlm_primer.generative.dit import DiffusionOutput, DiT, DiTConfig, timestep_embedding

DIFFUSERS_KIND = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


def fake_eps(x: torch.Tensor, t: int) -> torch.Tensor:
    """A fixed stand-in for a network: depends on the sample and the timestep."""
    return 0.1 * x + math.sin(t)


# --------------------------------------------------------------------------- schedule and forward process


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "cosine"])
@pytest.mark.parametrize("T", [1000, 37])
def test_schedule_matches_diffusers(kind, T):
    ours = NoiseSchedule.make(T, 1e-4, 0.02, kind)
    ref = DDPMScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule=DIFFUSERS_KIND[kind])
    for name in ("betas", "alphas", "alphas_cumprod"):
        assert getattr(ours, name).dtype == torch.float32
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), atol=1e-7, rtol=0)
    assert ours.num_train_timesteps == T


def test_schedule_follows_the_device_not_the_dtype():
    m = DiT(DiTConfig.from_preset("tiny", dim=32, depth=1, heads=2))
    m.double()
    assert m.schedule.alphas_cumprod.dtype == torch.float32
    assert "alphas_cumprod" not in m.state_dict() and "schedule.alphas_cumprod" not in m.state_dict()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_add_noise_matches_diffusers(dtype):
    s, ref = NoiseSchedule.make(), DDPMScheduler()
    x0, noise = torch.randn(6, 3, 8, 8, dtype=dtype), torch.randn(6, 3, 8, 8, dtype=dtype)
    t = torch.tensor([0, 1, 10, 500, 998, 999])
    got = add_noise(s, x0, noise, t)
    assert got.dtype == dtype
    torch.testing.assert_close(got, ref.add_noise(x0, noise, t), atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- samplers


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 3, 7, 10, 50, 333, 999, 1000])
def test_inference_timesteps_match_diffusers(spacing, steps):
    for cls in (DDPMScheduler, DDIMScheduler):
        ref = cls(timestep_spacing=spacing)
        ref.set_timesteps(steps)
        got = inference_timesteps(1000, steps, spacing)
        assert got.dtype == torch.int64
        assert torch.equal(got, ref.timesteps), (cls.__name__, got[:5], ref.timesteps[:5])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("clip", [True, False, 0.5])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddpm_trajectory_matches_diffusers(dtype, clip, spacing):
    """Ten steps of ancestral sampling with the same variance-noise draws (one seeded generator each)."""
    kw = dict(clip_sample=bool(clip), clip_sample_range=clip if isinstance(clip, float) else 1.0)
    ref = DDPMScheduler(timestep_spacing=spacing, **kw)
    ref.set_timesteps(10)
    s = NoiseSchedule.make()
    timesteps = inference_timesteps(1000, 10, spacing)
    x = torch.randn(2, 3, 8, 8, dtype=dtype) * 2
    y = x.clone()
    g_ref, g_ours = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for t in ref.timesteps.tolist():
        r = ref.step(fake_eps(x, t), t, x, generator=g_ref)
        o = ddpm_step(s, fake_eps(y, t), t, y, clip_sample=clip, timesteps=timesteps, generator=g_ours)
        assert isinstance(o, Step) and o.prev_sample.dtype == dtype
        torch.testing.assert_close(o.pred_original_sample, r.pred_original_sample, atol=1e-6, rtol=0)
        torch.testing.assert_close(o.prev_sample, r.prev_sample, atol=1e-6, rtol=0)
        x, y = r.prev_sample, o.prev_sample


def test_ddpm_full_chain_and_explicit_noise():
    """All T steps of a short schedule (prev_t = t - 1), the variance noise passed in."""
    T = 20
    ref, s = DDPMScheduler(num_train_timesteps=T), NoiseSchedule.make(T)
    x = torch.randn(2, 3, 4, 4)
    y = x.clone()
    for t in range(T - 1, -1, -1):
        g = torch.Generator().manual_seed(t)
        r = ref.step(fake_eps(x, t), t, x, generator=g)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(t))
        o = ddpm_step(s, fake_eps(y, t), t, y, noise=noise)
        torch.testing.assert_close(o.prev_sample, r.prev_sample, atol=1e-6, rtol=0)
        x, y = r.prev_sample, o.prev_sample


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("clip", [True, False])
def test_ddim_trajectory_matches_diffusers(dtype, eta, clip):
    ref = DDIMScheduler(clip_sample=clip)
    ref.set_timesteps(10)
    s = NoiseSchedule.make()
    x = torch.randn(2, 3, 8, 8, dtype=dtype) * 2
    y = x.clone()
    for t in ref.timesteps.tolist():
        noise = torch.randn(x.shape, dtype=dtype)
        r = ref.step(fake_eps(x, t), t, x, eta=eta, variance_noise=noise if eta > 0 else None)
        o = ddim_step(s, fake_eps(y, t), t, t - 100, y, eta=eta, noise=noise, clip_sample=clip)
        torch.testing.assert_close(o.pred_original_sample, r.pred_original_sample, atol=1e-6, rtol=0)
        torch.testing.assert_close(o.prev_sample, r.prev_sample, atol=1e-6, rtol=0)
        x, y = r.prev_sample, o.prev_sample


def test_ddim_eta0_is_deterministic_and_ignores_noise():
    s, x = NoiseSchedule.make(), torch.randn(2, 3, 4, 4)
    a = ddim_step(s, fake_eps(x, 500), 500, 400, x, noise=torch.randn_like(x)).prev_sample
    b = ddim_step(s, fake_eps(x, 500), 500, 400, x).prev_sample
    assert torch.equal(a, b)


SCHED = NoiseSchedule.make()
X = torch.zeros(2, 3, 4, 4)


@pytest.mark.parametrize("call, error, match", [
    (lambda: ddpm_step(SCHED, X, 1000, X), ValueError, r"t=1000 is outside \[0, 1000\)"),
    (lambda: ddpm_step(SCHED, X, -1, X), ValueError, "t=-1"),
    (lambda: ddpm_step(SCHED, X, 2.0, X), TypeError, "t must be an int"),
    (lambda: ddpm_step(SCHED, X[:1], 5, X), ValueError, "eps must have the shape of x_t"),
    (lambda: ddpm_step(SCHED, X, 5, X, noise=X[..., :2]), ValueError, "noise must have the shape"),
    (lambda: ddpm_step(SCHED, X, 5, X, timesteps=[900, 800]), ValueError, "t=5 is not one of the timesteps"),
    (lambda: ddpm_step(SCHED, X, 5, X, clip_sample=-1.0), ValueError, "clip_sample"),
    (lambda: ddpm_step(SCHED, X, 5, X.long()), TypeError, "x_t must be a floating-point"),
    (lambda: ddpm_step(SCHED, X, 5, X + float("nan")), ValueError, "x_t must be finite"),
    (lambda: ddpm_step("sched", X, 5, X), TypeError, "schedule must be a NoiseSchedule"),
    (lambda: ddim_step(SCHED, X, 5, 10, X), ValueError, "prev_t=10 must come before t=5"),
    (lambda: ddim_step(SCHED, X, 5, 1, X, eta=-0.1), ValueError, "eta must lie in"),
    (lambda: ddim_step(SCHED, X, 1000, 1, X), ValueError, "t=1000"),
    (lambda: add_noise(SCHED, X, X, torch.tensor([0, 1000])), ValueError, r"t has timesteps outside"),
    (lambda: add_noise(SCHED, X, X, torch.tensor([0])), ValueError, r"t must be a \(B,\)"),
    (lambda: add_noise(SCHED, X, X[:1], torch.tensor([0, 1])), ValueError, "noise must have the shape of x0"),
    (lambda: inference_timesteps(1000, 1001), ValueError, r"num_inference_steps must be an int in \[1, 1000\]"),
    (lambda: inference_timesteps(1000, 0), ValueError, "num_inference_steps"),
    (lambda: inference_timesteps(1000, 10, "uniform"), ValueError, "spacing must be one of"),
    (lambda: NoiseSchedule.make(kind="sigmoid"), ValueError, "kind must be one of"),
    (lambda: NoiseSchedule.make(beta_end=1.5), ValueError, "beta_end"),
])
def test_diffusion_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------------- the DiT


def small_cfg(**kw) -> DiTConfig:
    """The tiny preset, narrower: what the tests can afford."""
    return DiTConfig.from_preset("tiny", **{"dim": 64, "depth": 2, **kw})


def captions(b: int, length: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 814, (b, length), generator=g)
    ids[:, 0] = 2
    n = torch.randint(3, length + 1, (b,), generator=g)
    mask = torch.arange(length)[None] < n[:, None]
    ids[torch.arange(b), n - 1] = 3
    return ids.masked_fill(~mask, 0), mask.long()


def randomised(model: DiT) -> DiT:
    """Perturb every parameter (the adaLN-Zero layers start at zero: a test on them would prove nothing)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_presets_and_shapes():
    for name in DiTConfig.presets():
        cfg = DiTConfig.from_preset(name)
        assert cfg.image_size % cfg.patch_size == 0 and cfg.dim % cfg.heads == 0
    tiny = DiTConfig.from_preset("tiny")
    assert (tiny.image_size, tiny.patch_size, tiny.num_patches, tiny.dim, tiny.depth, tiny.heads) == (32, 4, 64, 128, 4, 4)
    assert (tiny.text.vocab_size, tiny.text.context_length, tiny.text.dim, tiny.text.depth) == (814, 16, 64, 2)
    base = DiTConfig.from_preset("base")
    assert (base.dim, base.depth, base.heads, base.num_patches, base.in_channels) == (768, 12, 12, 256, 3)
    assert base.text.vocab_size == 814 and base.image_size == 128   # the recipe trains it on Shapes World pixels


def test_initial_eps_is_exactly_zero_and_loss_is_mse():
    torch.manual_seed(0)
    model = DiT(small_cfg())
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    ids, mask = captions(4)
    out = model(x, ids, mask)
    assert isinstance(out, DiffusionOutput)
    assert out.eps_pred.shape == x.shape and out.noise.shape == x.shape and out.t.shape == (4,)
    assert torch.equal(out.eps_pred, torch.zeros_like(x))  # adaLN-Zero: every block the identity, the head zero
    torch.testing.assert_close(out.loss, out.noise.pow(2).mean())
    assert model.eps(x, 10, *model.encode_text(ids, mask)).abs().max() == 0


def test_timestep_embedding_is_dits():
    t = torch.tensor([0, 5, 999])
    emb = timestep_embedding(t, 8)
    freqs = torch.exp(-math.log(10000) * torch.arange(4) / 4)
    torch.testing.assert_close(emb, torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], -1))


def test_padding_does_not_change_eps():
    model = randomised(DiT(small_cfg()))
    ids, mask = captions(3, 8)
    x, t = torch.randn(3, 3, 32, 32), torch.tensor([3, 400, 999])
    with torch.no_grad():
        a = model.eps(x, t, *model.encode_text(ids, mask))
        ids2 = torch.cat([ids, torch.zeros(3, 5, dtype=ids.dtype)], 1)
        mask2 = torch.cat([mask, torch.zeros(3, 5, dtype=mask.dtype)], 1)
        b = model.eps(x, t, *model.encode_text(ids2, mask2))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_guidance_scales():
    model = randomised(DiT(small_cfg()))
    ids, mask = captions(3)
    x, t = torch.randn(3, 3, 32, 32), torch.tensor([10, 500, 900])
    with torch.no_grad():
        ctx, cmask = model.encode_text(ids, mask)
        null, nmask = model.null_context(3, ids.shape[1])
        cond, uncond = model.eps(x, t, ctx, cmask), model.eps(x, t, null, nmask)
        assert not torch.allclose(cond, uncond, atol=1e-3)  # the caption matters
        torch.testing.assert_close(model.guided_eps(x, t, ctx, cmask, 1.0), cond, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.guided_eps(x, t, ctx, cmask, 0.0), uncond, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.guided_eps(x, t, ctx, cmask, 3.0), uncond + 3 * (cond - uncond),
                                   atol=1e-4, rtol=1e-4)
        # the empty caption at its own length (2 tokens) gives the same unconditional eps as padded
        torch.testing.assert_close(model.eps(x, t, *model.null_context(3)), uncond, atol=1e-5, rtol=1e-5)


def test_condition_dropout_uses_the_null_caption():
    model = randomised(DiT(small_cfg(cond_drop=1.0)))
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    ids, mask = captions(4)
    t, noise = torch.tensor([1, 200, 600, 999]), torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        x_t = add_noise(model.schedule, x, noise, t)
        dropped = model.train()(x, ids, mask, t=t, noise=noise).eps_pred
        torch.testing.assert_close(dropped, model.eval().eps(x_t, t, *model.null_context(4, ids.shape[1])),
                                   atol=1e-5, rtol=1e-5)
        kept = model.eval()(x, ids, mask, t=t, noise=noise).eps_pred  # eval mode keeps every caption
        torch.testing.assert_close(kept, model.eps(x_t, t, *model.encode_text(ids, mask)), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(dropped, kept, atol=1e-3)


def test_dit_overfits_a_batch():
    torch.manual_seed(0)
    model = DiT(small_cfg(cond_drop=0.0))
    x = torch.rand(8, 3, 32, 32).round() * 2 - 1  # binary images: much structure to learn
    ids, mask = captions(8)
    g = torch.Generator().manual_seed(1)
    t_eval, n_eval = torch.randint(0, 1000, (64,), generator=g), torch.randn(64, 3, 32, 32, generator=g)

    def held_loss() -> float:
        model.eval()
        with torch.no_grad():
            return model(x.repeat(8, 1, 1, 1), ids.repeat(8, 1), mask.repeat(8, 1), t=t_eval, noise=n_eval).loss.item()

    before = held_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(100):
        loss = model(x, ids, mask, generator=g).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_loss()
    assert before == pytest.approx(1.0, abs=0.05)  # eps = 0 at init: the loss is E[noise^2]
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sample_is_finite_and_deterministic(sampler):
    model = randomised(DiT(small_cfg()))
    ids, mask = captions(3)
    kw = dict(steps=4, sampler=sampler, guidance_scale=2.0, eta=0.3 if sampler == "ddim" else 0.0)
    a = model.sample(ids, mask, generator=torch.Generator().manual_seed(0), **kw)
    b = model.sample(ids, mask, generator=torch.Generator().manual_seed(0), **kw)
    c = model.sample(ids, mask, generator=torch.Generator().manual_seed(1), **kw)
    assert a.shape == (3, 3, 32, 32) and torch.isfinite(a).all()
    assert a.abs().max() <= 1.0  # the last step returns the clipped x0 estimate
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_one_token_captions():
    """A caption shorter than the empty one (<bos> <eos>) is padded where the two are batched together."""
    model = randomised(DiT(small_cfg(cond_drop=0.5)))
    ids = torch.full((4, 1), 3)
    out = model.train()(torch.zeros(4, 3, 32, 32), ids, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    imgs = model.sample(ids, steps=2, guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert imgs.shape == (4, 3, 32, 32) and torch.isfinite(imgs).all()


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sample_is_the_diffusers_loop(sampler):
    """``sample`` = diffusers' scheduler loop around the same guided eps (same generator, same draws)."""
    model = randomised(DiT(small_cfg()))
    ids, mask = captions(2)
    ours = model.sample(ids, mask, steps=5, sampler=sampler, guidance_scale=2.5,
                        generator=torch.Generator().manual_seed(3))
    ref = (DDIMScheduler if sampler == "ddim" else DDPMScheduler)()
    ref.set_timesteps(5)
    g = torch.Generator().manual_seed(3)
    ctx, cmask = model.encode_text(ids, mask)
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32, generator=g)
        for t in ref.timesteps.tolist():
            eps = model.guided_eps(x, t, ctx, cmask, 2.5)
            x = ref.step(eps, t, x, generator=g).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-5, rtol=1e-5)


M = None


def shared_model() -> DiT:
    global M
    if M is None:
        M = DiT(small_cfg(depth=1)).eval()
    return M


@pytest.mark.parametrize("call, error, match", [
    (lambda m: m(torch.zeros(2, 3, 16, 16), *captions(2)), ValueError, "pixel_values must be 32x32"),
    (lambda m: m(torch.zeros(2, 1, 32, 32), *captions(2)), ValueError, "pixel_values must have 3 channels"),
    (lambda m: m(torch.zeros(2, 3, 32), *captions(2)), ValueError, "pixel_values must have shape"),
    (lambda m: m(torch.zeros(2, 3, 32, 32, dtype=torch.long), *captions(2)), TypeError, "pixel_values must be a float"),
    (lambda m: m(torch.zeros(3, 3, 32, 32), *captions(2)), ValueError, "mismatched batch sizes"),
    (lambda m: m(torch.zeros(2, 3, 32, 32), torch.full((2, 4), 814)), ValueError, r"input_ids has ids outside"),
    (lambda m: m(torch.zeros(2, 3, 32, 32), torch.ones(2, 17, dtype=torch.long)), ValueError, "input_ids has length 17"),
    (lambda m: m(torch.zeros(2, 3, 32, 32), torch.ones(2, 4)), TypeError, "input_ids must be an integer"),
    (lambda m: m(torch.zeros(2, 3, 32, 32), torch.ones(2, 4, dtype=torch.long), torch.ones(2, 3)), ValueError,
     "attention_mask must have shape"),
    (lambda m: m(torch.zeros(2, 3, 32, 32), *captions(2), t=torch.tensor([0, 1000])), ValueError,
     "t has timesteps outside"),
    (lambda m: m(torch.zeros(2, 3, 32, 32), *captions(2), noise=torch.zeros(2, 3)), ValueError, "noise must be"),
    (lambda m: m.sample(*captions(2), steps=2, sampler="euler"), ValueError, "sampler must be one of"),
    (lambda m: m.sample(*captions(2), steps=2, guidance_scale=-1.0), ValueError, "guidance_scale must be >= 0"),
    (lambda m: m.sample(*captions(2), steps=0), ValueError, "steps must be an int"),
    (lambda m: m.sample(*captions(2), steps=2, eta=2.0), ValueError, "eta must lie in"),
    (lambda m: m.guided_eps(torch.zeros(2, 3, 32, 32), 5, torch.zeros(2, 4, 64), None, float("nan")), ValueError,
     "guidance_scale must be finite"),
    (lambda m: m.eps(torch.zeros(2, 3, 32, 32), 5, torch.zeros(2, 4, 32)), ValueError, "context must have shape"),
    (lambda m: m.eps(torch.zeros(2, 3, 32, 32), 5, torch.zeros(2, 4, 64), torch.ones(2, 5)), ValueError,
     "context_mask must have shape"),
    (lambda m: m.eps(torch.zeros(2, 3, 32, 32), 0.5, torch.zeros(2, 4, 64)), TypeError, "t must be an int"),
    (lambda m: m.null_context(2, 40), ValueError, "length must be an int in"),
])
def test_dit_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(shared_model())


@pytest.mark.parametrize("overrides, error, match", [
    (dict(image_size=30), ValueError, "image_size=30 is not a multiple of patch_size=4"),
    (dict(heads=3), ValueError, "dim=128 is not divisible by heads=3"),
    (dict(dim=130, heads=2), ValueError, "divisible by 4"),
    (dict(cond_drop=1.5), ValueError, "DiTConfig.cond_drop"),
    (dict(beta_schedule="sigmoid"), ValueError, "beta_schedule must be one of"),
    (dict(beta_start=0.1, beta_end=0.01), ValueError, "beta_end=0.01 must be >= beta_start"),
    (dict(num_train_timesteps=1), ValueError, "DiTConfig.num_train_timesteps"),
    (dict(patch_size=0), ValueError, "DiTConfig.patch_size"),
    (dict(dim="128"), TypeError, "DiTConfig.dim"),
    (dict(text=dict(vocab_size=814, context_length=1)), ValueError, "text.context_length=1"),
    (dict(text=3), TypeError, "DiTConfig.text"),
    (dict(bos_token_id=900), ValueError, "bos_token_id=900 is outside"),
])
def test_dit_config_bad_fields(overrides, error, match):
    with pytest.raises(error, match=match):
        DiTConfig.from_preset("tiny", **overrides)


@functools.lru_cache(maxsize=1)
def property_model() -> DiT:
    torch.manual_seed(0)
    return randomised(DiT(small_cfg(depth=1)))


@settings(max_examples=10, deadline=None)
@example(batch=2, length=5, t=10, dtype=torch.int64, size=32, scale=2.0)
@given(batch=st.integers(0, 3), length=st.integers(0, 18), t=st.integers(-2, 1001),
       dtype=st.sampled_from([torch.int64, torch.int32, torch.uint8, torch.float32]),
       size=st.sampled_from([32, 32, 16]), scale=st.one_of(st.floats(-1.0, 5.0), st.sampled_from([float("nan"), float("inf")])))
def test_dit_property(batch, length, t, dtype, size, scale):
    """A forward and a guided eps: a finite result of the right shape, or an error naming the argument."""
    model = property_model()
    ids = torch.randint(0, 814, (batch, length)).to(dtype)
    x = torch.randn(batch, 3, size, size)
    ts = torch.full((batch,), t)
    try:
        out = model(x, ids, t=ts)
        ctx, mask = model.encode_text(ids)
        eps = model.guided_eps(x, ts, ctx, mask, scale)
    except (ValueError, TypeError) as e:
        assert any(n in str(e) for n in ("pixel_values", "input_ids", "t ", "t=", "guidance_scale", "x_t")), str(e)
        event(f"refused: {type(e).__name__}")
        return
    event("accepted")
    assert out.eps_pred.shape == x.shape and torch.isfinite(out.loss) and torch.isfinite(out.eps_pred).all()
    assert eps.shape == x.shape and torch.isfinite(eps).all()
