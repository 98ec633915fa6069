"""VQ-VAE (chapter 04b): the straight-through gradient, the losses, the nearest-code lookup, EMA updates, dead-code
restarts, perplexity, tokenize/detokenize, learning, and the errors for bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import event, given, settings
from hypothesis import strategies as st

from vlm_primer.generative.vqvae import VQVAE, VectorQuantizer, VQVAEConfig
from vlm_primer.validate import validation


def tiny(**overrides) -> VQVAE:
    torch.manual_seed(0)
    return VQVAE(VQVAEConfig.from_preset("tiny", **overrides))


def brute_force_nearest(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """For each row of ``flat``, a loop over the codes keeps the one with the smallest squared distance."""
    out = []
    for v in flat:
        best, best_d = 0, float("inf")
        for k, e in enumerate(codebook):
            d = float(((v - e) ** 2).sum())
            if d < best_d:
                best, best_d = k, d
        out.append(best)
    return torch.tensor(out)


def smooth_images(n: int, seed: int = 0) -> torch.Tensor:
    """Random 4x4 colour grids blown up to 32 px: smooth images in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 4, 4, generator=g) * 2 - 1, size=32, mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------- config


def test_presets_grid_and_tokens():
    expected = {"tiny": (32, 8, 128), "small": (64, 16, 512), "base": (256, 16, 8192)}
    for name, (size, grid, k) in expected.items():
        cfg = VQVAEConfig.from_preset(name)
        assert (cfg.image_size, cfg.grid, cfg.num_tokens, cfg.codebook_size) == (size, grid, grid**2, k)
    assert VQVAEConfig.from_preset("base").factor == 16


@pytest.mark.parametrize("overrides, match", [
    (dict(codebook_size=0), "codebook_size"),
    (dict(image_size=30), "image_size=30 is not divisible"),
    (dict(channels=()), "channels"),
    (dict(channels=(8, 0, 16)), "channels"),
    (dict(code_dim=-1), "code_dim"),
    (dict(ema_decay=1.0), "ema_decay"),
    (dict(beta=-0.1), "beta"),
    (dict(dead_threshold=float("nan")), "dead_threshold"),
])
def test_bad_config_names_the_field(overrides, match):
    with pytest.raises(ValueError, match=match):
        VQVAEConfig.from_preset("tiny", **overrides)


def test_bad_config_type():
    with pytest.raises(TypeError, match="codebook_size"):
        VQVAEConfig(codebook_size=12.5)


# --------------------------------------------------------------------------- the quantizer


def test_straight_through_gradient_and_codebook_gradient():
    model = tiny().eval()
    x = smooth_images(2)
    z = model.encode(x).detach().requires_grad_()
    out = model.quantizer(z)
    F.mse_loss(model.decode(out.quantized), x).backward()
    # reference: the same loss computed on the codes as a leaf tensor
    q = out.quantized.detach().clone().requires_grad_()
    F.mse_loss(model.decode(q), x).backward()
    torch.testing.assert_close(z.grad, q.grad, rtol=0, atol=0)
    codebook = model.quantizer.codebook
    assert codebook.grad is None, "the reconstruction loss must not reach the codebook"

    z_grad = z.grad.clone()
    out.commitment_loss.backward(retain_graph=True)
    assert codebook.grad is None, "the commitment loss must not reach the codebook"
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    chosen = codebook.detach()[out.indices.flatten()]
    torch.testing.assert_close(z.grad - z_grad, (2 * (flat - chosen) / flat.numel()).reshape(2, 8, 8, -1)
                               .permute(0, 3, 1, 2))

    z_grad = z.grad.clone()
    out.codebook_loss.backward()
    torch.testing.assert_close(z.grad, z_grad, rtol=0, atol=0)  # the codebook loss does not move the encoder
    expected = torch.zeros_like(codebook)
    expected.index_add_(0, out.indices.flatten(), 2 * (chosen - flat) / flat.numel())
    torch.testing.assert_close(codebook.grad, expected)


