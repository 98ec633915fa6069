"""Chapter 06b's X-VLM-style grounder: its forward pass against the same computation written out by hand, the
zoo's CLIP weights carried over, a loss that is the box loss, learning on a fixed batch, bad input."""

import pytest
import torch

from vlm_primer import zoo
from vlm_primer.nn.pos import sincos_2d
from vlm_primer.recipes.grounding import box_loss, referring_items
from vlm_primer.recipes.xvlm import Grounder, GrounderConfig
from vlm_primer.text import Tokenizer
from vlm_primer.zoo import grounding_recipes
from vlm_primer.zoo.recipes import normalizer, pixel_stats

TOK = Tokenizer.load()


@pytest.fixture(scope="module")
def clip():
    return zoo.load("clip-tiny-pairs")


def batch(n=6, seed=0):
    items = referring_items(n, grounding_recipes.world(), seed=seed)
    return grounding_recipes.referring_collate(TOK, normalizer(*pixel_stats()))(items)


def perturbed(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def test_forward_is_the_cross_modal_encoder_over_clip_tokens_by_hand(clip):
    model = perturbed(Grounder.from_clip(clip))
    b = batch()
    ids, mask = b["input_ids"], b["attention_mask"].bool()
    with torch.no_grad():
        image = model.clip.vision(b["pixel_values"]).last_hidden_state + sincos_2d(8, 8, 64, cls_token=True)
        x = model.clip.text(ids, mask).last_hidden_state
        for block in model.fusion.blocks:  # text self-attention (padding masked), cross-attention to the image, MLP
            x = x + block.attn(block.ln1(x), key_padding_mask=mask)
            x = x + block.xattn(block.ln_x(x), context=image)
            x = x + block.mlp(block.ln2(x))
        eos = (ids == TOK.eos_id).int().argmax(dim=1)  # the end-of-text token: the causal tower's pooled position
        h = model.head
        cxcywh = torch.sigmoid(h.fc2(h.act(h.norm(h.fc1(x[torch.arange(len(x)), eos])))))
        want = torch.cat([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], dim=1)
        out = model(**b)
    torch.testing.assert_close(out.boxes, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.loss, box_loss(want, b["boxes"]), atol=1e-6, rtol=0)
    torch.testing.assert_close(model.predict(b["pixel_values"], ids, b["attention_mask"]), want, atol=1e-6, rtol=0)


def test_from_clip_copies_the_towers_and_nothing_else(clip):
    model = Grounder.from_clip(clip)
    for k, v in clip.state_dict().items():
        assert torch.equal(model.clip.state_dict()[k], v), k
    model.clip.vision.cls.data.add_(1.0)  # a copy, not the zoo model itself
    assert not torch.equal(model.clip.vision.cls, clip.vision.cls)
    assert model.cfg.clip == clip.cfg and model.cfg.fusion_depth == 2
    assert "image_pos" not in model.state_dict()  # fixed positions: rebuilt, not stored


def test_a_few_steps_fit_a_fixed_batch(clip):
    torch.manual_seed(0)
    model = Grounder.from_clip(clip).train()
    b = batch(16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        loss = model(**b).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_config_presets_and_bad_input(clip):
    assert GrounderConfig.from_preset("base").fusion_depth == 6
    with pytest.raises(ValueError, match="fusion_heads"):
        GrounderConfig(fusion_heads=5)
    with pytest.raises(ValueError, match="fusion_depth"):
        GrounderConfig(fusion_depth=0)
    with pytest.raises(TypeError, match="clip must be a CLIP"):
        Grounder.from_clip(torch.nn.Linear(2, 2))
    model = Grounder.from_clip(clip)
    b = batch(2)
    with pytest.raises(ValueError, match="pixel_values"):
        model(b["pixel_values"][:, :, :40], b["input_ids"], b["attention_mask"])
    with pytest.raises(ValueError, match="batch"):
        model(b["pixel_values"][:1], b["input_ids"], b["attention_mask"])
    with pytest.raises(ValueError, match="target_xyxy|boxes"):
        model(**(b | {"boxes": b["boxes"][:, :3]}))
