"""The compute calculator (chapter 06): analytic FLOPs against torch's FlopCounterMode on the real models, memory
against the real parameters, the budget's arithmetic and monotonicity, the survey's claims, and bad input.

FlopCounterMode counts matmuls, convolutions and attention; on CPU it does not know the fused SDPA kernel
(``_scaled_dot_product_flash_attention_for_cpu``), so the counts run under the MATH backend, whose ``QKᵀ`` and
``AV`` are plain ``bmm``s. Neither count includes elementwise work (norms, GELU, softmax). The tolerance is
``REL = 1e-4``: the only gap is the ``B x B`` similarity matrix, which our models compute twice (returned logits
and loss) and the calculator once; measured 1.1e-5 (tiny), 1.5e-6 (small) and 2.5e-8 (base, batch 1) forward,
3.8e-6 / 4.9e-7 / 8e-9 training. Each tower alone (``encode_image``, ``encode_text``) matches exactly.
"""

import math

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from vlm_primer.contrastive import CLIP, CLIPConfig, SigLIP, SigLIPConfig
from vlm_primer.masking.mae import MAE, MAEConfig
from vlm_primer.nn import DecoderConfig, DecoderLM
from vlm_primer.recipes.compute import GPUS, budget, clip_vit_l14, flops, memory, survey_claims

REL = 1e-4
B = 4