def test_losses_match_a_hand_written_reference():
    model = tiny(beta=0.6).eval()
    with torch.no_grad():  # codes of the encoder's scale, so that many of them are chosen
        model.quantizer.codebook.normal_(0, 0.5)
    x = smooth_images(3, seed=1)
    out = model(x)
    z = model.encode(x).detach()
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    idx = brute_force_nearest(flat, model.quantizer.codebook.detach())
    assert torch.equal(out.indices.flatten(), idx)
    assert len(idx.unique()) > 3
    q = model.quantizer.codebook.detach()[idx]
    mse = ((q - flat) ** 2).mean()
    q_map = q.reshape(3, 8, 8, -1).permute(0, 3, 1, 2)
    recon = model.decoder(q_map)
    recon_loss = ((recon - x) ** 2).mean()
    torch.testing.assert_close(out.reconstruction, recon)
    torch.testing.assert_close(out.recon_loss, recon_loss)
    torch.testing.assert_close(out.codebook_loss, mse)
    torch.testing.assert_close(out.commitment_loss, mse)
    torch.testing.assert_close(out.loss, recon_loss + mse + 0.6 * mse)


def test_nearest_code_matches_cdist_argmin():
    torch.manual_seed(1)
    vq = VectorQuantizer(128, 16)
    with torch.no_grad():
        vq.codebook.normal_()
    z = torch.randn(4, 16, 8, 8)
    idx = vq.nearest(z)
    assert idx.shape == (4, 8, 8) and idx.dtype == torch.long
    flat = z.permute(0, 2, 3, 1).reshape(-1, 16).double()
    dist = torch.cdist(flat, vq.codebook.detach().double())
    ref = dist.argmin(1)
    chosen = dist.gather(1, idx.flatten()[:, None]).squeeze(1)
    torch.testing.assert_close(chosen, dist.min(1).values, rtol=0, atol=1e-5)  # the nearest, up to float32 ties
    assert (idx.flatten() == ref).float().mean() == 1.0
    torch.testing.assert_close(vq.lookup(idx), vq.codebook.detach()[idx].permute(0, 3, 1, 2))


def test_ema_update_matches_the_one_step_formula():
    torch.manual_seed(2)
    k, d, decay, eps = 6, 3, 0.9, 0.5  # an eps large enough that the Laplace smoothing shows
    vq = VectorQuantizer(k, d, ema=True, decay=decay, eps=eps)
    with torch.no_grad():  # randomise what starts constant
        vq.codebook.normal_()
        vq.cluster_size.uniform_(0.5, 3.0)
        vq.embed_sum.normal_()
    codebook, cluster_size, embed_sum = vq.codebook.detach().clone(), vq.cluster_size.clone(), vq.embed_sum.clone()
    z = torch.randn(2, d, 4, 4)
    out = vq.train()(z)

    flat = z.permute(0, 2, 3, 1).reshape(-1, d)
    idx = brute_force_nearest(flat, codebook)
    counts = torch.zeros(k)
    sums = torch.zeros(k, d)
    for i, j in enumerate(idx):
        counts[j] += 1
        sums[j] += flat[i]
    new_size = decay * cluster_size + (1 - decay) * counts
    new_sum = decay * embed_sum + (1 - decay) * sums
    n = new_size.sum()
    smoothed = (new_size + eps) / (n + k * eps) * n
    torch.testing.assert_close(vq.cluster_size, new_size)
    torch.testing.assert_close(vq.embed_sum, new_sum)
    torch.testing.assert_close(vq.codebook.detach(), new_sum / smoothed[:, None])
    # the output used the codebook from before the update; an EMA codebook has no loss and no gradient
    torch.testing.assert_close(out.quantized, codebook[idx].reshape(2, 4, 4, d).permute(0, 3, 1, 2))
    assert float(out.codebook_loss) == 0.0 and not vq.codebook.requires_grad

    before = vq.codebook.detach().clone()
    vq.eval()(z)
    assert torch.equal(vq.codebook.detach(), before), "eval mode must not update the codebook"


