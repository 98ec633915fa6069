"""MAE against ``transformers``' ``ViTMAEForPreTraining``: a tiny random config with every parameter perturbed (the
zero-initialised mask token and biases included), the same noise -> the same mask, logits and loss; both ways."""

from __future__ import annotations

import pytest
import torch

from vlm_primer.interop.mae import mae_from_hf, mae_to_hf
from vlm_primer.masking import MAE, MAEConfig


def _hf(norm_pix_loss=True, seed=0):
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    torch.manual_seed(seed)
    cfg = ViTMAEConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                       image_size=24, patch_size=4, decoder_hidden_size=16, decoder_num_hidden_layers=2,
                       decoder_num_attention_heads=2, decoder_intermediate_size=40, mask_ratio=0.75,
                       norm_pix_loss=norm_pix_loss, attn_implementation="eager")
    model = ViTMAEForPreTraining(cfg).eval()
    # transformers 5 leaves a from-config model's fixed position tables at zero; MAE's own init writes them
    model.vit.embeddings.patch_embeddings.projection._is_hf_initialized = False
    model.vit.embeddings.initialize_weights()
    model.decoder.initialize_weights(model.vit.embeddings.patch_embeddings.num_patches)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "position" not in name and "pos_embed" not in name:  # the fixed sin-cos tables stay MAE's
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _batch(b=3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 3, 24, 24, generator=g), torch.rand(b, 36, generator=g)


@pytest.mark.parametrize("norm_pix_loss", [True, False])
@torch.no_grad()
def test_mae_matches_vitmae_same_noise_same_mask_logits_loss(norm_pix_loss):
    hf = _hf(norm_pix_loss)
    ours = mae_from_hf(hf)
    pixels, noise = _batch()
    want = hf(pixel_values=pixels, noise=noise)
    got = ours(pixels, noise=noise)
    assert torch.equal(got.mask, want.mask) and torch.equal(got.ids_restore, want.ids_restore)
    assert int(got.mask.sum(1)[0]) == 36 - int(36 * 0.25)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, want.loss, atol=1e-5, rtol=1e-5)
    # the encoder alone, all patches visible (the feature extractor after pre-training)
    hf.config.mask_ratio = 0.0
    enc = hf.vit(pixel_values=pixels, noise=noise).last_hidden_state
    latent, mask, _ = ours.encode(pixels, mask_ratio=0.0, noise=noise)
    assert mask.sum() == 0
    torch.testing.assert_close(latent, enc, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_round_trip_to_transformers_and_a_changed_weight_is_seen():
    torch.manual_seed(0)
    cfg = MAEConfig.from_preset("tiny")
    ours = MAE(cfg).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf = mae_to_hf(ours)
    pixels = torch.randn(2, 3, 48, 48)
    noise = torch.rand(2, cfg.encoder.num_patches)
    torch.testing.assert_close(ours(pixels, noise=noise).loss, hf(pixel_values=pixels, noise=noise).loss,
                               atol=1e-5, rtol=1e-5)
    # the comparison can fail: one decoder weight changed on our side only
    ours.decoder_pred.bias[0] += 0.5
    assert not torch.allclose(ours(pixels, noise=noise).logits, hf(pixel_values=pixels, noise=noise).logits,
                              atol=1e-3)


def test_converter_refuses_other_positions_and_other_models():
    hf = _hf()
    with torch.no_grad():
        hf.vit.embeddings.position_embeddings.add_(0.1)
    with pytest.raises(ValueError, match="sin-cos table"):
        mae_from_hf(hf)
    with pytest.raises(ValueError, match="ViTMAEForPreTraining"):
        mae_from_hf(torch.nn.Linear(2, 2))