def counted(fn) -> int:
    """FLOPs that FlopCounterMode sees while ``fn()`` runs, attention through the MATH (bmm) kernel."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def pair_batch(cfg, b=B):
    gen = torch.Generator().manual_seed(0)
    n = cfg.text.context_length
    pixels = torch.rand(b, 3, cfg.vision.image_size, cfg.vision.image_size, generator=gen)
    ids = torch.randint(4, 500, (b, n), generator=gen)
    ids[:, -3], ids[:, -2:] = cfg.text.eos_token_id, cfg.text.pad_token_id
    mask = (torch.arange(n) < n - 2).long().expand(b, -1).clone()
    return pixels, ids, mask


MODELS = [(CLIP, CLIPConfig, "tiny"), (CLIP, CLIPConfig, "small"), (SigLIP, SigLIPConfig, "tiny"),
          (SigLIP, SigLIPConfig, "small")]  # "base": forward only, below (a training step takes ~7 s on a CPU)


@pytest.mark.parametrize("model_cls,cfg_cls,preset", MODELS, ids=[f"{m.__name__}-{p}" for m, _, p in MODELS])
def test_flops_match_flop_counter(model_cls, cfg_cls, preset):
    cfg = cfg_cls.from_preset(preset)
    model = model_cls(cfg)
    pixels, ids, mask = pair_batch(cfg)
    assert counted(lambda: model(pixels, ids, mask)) == pytest.approx(flops(cfg, B, train=False).total, rel=REL)
    assert counted(lambda: model(pixels, ids, mask).loss.backward()) == pytest.approx(flops(model, B).total, rel=REL)
    # per tower: the image tower (with its projection) is encode_image, the text tower encode_text; exact
    for kw, run in [(dict(texts=False), lambda: model.encode_image(pixels)),
                    (dict(images=False), lambda: model.encode_text(ids, mask))]:
        assert counted(run) == flops(cfg, B, train=False, **kw).total
        assert counted(lambda: run().sum().backward()) == flops(cfg, B, **kw).total
    # the matmul weights the count uses are exactly the model's Linear and Conv2d weights
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    assert flops(cfg, B).params == weights


def test_flops_match_flop_counter_at_clip_b16():
    """OpenAI CLIP ViT-B/16 (the "base" preset), forward only on one pair: ~3 s on a CPU (training would be ~7 s)."""
    cfg = CLIPConfig.from_preset("base")
    model = CLIP(cfg)
    pixels, ids, mask = pair_batch(cfg, 1)
    with torch.no_grad():
        assert counted(lambda: model(pixels, ids, mask)) == pytest.approx(flops(cfg, 1, train=False).total, rel=REL)


def test_masking_matches_mae_encoder_and_decoder_lms_match():
    cfg = MAEConfig.from_preset("tiny")
    mae, pixels = MAE(cfg), torch.rand(B, 3, 48, 48)
    for ratio in (0.0, 0.5, 0.75):
        got = counted(lambda: mae.encode(pixels, mask_ratio=ratio))
        assert got == flops(cfg.encoder, B, train=False, mask_ratio=ratio).total
    assert flops(cfg.encoder, B, mask_ratio=0.75).total < flops(cfg.encoder, B).total / 3
    for preset in ("tiny", "llama_tiny"):  # GPT-2 style, and Llama style (grouped-query attention, SwiGLU)
        dcfg = DecoderConfig.from_preset(preset)
        lm, ids = DecoderLM(dcfg), torch.randint(0, dcfg.vocab_size, (2, dcfg.context_length))
        assert counted(lambda: lm(ids)) == pytest.approx(flops(dcfg, 2, train=False).total, rel=REL)
        assert counted(lambda: lm(ids, labels=ids).loss.backward()) == pytest.approx(flops(lm, 2).total, rel=REL)


def test_six_n_d_at_scale():
    """At CLIP scale the count is 6·N·D plus a few per cent of attention."""
    count = flops(clip_vit_l14(), 1)
    six_nd = sum(6 * p.params * p.tokens for p in count.parts.values())
    assert 1.0 < count.total / six_nd < 1.06
    assert "vision" in str(count) and "attention" in str(count)


def test_memory_matches_parameters():
    cfg = CLIPConfig.from_preset("small")
    model = CLIP(cfg)
    n = sum(p.numel() for p in model.parameters())
    bf16, fp32 = memory(cfg, 8), memory(model, 8, precision="fp32")
    assert bf16.params == fp32.params == n
    assert (bf16.weights, bf16.grads, bf16.optimizer) == (2 * n, 2 * n, 12 * n)  # + fp32 master, m, v
    assert (fp32.weights, fp32.grads, fp32.optimizer) == (4 * n, 4 * n, 8 * n)
    assert memory(cfg, 8, optimizer="sgd").optimizer == 8 * n and memory(cfg, 8, optimizer="none").optimizer == 0
    assert bf16.states == fp32.states == 16 * n
    for part, act in bf16.activations.items():
        assert act == fp32.activations[part] / 2
        assert memory(cfg, 8, checkpointing=True).activations[part] < act
        assert memory(cfg, 16).activations[part] == 2 * act
    assert memory(cfg, 8, mask_ratio=0.5).activations["vision"] < bf16.activations["vision"]
    assert "GiB" in str(bf16)


def test_budget_arithmetic_and_monotonicity():
    cfg = CLIPConfig.from_preset("base")
    b = budget(cfg, 4096, 1e9, gpu="H100-80GB", mfu=0.35)
    assert b.flops == pytest.approx(flops(cfg, 4096).total * 1e9 / 4096, rel=1e-12)
    assert b.gpu_hours == pytest.approx(b.flops / (GPUS["H100-80GB"].tflops * 1e12 * 0.35) / 3600, rel=1e-12)
    assert budget(cfg, 4096, 1e9, precision="fp32").gpu_hours == pytest.approx(
        budget(cfg, 4096, 1e9).gpu_hours * 312 / 156)
    # the fewest GPUs that hold the states and their share of the batch: one fewer would not
    mem, cap = b.memory, GPUS["H100-80GB"].memory_gib * 2**30
    per_sample = sum(mem.activations.values()) / 4096
    assert mem.states + per_sample * math.ceil(4096 / b.min_gpus) <= cap
    assert b.min_gpus == 1 or mem.states + per_sample * math.ceil(4096 / (b.min_gpus - 1)) > cap
    assert budget(cfg, 4096, 1e9, gpu="H100-80GB", checkpointing=True).min_gpus < b.min_gpus
    gpus = [budget(cfg, 4096, 1e10, days=d).gpus for d in (0.5, 1, 2, 4, 8)]
    assert gpus == sorted(gpus, reverse=True) and gpus[0] > gpus[-1]
    for d in (0.5, 1, 2):
        short = budget(cfg, 4096, 1e10, days=d)
        assert short.days_on(short.gpus) <= d
    assert budget(cfg, 4096, 1e9, mask_ratio=0.5).flops < budget(cfg, 4096, 1e9).flops
    assert budget(cfg, 4096, 1e9, mfu=0.5).gpu_hours < budget(cfg, 4096, 1e9, mfu=0.4).gpu_hours
    assert "GPU-hours" in str(b) and b.table() == str(b)


def test_survey_claims():
    clip_scale, curated = survey_claims()
    assert clip_scale["gpus"] >= 100 and curated["gpus"] <= 128  # hundreds vs. order 64
    assert curated["train_flops"] < clip_scale["train_flops"] / 5
    assert 0 < clip_scale["paper_mfu"] < 1
    for row in (clip_scale, curated):
        assert row["gpus"] == budget(clip_vit_l14(), **{k: row[k] for k in (
            "batch", "samples_seen", "gpu", "mfu", "days", "precision")}, mask_ratio=row.get("mask_ratio", 0.0),
            checkpointing=True).gpus
        assert "samples seen" in row["assumptions"] and row["gpu"] in row["assumptions"]


def test_bad_input():
    cfg = CLIPConfig.from_preset("tiny")
    for bad, error in ((0, ValueError), (-2, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="batch must be an int >= 1"):
            flops(cfg, bad)
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        memory(cfg, 4, precision="int8")
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        memory(cfg, 4, optimizer="lion")
    with pytest.raises(ValueError, match=r"unknown GPU 'TPU'.*A100-80GB"):
        budget(cfg, 4, 100, gpu="TPU")
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match="mfu must lie in"):
            budget(cfg, 4, 100, mfu=bad)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="mask_ratio must lie in"):
            flops(cfg, 4, mask_ratio=bad)
    with pytest.raises(ValueError, match="keeps no patch"):
        flops(cfg, 4, mask_ratio=0.99)
    with pytest.raises(ValueError, match="samples_seen must be"):
        budget(cfg, 4, 0)
    with pytest.raises(ValueError, match="days must be"):
        budget(cfg, 4, 100, days=0)
    with pytest.raises(ValueError, match="no bf16"):
        budget(cfg, 4, 100, gpu="V100")
    with pytest.raises(ValueError, match="nothing to count"):
        flops(cfg, 4, images=False, texts=False)
    with pytest.raises(ValueError, match="do not fit"):
        budget(DecoderConfig.from_preset("llama_7b"), 8, 1e6, gpu="A100-40GB")
    for bad in ("clip", nn.Linear(2, 2), None):
        with pytest.raises(TypeError, match="cannot count"):
            flops(bad, 4)
    with pytest.raises(TypeError, match="cannot count"):
        memory(object(), 4)


def _saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward pass of ``module(x)``, each tensor once, weights left out."""
    weights = {p.data_ptr() for p in module.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in weights:
            kept[t.data_ptr()] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(kept.values())


def test_activation_memory_counts_what_the_mlp_keeps():
    """SwiGLU keeps 4r bytes per token and width more than GELU (its up projection and the gate's SiLU):
    the formula's difference between the two MLPs equals what autograd really saves."""
    from vlm_primer.nn import MLP

    cfg = DecoderConfig.from_preset("llama_tiny")
    s, b, m = cfg.context_length, 2, cfg.mlp_dim
    x = torch.randn(b, s, cfg.dim, dtype=torch.bfloat16, requires_grad=True)
    kept = {act: _saved_bytes(MLP(cfg.dim, m, act, bias=False).to(torch.bfloat16), x) for act in ("gelu", "swiglu")}
    assert kept["gelu"] == 2 * s * b * (cfg.dim + 2 * m)  # the input, fc1's output, the GELU's output
    gelu = cfg.replace(act="gelu")
    formula = memory(cfg, b).activations["decoder"] - memory(gelu, b).activations["decoder"]
    assert formula == cfg.depth * (kept["swiglu"] - kept["gelu"]) == cfg.depth * 4 * s * b * m