def test_ema_model_codebook_gets_no_gradient():
    model = tiny(ema=True).train()
    out = model(smooth_images(4))
    out.loss.backward()
    assert model.quantizer.codebook.grad is None
    assert model.encoder[0].weight.grad is not None


def test_dead_codes_are_reseeded_from_the_batch():
    k, d = 8, 2
    vq = VectorQuantizer(k, d, restart_dead=True, dead_threshold=1.0)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]] + [[100.0 + i, 100.0] for i in range(6)]))
    before = vq.codebook.detach().clone()
    z = torch.cat([torch.randn(2, d, 4, 4) * 0.1 - 1, torch.randn(2, d, 4, 4) * 0.1 + 1])  # around codes 0 and 1
    flat = z.permute(0, 2, 3, 1).reshape(-1, d)

    torch.manual_seed(3)
    vq.eval()(z)
    assert torch.equal(vq.codebook.detach(), before), "no restart in eval mode"
    out = vq.train()(z)
    assert set(out.indices.unique().tolist()) == {0, 1}
    after = vq.codebook.detach()
    assert torch.equal(after[:2], before[:2]), "used codes must not move"
    assert torch.cdist(after[2:], flat).min(1).values.max() == 0, "each dead code must be an encoder output"
    assert torch.equal(vq.usage_ema[2:], torch.ones(6))
    # deterministic under the global seed
    vq2 = VectorQuantizer(k, d, restart_dead=True)
    with torch.no_grad():
        vq2.codebook.copy_(before)
    torch.manual_seed(3)
    vq2.train()(z)
    assert torch.equal(vq2.codebook.detach(), after)


def test_perplexity_and_usage():
    k = 8
    vq = VectorQuantizer(k, k).eval()
    with torch.no_grad():
        vq.codebook.copy_(torch.eye(k) * 10)
    uniform = (torch.eye(k) * 10).T.reshape(1, k, 1, k).repeat(3, 1, 2, 1)  # every code 6 times
    out = vq(uniform)
    assert abs(float(out.perplexity) - k) < 1e-4 and float(out.usage) == 1.0
    single = torch.zeros(2, k, 3, 3)
    single[:, 0] = 10
    out = vq(single)
    assert abs(float(out.perplexity) - 1) < 1e-6 and float(out.usage) == 1 / k


# --------------------------------------------------------------------------- the model


def test_tokenize_detokenize_round_trip():
    model = tiny(restart_dead=True)
    x = smooth_images(3)
    usage = model.quantizer.usage_ema.clone()
    tokens = model.train().tokenize(x)
    assert torch.equal(model.quantizer.usage_ema, usage), "tokenize must not update the quantizer"
    assert tokens.shape == (3, 64) and tokens.dtype == torch.long
    model.eval()
    with torch.no_grad():
        ref = model.decode(model.quantizer(model.encode(x)).quantized)
        out = model(x)
        torch.testing.assert_close(model.detokenize(tokens), ref)
        torch.testing.assert_close(model.detokenize(tokens.reshape(3, 8, 8)), ref)
        torch.testing.assert_close(model.detokenize(tokens.int().numpy()), ref)
    assert torch.equal(tokens.reshape(3, 8, 8), out.indices)  # raster order: row by row
    torch.testing.assert_close(out.reconstruction, ref)


def test_learns_to_reconstruct():
    model = tiny()
    x = smooth_images(16)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(150):
        out = model(x)
        losses.append(out.recon_loss.item())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    with torch.no_grad():
        final = float(model.eval()(x).recon_loss)
    assert final < 0.5 * losses[0], f"recon loss {losses[0]:.4f} -> {final:.4f}"


