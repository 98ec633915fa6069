"""NegCLIP: the loss by hand (hard negatives join the image-to-text choices only), equal to CLIP's loss when every
negative is masked out, a training step through the Trainer's interface, and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlm_primer.contrastive import CLIP
from vlm_primer.contrastive.losses import ClipLoss
from vlm_primer.recipes.negatives import NegCLIP, negative_collate, negclip_loss
from vlm_primer.text import Tokenizer
from vlm_primer.world import ShapesCaptionDataset, WorldConfig
from vlm_primer.zoo.recipes import CONTEXT, WORLD, contrastive_config


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_loss_by_hand():
    img, txt, neg = _unit(5, 8, seed=1), _unit(5, 8, seed=2), _unit(5, 8, seed=3)
    s = 7.0
    loss = negclip_loss(img, txt, neg, s)
    rows = []
    for i in range(5):  # image i chooses among the 5 captions and the 5 negatives; caption i among the 5 images
        i2t = torch.cat([s * txt @ img[i], s * neg @ img[i]])
        t2i = s * img @ txt[i]
        rows.append((-(i2t[i] - i2t.logsumexp(0)) - (t2i[i] - t2i.logsumexp(0))) / 2)
    torch.testing.assert_close(loss, torch.stack(rows).mean(), rtol=0, atol=1e-6)


def test_masked_negatives_give_clips_loss():
    img, txt, neg = _unit(6, 8, seed=4), _unit(6, 8, seed=5), _unit(6, 8, seed=6)
    scale = torch.tensor(5.0)
    none = negclip_loss(img, txt, neg, scale, torch.zeros(6, dtype=torch.bool))
    torch.testing.assert_close(none, ClipLoss()(img, txt, scale), rtol=0, atol=1e-6)
    assert negclip_loss(img, txt, neg, scale) > none  # hard choices only add to the loss
    close = negclip_loss(img, txt, img, scale)  # a negative as close as the image itself: the loss must see it
    assert close > negclip_loss(img, txt, -img, scale)


def test_negclip_trains_through_the_trainer_interface():
    tok = Tokenizer.load()
    clip = CLIP(contrastive_config("clip", tok))
    model = NegCLIP(clip)
    ds = ShapesCaptionDataset("train", 8, WorldConfig(**WORLD), num_objects=2, negatives=True, statements=False)
    batch = negative_collate(tok, CONTEXT, WORLD["image_size"])([ds[i] for i in range(8)])
    assert batch["negative_ids"].shape[0] == 8
    out = model(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and clip.logit_scale.grad is not None
    plain = clip(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    assert out.loss.item() > plain.loss.item()  # the negatives make the image-to-text choice harder
    torch.testing.assert_close(model.encode_image(batch["pixel_values"]), clip.encode_image(batch["pixel_values"]))
    with torch.no_grad():
        clip.logit_scale.fill_(10.0)
    model.post_step()  # the Trainer's clamp of the temperature reaches the wrapped CLIP
    assert clip.logit_scale.item() == pytest.approx(clip.cfg.max_logit_scale)


@pytest.mark.parametrize("call, match", [
    (lambda: negclip_loss(torch.zeros(3), torch.zeros(3, 2), torch.zeros(3, 2), 1.0), "image_embeds must be a"),
    (lambda: negclip_loss(torch.zeros(3, 2), torch.zeros(4, 2), torch.zeros(3, 2), 1.0), "one shape"),
    (lambda: negclip_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2), 1.0, torch.ones(3)),
     "negative_valid must be a bool"),
    (lambda: NegCLIP(torch.nn.Linear(2, 2)), "NegCLIP wraps a CLIP"),
    (lambda: negative_collate(Tokenizer.load(), 16, 48)([{"image": torch.zeros(3, 48, 48), "caption": "a"}]),
     "needs a 'negative'"),
])
def test_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
