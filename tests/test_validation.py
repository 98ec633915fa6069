"""Issue 10's list, case by case: valid input a student produces is accepted, bad input gets a clear
ValueError/TypeError naming the argument, configs check themselves, and the value checks can be
switched off."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlm_primer.contrastive import CLIP, CLIPConfig, Llip, LlipConfig, SigLIP, SigLIPConfig
from vlm_primer.contrastive.losses import ClipLoss, SigLipLoss, clip_loss, siglip_loss
from vlm_primer.nn import DecoderConfig, DecoderLM, TextConfig, TextTransformer, ViTConfig
from vlm_primer.training import TrainConfig
from vlm_primer.utils import default_device
from vlm_primer.validate import check_int, check_mask, check_tokens, validation, value_checks_enabled
from vlm_primer.world import WorldConfig


@pytest.fixture(scope="module")
def text():
    return TextTransformer(TextConfig.from_preset("tiny", depth=1, context_length=8)).eval()


@pytest.fixture(scope="module")
def lm():
    return DecoderLM(DecoderConfig.from_preset("tiny", depth=1, context_length=16, vocab_size=200)).eval()


IDS = torch.tensor([[5, 9, 120, 3], [7, 3, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])


# --------------------------------------------------------------------------- valid input accepted


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_small_integer_dtypes_give_the_int64_result(text, lm, dtype):
    want = text(IDS, MASK).pooled
    assert torch.equal(text(IDS.to(dtype), MASK).pooled, want)
    assert torch.equal(lm(IDS.to(dtype)).logits, lm(IDS).logits)
    assert check_tokens(IDS.to(dtype)).dtype == torch.int64


def test_array_likes_are_converted(text):
    want = text(IDS, MASK).pooled
    assert torch.equal(text(IDS.numpy().astype(np.uint8), MASK.numpy()).pooled, want)
    assert torch.equal(text(IDS.tolist(), MASK.tolist()).pooled, want)
    assert torch.equal(text(IDS, MASK.bool()).pooled, want)
    assert torch.equal(text(IDS, MASK.float()).pooled, want)


def test_a_small_dtype_is_range_checked_in_a_wide_dtype(text):
    # 200 in uint8 is a valid id; in int8 it would wrap to -56. 250 is valid for vocab 1024.
    assert text(torch.full((1, 3), 250, dtype=torch.uint8)).pooled.shape == (1, 64)
    with pytest.raises(ValueError, match=r"input_ids has ids outside \[0, 1024\): min 0, max 5000"):
        text(np.array([[0, 5000]], dtype=np.int16))


# --------------------------------------------------------------------------- raw errors now clear


def test_empty_sequences_and_batches(text, lm):
    with pytest.raises(ValueError, match=r"input_ids holds empty sequences \(shape \(2, 0\)\)"):
        text(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty sequences"):
        lm(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="inputs_embeds is empty"):
        lm(inputs_embeds=torch.zeros(2, 0, 64))
    with pytest.raises(ValueError, match=r"input_ids holds empty sequences \(shape \(2, 0\)\)"):
        text([[], []])  # what a tokenizer returns for two empty captions without <eos>
    with pytest.raises(ValueError, match="input_ids is an empty batch"):
        text(torch.zeros(0, 3, dtype=torch.long))


def test_bad_array_likes_name_the_argument(text):
    with pytest.raises(TypeError, match="input_ids must be a .* token ids; the list given cannot be converted"):
        text([[1, 2], [3]])
    with pytest.raises(TypeError, match="attention_mask must be .*0/1.*the list given cannot be converted: its "
                                        "elements are str"):
        text(IDS, [["a"] * 4] * 2)
    with pytest.raises(TypeError, match="input_ids must be an integer tensor of token ids, got dtype torch.float32"):
        text(IDS.float())
    with pytest.raises(TypeError, match="input_ids must be .*, got str"):
        text("a red circle")


@pytest.mark.parametrize("cls,field", [(ViTConfig, "patch_size"), (ViTConfig, "heads"), (TextConfig, "heads"),
                                       (DecoderConfig, "heads"), (LlipConfig, "heads")])
def test_zero_sizes_fail_in_the_config_not_in_a_division(cls, field):
    with pytest.raises(ValueError, match=f"{cls.__name__}.{field} must be a positive int, got 0"):
        cls(**{field: 0})


# --------------------------------------------------------------------------- silent garbage refused


@pytest.mark.parametrize("bad", [0.5, 2, -1])
def test_masks_hold_only_zero_and_one(text, bad):
    mask = MASK.float().clone()
    mask[0, 1] = bad
    with pytest.raises(ValueError, match=f"attention_mask must hold only 0 and 1.*found {float(bad)!r}"):
        text(IDS, mask)


def test_all_zero_mask_rows_are_refused(text, lm):
    mask = MASK.clone()
    mask[1] = 0
    with pytest.raises(ValueError, match="attention_mask row 1 is all zeros"):
        text(IDS, mask)
    with pytest.raises(ValueError, match="attention_mask row 1 is all zeros"):
        lm(IDS, attention_mask=mask)
    with pytest.raises(ValueError, match="attention_mask row 1 is all zeros"):
        lm.generate(IDS, 2, attention_mask=mask)


@pytest.mark.parametrize("cls,field,value", [
    (ViTConfig, "image_size", 0), (ViTConfig, "depth", -1), (TextConfig, "context_length", 0),
    (TextConfig, "vocab_size", 0), (DecoderConfig, "vocab_size", 0), (ViTConfig, "dropout", 1.0),
    (CLIPConfig, "embed_dim", 0), (WorldConfig, "image_size", 8),
])
def test_configs_refuse_non_positive_sizes(cls, field, value):
    with pytest.raises(ValueError, match=f"{cls.__name__}.{field} must be .*got {value!r}"):
        cls(**{field: value})


@pytest.mark.parametrize("field", ["init_logit_scale", "init_logit_bias"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_siglip_scale_and_bias_must_be_finite(field, value):
    with pytest.raises(ValueError, match=f"SigLIPConfig.{field} must be a finite float, got {value!r}"):
        SigLIPConfig(**{field: value})


def test_losses_refuse_non_finite_scale_and_bias():
    x = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    with pytest.raises(ValueError, match="logit_scale must be finite"):
        SigLipLoss()(x, x, torch.tensor(math.nan), -10.0)
    with pytest.raises(ValueError, match="logit_bias must be finite"):
        SigLipLoss()(x, x, 10.0, math.inf)
    with pytest.raises(ValueError, match="logit_scale must be finite"):
        ClipLoss()(x, x, math.inf)
    with pytest.raises(ValueError, match=r"logits must have shape \(B_img, B_txt\)"):
        siglip_loss(torch.zeros(3))
    with pytest.raises(ValueError, match="not square: pass labels"):
        clip_loss(torch.zeros(3, 4))


@pytest.mark.parametrize("kw,error,message", [
    (dict(lr=math.inf), ValueError, "TrainConfig.lr must be a positive finite float, got inf"),
    (dict(weight_decay=math.nan), ValueError, "TrainConfig.weight_decay must be a non-negative finite float, got nan"),
    (dict(lr="1e-3"), TypeError, "TrainConfig.lr must be a positive finite float, got '1e-3' (str)"),
    (dict(lr=None), TypeError, "TrainConfig.lr must be a positive finite float, got None (NoneType)"),
    (dict(betas=0.9), TypeError, "TrainConfig.betas must be a tuple of 2 values, each a finite float in [0, 1), "
                                 "got 0.9 (float)"),
    (dict(max_steps=10.0), TypeError, "TrainConfig.max_steps must be a positive int, got 10.0 (float)"),
    (dict(progress="yes"), TypeError, "TrainConfig.progress must be True or False, got 'yes' (str)"),
    (dict(device="tpu"), ValueError, "TrainConfig.device must be one of ('auto', 'cpu', 'cuda', 'mps')"),
    (dict(precision="fp8"), ValueError, "TrainConfig.precision must be one of"),
    (dict(on_nonfinite="ignore"), ValueError, "TrainConfig.on_nonfinite must be one of ('raise', 'skip')"),
    (dict(compile="fast"), ValueError, "TrainConfig.compile must be True, False or a torch.compile mode"),
    (dict(compile=1), TypeError, "TrainConfig.compile must be"),
    (dict(num_workers="many"), ValueError, "TrainConfig.num_workers must be a non-negative int or 'auto', got 'many'"),
    (dict(num_workers=-1), ValueError, "TrainConfig.num_workers must be"),
    (dict(max_steps=10**400), ValueError, "TrainConfig.max_steps must be a positive int"),  # beyond any float
    (dict(num_workers=1.5), TypeError, "TrainConfig.num_workers must be a non-negative int or 'auto', got 1.5"),
])
def test_train_config_names_the_field_and_the_type(kw, error, message):
    with pytest.raises(error) as info:
        TrainConfig(**kw)
    assert message in str(info.value)


def test_configs_canonicalise_numbers():
    cfg = TrainConfig(lr=np.float32(0.5), max_steps=np.int64(7), betas=[0.9, 0.95], ckpt_dir=__import__("pathlib").Path("x"))
    assert type(cfg.lr) is float and type(cfg.max_steps) is int and cfg.betas == (0.9, 0.95) and cfg.ckpt_dir == "x"
    assert ViTConfig(mlp_ratio=2).mlp_ratio == 2.0 and type(ViTConfig(mlp_ratio=2).mlp_ratio) is float


def test_unavailable_devices_are_named():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda' asked for, but no CUDA GPU is available"):
            default_device("cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        default_device("gpu")


@pytest.mark.parametrize("model_cls,cfg_cls", [(CLIP, CLIPConfig), (SigLIP, SigLIPConfig), (Llip, LlipConfig)])
def test_contrastive_models_accept_array_likes_and_small_dtypes(model_cls, cfg_cls):
    torch.manual_seed(0)
    model = model_cls(cfg_cls.from_preset("tiny")).eval()
    pixels = torch.rand(2, 3, 64, 64)
    want = model(pixels, IDS, MASK).logits_per_image
    assert torch.allclose(model(pixels, IDS.to(torch.uint8).numpy(), MASK.tolist()).logits_per_image, want)
    with pytest.raises(ValueError, match="attention_mask must hold only 0 and 1"):
        model(pixels, IDS, MASK * 2)


# --------------------------------------------------------------------------- the switch


def test_value_checks_can_be_switched_off(text):
    bad = torch.tensor([[1, 2, 2000]])
    assert value_checks_enabled()
    with validation(False):
        assert not value_checks_enabled()
        check_tokens(bad, vocab_size=1024)  # not read: no error, no synchronisation
        check_mask(torch.zeros(1, 3), shape=(1, 3))
        with pytest.raises(ValueError, match="input_ids must have shape"):  # structure is always checked
            check_tokens(torch.ones(3, dtype=torch.long))
    assert value_checks_enabled()
    with pytest.raises(ValueError, match="outside"):
        check_tokens(bad, vocab_size=1024)


def test_check_int_takes_integers_in_range_and_names_the_rest():
    assert check_int(3, "steps") == 3 and type(check_int(np.int64(3), "steps")) is int
    assert check_int(0, "seed", 0) == 0 and check_int(64, "num_frames", 2, 64) == 64
    assert check_int(-5, "offset", None) == -5
    for bad in (2.0, True, "3", None, torch.tensor(3)):
        with pytest.raises(TypeError, match=r"steps must be an int >= 1, got .* \("):
            check_int(bad, "steps")
    with pytest.raises(ValueError, match=r"^seed must be an int >= 0, got -1$"):
        check_int(-1, "seed", 0)
    with pytest.raises(ValueError, match=r"^k must be an int in \[1, 9\] \(at most num_frames\), got 10$"):
        check_int(10, "k", 1, 9, hint="at most num_frames")
    with pytest.raises(ValueError, match=r"^n must be an int <= 4, got 5$"):
        check_int(5, "n", None, 4)