BAD_PIXELS = [
    (lambda: [[0.0]], TypeError, "pixel_values must be a torch.Tensor"),
    (lambda: torch.zeros(2, 3, 32, 32, dtype=torch.uint8), TypeError, "pixel_values must be a floating-point"),
    (lambda: torch.zeros(3, 32, 32), ValueError, r"pixel_values must have shape \(B, 3, H, W\), got shape \(3, 32"),
    (lambda: torch.zeros(2, 1, 32, 32), ValueError, r"pixel_values must have 3 channels.*\(2, 1, 32, 32\)"),
    (lambda: torch.zeros(2, 3, 16, 16), ValueError, r"pixel_values must be 32x32 pixels.*\(2, 3, 16, 16\)"),
    (lambda: torch.zeros(0, 3, 32, 32), ValueError, "pixel_values is an empty batch"),
    (lambda: torch.full((1, 3, 32, 32), float("nan")), ValueError, "pixel_values must be finite"),
]


@pytest.mark.parametrize("make, error, match", BAD_PIXELS)
@pytest.mark.parametrize("method", ["forward", "encode", "tokenize"])
def test_bad_pixel_values(make, error, match, method):
    model = tiny().eval()
    fn = model if method == "forward" else getattr(model, method)
    with pytest.raises(error, match=match):
        fn(make())


def test_value_checks_can_be_switched_off():
    model = tiny().eval()
    with validation(False), torch.no_grad():
        out = model(torch.full((1, 3, 32, 32), float("nan")))
    assert not math.isfinite(float(out.loss))


@pytest.mark.parametrize("make, error, match", [
    (lambda: torch.full((2, 64), 128), ValueError, r"indices has codes outside \[0, 128\)"),
    (lambda: torch.full((2, 8, 8), -1), ValueError, r"indices has codes outside \[0, 128\)"),
    (lambda: torch.zeros(2, 63, dtype=torch.long), ValueError, r"indices must be a \(B, 64\) or \(B, 8, 8\).*\(2, 63\)"),
    (lambda: torch.zeros(2, 7, 8, dtype=torch.long), ValueError, r"indices must be .*\(2, 7, 8\)"),
    (lambda: torch.zeros(64, dtype=torch.long), ValueError, r"indices must be .*\(64,\)"),
    (lambda: torch.zeros(2, 64), TypeError, "indices must be an integer tensor"),
    (lambda: torch.zeros(0, 64, dtype=torch.long), ValueError, "indices is an empty batch"),
    (lambda: "tokens", TypeError, "indices must be"),
])
def test_bad_indices(make, error, match):
    model = tiny().eval()
    with pytest.raises(error, match=match):
        model.detokenize(make())


def test_quantizer_input_checks():
    vq = VectorQuantizer(8, 4)
    with pytest.raises(ValueError, match=r"z must have 4 channels"):
        vq(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"indices has codes outside \[0, 8\)"):
        vq.lookup(torch.full((1, 2, 2), 8))
    with pytest.raises(ValueError, match="codebook_size"):
        VectorQuantizer(0, 4)


# --------------------------------------------------------------------------- property

PROPERTY_MODEL = tiny().eval()


@settings(max_examples=10, deadline=None)
@given(b=st.sampled_from([1, 2, 3, 0]), channels=st.sampled_from([3, 3, 3, 1]), size=st.sampled_from([32, 32, 32, 16]),
       scale=st.sampled_from([1.0, 255.0, -3.0]), special=st.sampled_from([None, None, None, float("nan"), float("inf")]),
       dtype=st.sampled_from([torch.float32, torch.float32, torch.float16, torch.int64]), seed=st.integers(0, 9))
def test_forward_is_finite_or_names_the_argument(b, channels, size, scale, special, dtype, seed):
    x = torch.rand(b, channels, size, size, generator=torch.Generator().manual_seed(seed)) * scale
    if special is not None and x.numel():
        x[0, 0, 0, 0] = special
    x = x.to(dtype)
    try:
        with torch.no_grad():
            out = PROPERTY_MODEL(x)
    except (ValueError, TypeError) as e:
        assert "pixel_values" in str(e), f"the message does not name the argument: {e}"
        event(f"refused: {type(e).__name__}")
        return
    event("accepted")
    assert torch.isfinite(out.loss) and torch.isfinite(out.reconstruction).all()
    assert out.indices.shape == (b, 8, 8) and 0 <= int(out.indices.min()) and int(out.indices.max()) < 128
