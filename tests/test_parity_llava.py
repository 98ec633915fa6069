"""LLaVA against ``transformers``' ``LlavaForConditionalGeneration`` (tiny random configs, every weight
perturbed): logits, the loss with the answer-only labels layout, greedy generation, both conversion
directions; the connectors; and the bad inputs that must fail with a clear error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from vlm_primer.backbones import Llava, LlavaConfig, LlavaNextConfig, build_connector, pixel_shuffle
from vlm_primer.interop.llava import llava_from_hf, llava_to_hf

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))
from tiny_hf import tiny_llava_hf  # noqa: E402

IMG = 99  # the image placeholder id of the tiny transformers config


def _tiny_hf(name: str, **extra):
    """A tiny random ``transformers`` ``{name}ForConditionalGeneration``, every weight moved off its init."""
    return tiny_llava_hf(name, IMG, max_position_embeddings=256, **extra)


@pytest.fixture(scope="module")
def hf_llava():
    return _tiny_hf("Llava", image_seq_length=16)


def _batch(n_tokens: int = 16):
    g = torch.Generator().manual_seed(1)
    prompt = [1, 7, 8] + [IMG] * n_tokens + [9, 10, 11]
    answer = [12, 13, 2]
    ids = torch.tensor([prompt + answer, [1, 20] + [IMG] * n_tokens + [21, 22, 23, 24, 25, 26, 2]])
    labels = torch.full_like(ids, -100)
    labels[0, -3:], labels[1, -4:] = torch.tensor(answer), torch.tensor([24, 25, 26, 2])
    return ids, torch.randn(2, 3, 32, 32, generator=g), labels


def test_logits_and_loss_match_transformers(hf_llava):
    ours = llava_from_hf(hf_llava).eval()
    ids, pixels, labels = _batch()
    with torch.no_grad():
        want = hf_llava(input_ids=ids, pixel_values=pixels, labels=labels)
        got = ours(ids, pixels, labels=labels)
        fresh = Llava(ours.cfg).eval()(ids, pixels)  # the comparison can fail: an unconverted model differs
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, want.loss, atol=1e-5, rtol=1e-5)
    assert (fresh.logits - want.logits).abs().max() > 1e-2
    assert ours.cfg.select_layer == -2 and ours.cfg.select_feature == "patch" and ours.tokens_per_image == 16


def test_round_trip_to_transformers(hf_llava):
    ours = llava_from_hf(hf_llava).eval()
    back = llava_to_hf(ours)
    for k, v in hf_llava.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, msg=k)
    ids, pixels, _ = _batch()
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=ids, pixel_values=pixels).logits,
                                   hf_llava(input_ids=ids, pixel_values=pixels).logits, atol=1e-5, rtol=1e-5)


def test_a_head_tied_at_the_top_level_stays_tied():
    """transformers ties the head by the composite config's flag; the Llama text config may still say False."""
    hf = _tiny_hf("Llava", image_seq_length=16, tie_word_embeddings=True)
    assert hf.config.tie_word_embeddings and not hf.config.text_config.tie_word_embeddings
    assert hf.lm_head.weight.data_ptr() == hf.model.language_model.embed_tokens.weight.data_ptr()
    lm = llava_from_hf(hf).language_model
    assert lm.cfg.tie_embeddings and lm.lm_head.weight is lm.tok_emb.weight  # tied, not two equal copies
    ids, pixels, _ = _batch()
    with torch.no_grad():
        torch.testing.assert_close(llava_from_hf(hf).eval()(ids, pixels).logits,
                                   hf(input_ids=ids, pixel_values=pixels).logits, atol=1e-5, rtol=1e-5)


def test_greedy_generation_matches_transformers(hf_llava):
    ours = llava_from_hf(hf_llava).eval()
    ids, pixels, _ = _batch()
    ids = ids[:1, :-3]  # the prompt of row 0
    want = hf_llava.generate(input_ids=ids, pixel_values=pixels[:1], max_new_tokens=8, do_sample=False,
                             eos_token_id=-1, pad_token_id=0)[:, ids.shape[1]:]
    got = ours.generate(ids, pixels[:1], max_new_tokens=8, eos_token_id=-1)
    assert got.tolist() == want.tolist()


