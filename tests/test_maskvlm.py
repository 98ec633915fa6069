"""MaskVLM: each modality is reconstructed with the other's help (the caption reaches the image decoder through
cross-attention and vice versa), the four losses, training lowers them, and bad input is named."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlm_primer.masking import IGNORE_INDEX, MaskVLM, MaskVLMConfig, patchify


def _batch(b=4, length=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 814, (b, length), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    return torch.rand(b, 3, 48, 48, generator=g), ids


def test_losses_and_shapes_and_that_each_modality_reads_the_other():
    torch.manual_seed(0)
    model = MaskVLM(MaskVLMConfig.from_preset("tiny")).eval()
    pixels, ids = _batch()
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    out = model(pixels, ids, mask, generator=torch.Generator().manual_seed(0))
    assert out.pixels.shape == (4, 64, 108) and out.patch_mask.sum(1).tolist() == [39] * 4  # 64 - int(64 * 0.4)
    assert (out.mlm_labels[0, 5:] == IGNORE_INDEX).all()  # padding is never a target
    assert all(torch.isfinite(v) for v in (out.mim, out.mlm, out.itc, out.itm))
    torch.testing.assert_close(out.loss, out.mim + out.mlm + out.itc + out.itm)
    # the predicted pixels change when only the caption changes (the image decoder attends to the text) ...
    other = ids.clone()
    other[:, 1:-1] = torch.randint(10, 814, (4, 6), generator=torch.Generator().manual_seed(5))
    again = model(pixels, other, mask, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.patch_mask, out.patch_mask) and not torch.allclose(again.pixels, out.pixels)
    # ... and the word predictions change when only the image changes
    third = model(pixels.flip(0), ids, mask, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(third.mlm_logits, out.mlm_logits)
    assert model.itm_scores(pixels, ids, mask).shape == (4,)
    # MIM is the mean squared error over the hidden patches, MLM the cross-entropy over the picked words
    target = patchify(pixels, model.cfg.image.patch_size)  # norm_pix_loss is off in the tiny preset
    torch.testing.assert_close(out.mim, (out.pixels - target).pow(2).mean(-1)[out.patch_mask].mean())
    picked = out.mlm_labels != IGNORE_INDEX
    torch.testing.assert_close(out.mlm, F.cross_entropy(out.mlm_logits[picked], out.mlm_labels[picked]))
    assert model.encode_image(pixels).shape == model.encode_text(ids, mask).shape == (4, 64)


def test_no_hidden_patch_means_no_image_loss():
    """A ratio of 0 (the config allows it) or an all-False patch_mask leaves MIM nothing to average: 0, not NaN,
    as MLM does with no picked word."""
    torch.manual_seed(0)
    pixels, ids = _batch()
    model = MaskVLM(MaskVLMConfig.from_preset("tiny", image_mask_ratio=0.0))
    for kwargs in ({}, {"patch_mask": torch.zeros(4, 64, dtype=torch.bool)}):
        out = model(pixels, ids, generator=torch.Generator().manual_seed(0), **kwargs)
        assert out.mim == 0 and torch.isfinite(out.loss)
        out.loss.backward()


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    model = MaskVLM(MaskVLMConfig.from_preset("tiny"))
    pixels, ids = _batch(8)
    pixels = pixels.mean(dim=(2, 3), keepdim=True).expand(8, 3, 48, 48)  # one colour per image: reconstructable
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for step in range(40):
        out = model(pixels, ids, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        model.post_step()
        losses.append(out.loss.item())
    assert sum(losses[-5:]) < 0.75 * sum(losses[:5])


def test_bad_input_is_named():
    model = MaskVLM(MaskVLMConfig.from_preset("tiny"))
    pixels, ids = _batch()
    with pytest.raises(ValueError, match="batch"):
        model(pixels[:3], ids)
    with pytest.raises(ValueError, match="at least 2"):
        model(pixels[:1], ids[:1])
    with pytest.raises(ValueError, match="patch_mask"):
        model(pixels, ids, patch_mask=torch.zeros(4, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match="pixel_values"):
        model(torch.rand(4, 3, 32, 32), ids)
    with pytest.raises(ValueError, match="outside"):
        model(pixels, ids + 1000)
    with pytest.raises(ValueError, match="bidirectional"):
        MaskVLMConfig.from_preset("tiny", text=dict(MaskVLMConfig.PRESETS["tiny"]["text"], causal=True))
    with pytest.raises(ValueError, match="MaskVLM rebuilds every pixel.*image_size=50 must be a multiple of patch_size"):
        MaskVLMConfig.from_preset("tiny", image=dict(MaskVLMConfig.PRESETS["tiny"]["image"], image_size=50))