def test_pixel_shuffle_matches_idefics3():
    from transformers import Idefics3Config
    from transformers.models.idefics3.modeling_idefics3 import Idefics3Connector

    x = torch.randn(2, 64, 12)
    ref = Idefics3Connector(Idefics3Config(scale_factor=2)).pixel_shuffle(x, 2)
    torch.testing.assert_close(pixel_shuffle(x, 2), ref)
    assert pixel_shuffle(x, 4).shape == (2, 4, 192)
    with pytest.raises(ValueError, match="square grid"):
        pixel_shuffle(torch.randn(1, 12, 4), 2)


@pytest.mark.parametrize("kind,tokens", [("linear", 64), ("mlp", 64), ("pixel_shuffle", 16)])
def test_connectors_and_stages(kind, tokens):
    cfg = LlavaConfig.from_preset("tiny", connector=kind)
    model = Llava(cfg)
    assert model.tokens_per_image == tokens == cfg.tokens_per_image
    ids = torch.tensor([model.expand_image_tokens([2, 7, cfg.image_token_id, 8, 9])])
    out = model(ids, torch.randn(1, 3, 48, 48))
    assert out.logits.shape == (1, 4 + tokens, cfg.text.vocab_size)
    assert model.set_stage(1) == sum(p.numel() for p in model.connector.parameters())
    assert model.set_stage(2) == sum(p.numel() for p in [*model.connector.parameters(),
                                                         *model.language_model.parameters()])
    assert build_connector(kind, 64, 32)(torch.randn(1, 64, 64)).shape == (1, tokens, 32)


def test_bad_inputs_name_the_problem():
    from transformers import LlavaConfig as HFLlavaConfig, SiglipVisionConfig

    from vlm_primer.interop.llava import llava_config_from_hf
    with pytest.raises(ValueError, match="only a CLIP vision tower is supported.*'siglip_vision_model'"):
        llava_config_from_hf(HFLlavaConfig(vision_config=SiglipVisionConfig().to_dict()))
    cfg = LlavaConfig.from_preset("tiny")
    model = Llava(cfg)
    one = model.expand_image_tokens([2, 7, cfg.image_token_id, 8])
    pixels = torch.randn(1, 3, 48, 48)
    with pytest.raises(ValueError, match="2 image.*need 128"):           # image count != placeholders
        model(torch.tensor([one]), torch.randn(2, 3, 48, 48))
    with pytest.raises(ValueError, match="no image placeholder"):        # placeholder missing
        model(torch.tensor([[2, 7, 8]]), pixels)
    with pytest.raises(ValueError, match="but no pixel_values"):
        model(torch.tensor([one]))
    with pytest.raises(ValueError, match="expand each with"):            # one <image>, not expanded
        model(torch.tensor([[2, cfg.image_token_id, 8]]), pixels)
    with pytest.raises(ValueError, match="48"):                          # wrong image size
        model(torch.tensor([one]), torch.randn(1, 3, 32, 32))
    long = model.expand_image_tokens([2] + [cfg.image_token_id] * 3 + [7] * 70)
    with pytest.raises(ValueError, match=r"after splicing.*192 image tokens.*longer than.*256"):  # context overflow
        model(torch.tensor([long]), torch.randn(3, 3, 48, 48))
    labels = torch.tensor([one])
    with pytest.raises(ValueError, match="-100 on the image positions"):
        model(torch.tensor([one]), pixels, labels=labels)
    with pytest.raises(ValueError, match="stage must be 1"):
        model.set_stage(3)
    with pytest.raises(ValueError, match="select_layer"):
        LlavaConfig.from_preset("tiny", select_layer=-4)
    with pytest.raises(ValueError, match="connector must be one of"):
        LlavaConfig.from_preset("tiny", connector="c-abstractor")


# --------------------------------------------------------------------------- LLaVA-NeXT (AnyRes)

PINPOINTS = [[32, 64], [64, 32], [64, 64]]


@pytest.fixture(scope="module")
def hf_llava_next():
    return _tiny_hf("LlavaNext", image_grid_pinpoints=PINPOINTS)


def test_best_resolution_matches_transformers():
    from transformers.image_processing_utils import select_best_resolution as reference

    from vlm_primer.backbones import select_best_resolution

    pins = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    for size in [(100, 100), (300, 900), (900, 300), (500, 700), (1200, 400), (20, 2000), (640, 480)]:
        assert select_best_resolution(size, pins) == tuple(reference(size, pins)), size


def test_fitted_size_matches_transformers():
    """The size an image is resized to inside its best resolution, before padding: one side fills the
    target, the other is rounded up, as the processor's ``get_patch_output_size``."""
    import numpy as np
    from transformers.image_processing_utils import get_patch_output_size
    from transformers.image_utils import ChannelDimension

    from vlm_primer.backbones import anyres_tiles, fitted_size

    targets = [(336, 672), (672, 336), (672, 672), (1008, 336), (64, 32), (96, 96)]
    for h, w in [(h, w) for h in range(1, 400, 7) for w in range(1, 400, 11)] + [(333, 500), (480, 640)]:
        for target in targets:
            ref = get_patch_output_size(np.zeros((h, w, 3)), target, ChannelDimension.LAST)
            assert fitted_size((h, w), target) == tuple(ref), (h, w, target)
    # a 45 x 70 image fills 42 of the 64 rows of its 64 x 64 canvas (41.1 rounded up), centred
    tiles = anyres_tiles(torch.ones(3, 45, 70), 32, [[64, 64]])
    canvas = torch.cat([torch.cat([tiles[1], tiles[2]], 2), torch.cat([tiles[3], tiles[4]], 2)], 1)
    assert fitted_size((45, 70), (64, 64)) == (42, 64)
    assert canvas[0, :, 0].gt(0.5).sum() == 42 and canvas[0, 11:53, 0].gt(0.5).all()


def test_anyres_logits_match_transformers(hf_llava_next):
    from vlm_primer.backbones import LlavaNext, anyres_tiles

    ours = llava_from_hf(hf_llava_next).eval()
    assert isinstance(ours, LlavaNext)
    g = torch.Generator().manual_seed(2)
    images = [torch.rand(3, 40, 70, generator=g), torch.rand(3, 70, 40, generator=g)]  # wide, tall: both unpadded
    sizes = [tuple(im.shape[1:]) for im in images]
    tiles = [anyres_tiles(im, 32, PINPOINTS) for im in images]
    counts = [ours.num_image_tokens(s) for s in sizes]
    assert [t.shape for t in tiles] == [(5, 3, 32, 32)] * 2  # base + a 2 x 2 grid (64 x 64 fits both best)
    assert counts == [16 + 4 * (8 + 1), 16 + 8 * (4 + 1)]  # the padded half of the 8 x 8 map goes; a newline per row
    rows = [ours.expand_image_tokens([1, 7, IMG, 9, 10], [n]) for n in counts]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = (torch.arange(width)[None] < torch.tensor([len(r) for r in rows])[:, None]).long()
    pixel_values, image_sizes = torch.stack(tiles), torch.tensor(sizes)
    with torch.no_grad():
        want = hf_llava_next(input_ids=ids, attention_mask=mask, pixel_values=pixel_values, image_sizes=image_sizes)
        got = ours(ids, pixel_values, attention_mask=mask, image_sizes=image_sizes)
    torch.testing.assert_close(got.logits[mask.bool()], want.logits[mask.bool()], atol=1e-5, rtol=1e-5)
    back = llava_to_hf(ours)
    newline = "model.image_newline"
    torch.testing.assert_close(back.state_dict()[newline], hf_llava_next.state_dict()[newline])
    with pytest.raises(ValueError, match="needs image_sizes"):
        ours(ids, pixel_values, attention_mask=mask)
    with pytest.raises(ValueError, match="needs 5 tiles"):
        ours(ids, [t[:2] for t in tiles], attention_mask=mask, image_sizes=image_sizes)


def test_presets_build_and_anyres_token_counts_match_the_processor():
    """Every preset is a valid config (the base one is LLaVA-1.5-7B's shapes, vocabulary 32,064 with <image> at
    32,000), and LLaVA-NeXT-7B's image-token count per image size equals LlavaNextProcessor's."""
    from types import SimpleNamespace

    from transformers.models.llava_next.processing_llava_next import LlavaNextProcessor

    for cls in (LlavaConfig, LlavaNextConfig):
        for name in cls.presets():
            cfg = cls.from_preset(name)
            assert cfg.image_token_id < cfg.text.vocab_size
    cfg = LlavaNextConfig.from_preset("base")
    proc = object.__new__(LlavaNextProcessor)  # only its arithmetic: no tokenizer, no files
    proc.image_processor = SimpleNamespace(image_grid_pinpoints=[list(p) for p in cfg.grid_pinpoints])
    proc.patch_size, proc.num_additional_image_tokens = cfg.vision.patch_size, 0
    for size in [(336, 336), (672, 672), (480, 640), (1000, 300), (300, 1000), (777, 555)]:
        assert cfg.num_image_tokens(size) == proc._get_number_of_features(*size, 336, 336), size
    assert cfg.num_image_tokens((672, 672)) == 2928
