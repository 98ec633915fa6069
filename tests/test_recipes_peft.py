"""Chapter 06b's parameter-efficient fine-tuning against ``peft``: LoRA, DoRA and VeRA built into the same models by
``peft.get_peft_model`` and by ours, the same randomised (non-zero) adapter weights copied across, then outputs,
gradients, trainable-parameter counts, initial values and merged weights compared; merge/unmerge round trips; bad
input; QLoRA's NF4 code table (derived from normal quantiles, equal to the paper's) and round-trip error bounds."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from vlm_primer.contrastive.clip import CLIP, CLIPConfig
from vlm_primer.nn.transformer import TransformerBlock
from vlm_primer.recipes import peft as P
from vlm_primer.recipes import quant as Q

peft = pytest.importorskip("peft")
from peft import LoraConfig, VeraConfig, get_peft_model  # noqa: E402

TOL = 1e-6


# --- models and inputs -----------------------------------------------------------------------------------------

def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.GELU(), nn.Linear(16, 24, bias=False), nn.GELU(), nn.Linear(24, 5))


def _block() -> nn.Module:
    torch.manual_seed(1)
    return TransformerBlock(32, heads=4, causal=True)


def _clip() -> nn.Module:
    torch.manual_seed(2)
    return CLIP(CLIPConfig.from_preset("tiny"))


MODELS = {
    "mlp": (_mlp, ["0", "2", "4"], lambda m, x: m(x), lambda: torch.randn(7, 12)),
    "block": (_block, ["q", "k", "v", "out", "fc1", "fc2"], lambda m, x: m(x), lambda: torch.randn(2, 9, 32)),
    # both towers of CLIP, and the text projection; the output is the (unnormalised) text and image embeddings
    "clip": (_clip, ["q", "v", "out", "fc2", "text_projection"],
             lambda m, x: torch.cat([m.encode_text(x[0], normalize=False), m.encode_image(x[1], normalize=False)]),
             lambda: (torch.randint(4, 1024, (3, 10)), torch.randn(3, 3, 64, 64))),
}


def _pair(kind: str):
    """Our model, peft's copy of the same model, target names, a forward function and an input."""
    build, targets, run, data = MODELS[kind]
    ours = build()
    theirs = copy.deepcopy(ours)
    torch.manual_seed(3)
    return ours, theirs, targets, run, data()


def _adapted(ours: nn.Module, cls) -> list[str]:
    names = [n for n, m in ours.named_modules() if isinstance(m, cls)]
    assert names
    return names


def _peft_layer(theirs, name: str):
    return theirs.base_model.model.get_submodule(name)


def _randomise_lora(ours, theirs, g: torch.Generator) -> None:
    """Random non-zero A, B (and DoRA magnitude), written into peft's layers and copied into ours."""
    with torch.no_grad():
        for name in _adapted(ours, P.LoRALinear):
            mine, layer = ours.get_submodule(name), _peft_layer(theirs, name)
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            a.copy_(torch.randn(a.shape, generator=g) * 0.3)
            b.copy_(torch.randn(b.shape, generator=g) * 0.3)
            mine.A.copy_(a)
            mine.B.copy_(b)
            if mine.use_dora:
                mag = layer.lora_magnitude_vector["default"].weight
                mag.mul_(1 + 0.5 * torch.rand(mag.shape, generator=g))
                mine.m.copy_(mag)


def _randomise_vera(ours, theirs, g: torch.Generator) -> None:
    with torch.no_grad():
        for name in _adapted(ours, P.VeRALinear):
            mine, layer = ours.get_submodule(name), _peft_layer(theirs, name)
            d, b = layer.vera_lambda_d["default"], layer.vera_lambda_b["default"]
            d.copy_(torch.randn(d.shape, generator=g))
            b.copy_(torch.randn(b.shape, generator=g))
            mine.lambda_d.copy_(d)
            mine.lambda_b.copy_(b)


def _lora_pair(kind: str, use_dora: bool, r: int = 4, alpha: float = 8, dropout: float = 0.0):
    ours, theirs, targets, run, x = _pair(kind)
    P.apply_lora(ours, targets, r=r, alpha=alpha, dropout=dropout, use_dora=use_dora)
    theirs = get_peft_model(theirs, LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout,
                                               use_dora=use_dora))
    return ours, theirs, targets, run, x


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> None:
    assert a.shape == b.shape
    err = (a - b).abs().max().item()
    assert err <= tol, err


def _close_rel(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> None:
    """Within ``tol`` of the output's scale: ``W x + s·BA x`` and ``(W + s·BA) x`` round differently, so a merged
    layer agrees with the unmerged one to float32 rounding of the output's size, not bit for bit."""
    _close(a, b, tol * max(1.0, b.abs().max().item()))


# --- LoRA and DoRA against peft --------------------------------------------------------------------------------

@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
@pytest.mark.parametrize("kind", list(MODELS))
def test_lora_and_dora_equal_peft(kind, use_dora):
    ours, theirs, targets, run, x = _lora_pair(kind, use_dora)
    ours.eval(), theirs.eval()
    names = _adapted(ours, P.LoRALinear)
    peft_names = [n.removeprefix("base_model.model.") for n, m in theirs.named_modules()
                  if isinstance(m, peft.tuners.lora.Linear)]
    assert names == peft_names  # the same layers were adapted
    assert P.trainable_parameters(ours) == theirs.get_nb_trainable_parameters()[0]
    with torch.no_grad():
        for name in names:  # initial values: B = 0 and, for DoRA, the magnitude is ||W||_row exactly as peft's
            mine, layer = ours.get_submodule(name), _peft_layer(theirs, name)
            assert torch.equal(mine.B, torch.zeros_like(mine.B)) and mine.scale == layer.scaling["default"]
            assert mine.A.abs().max() <= 1 / math.sqrt(mine.base.in_features)  # kaiming_uniform(a=sqrt(5)) bound
            if use_dora:
                assert torch.equal(mine.m, layer.lora_magnitude_vector["default"].weight)
        fresh = run(ours, x)
        with theirs.disable_adapter():
            _close(fresh, run(theirs, x))  # a fresh adapter changes nothing (DoRA: up to the norm's rounding)
        _randomise_lora(ours, theirs, torch.Generator().manual_seed(4))
        out, ref = run(ours, x), run(theirs, x)
    assert (out - fresh).abs().max() > 1e-2  # the randomised adapter matters
    _close(out, ref)


@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
def test_gradients_equal_peft_and_reach_only_the_adapters(use_dora):
    ours, theirs, targets, run, x = _lora_pair("block", use_dora)
    _randomise_lora(ours, theirs, torch.Generator().manual_seed(5))
    run(ours, x).pow(2).sum().backward()
    run(theirs, x).pow(2).sum().backward()
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in ours.named_parameters() if p.grad is not None}
    assert trainable == {f"{n}.{k}" for n in _adapted(ours, P.LoRALinear) for k in (["A", "B"] + ["m"] * use_dora)}
    for name in _adapted(ours, P.LoRALinear):
        mine, layer = ours.get_submodule(name), _peft_layer(theirs, name)
        assert mine.base.weight.grad is None
        _close(mine.A.grad, layer.lora_A["default"].weight.grad, 1e-5)
        _close(mine.B.grad, layer.lora_B["default"].weight.grad, 1e-5)
        if use_dora:  # the norm ||W + s·BA|| is detached in both, so the gradients agree
            _close(mine.m.grad, layer.lora_magnitude_vector["default"].weight.grad, 1e-5)


@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
def test_dropout_in_training_equals_peft(use_dora):
    ours, theirs, targets, run, x = _lora_pair("mlp", use_dora, dropout=0.3)
    _randomise_lora(ours, theirs, torch.Generator().manual_seed(6))
    ours.train(), theirs.train()
    torch.manual_seed(7)
    out = run(ours, x)
    torch.manual_seed(7)
    ref = run(theirs, x)
    _close(out, ref)
    ours.eval()
    assert (run(ours, x) - out).abs().max() > 1e-3  # dropout was on


@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
def test_merge_equals_forward_and_peft_and_unmerge_restores(use_dora):
    ours, theirs, targets, run, x = _lora_pair("block", use_dora)
    _randomise_lora(ours, theirs, torch.Generator().manual_seed(8))
    ours.eval()
    names = _adapted(ours, P.LoRALinear)
    original = {n: ours.get_submodule(n).base.weight.clone() for n in names}
    with torch.no_grad():
        out = run(ours, x)
        P.merge_adapters(ours)
        assert all(ours.get_submodule(n).merged for n in names)
        _close_rel(run(ours, x), out)
        P.merge_adapters(ours)  # merging twice does nothing
        _close_rel(run(ours, x), out)
        merged = {n: ours.get_submodule(n).base.weight.clone() for n in names}
        plain = theirs.merge_and_unload()
        for n in names:
            _close(merged[n], plain.get_submodule(n).weight)
            assert (merged[n] - original[n]).abs().max() > 1e-3
        P.unmerge_adapters(ours)
        for n in names:
            _close(ours.get_submodule(n).base.weight, original[n])
        _close_rel(run(ours, x), out)
        P.merge_adapters(ours, unload=True)
        assert not _has_adapters(ours) and all(type(ours.get_submodule(n)) is nn.Linear for n in names)
        _close_rel(run(ours, x), out)


def _has_adapters(model) -> bool:
    return any(isinstance(m, (P.LoRALinear, P.VeRALinear)) for m in model.modules())


# --- VeRA against peft -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(MODELS))
def test_vera_equals_peft(kind):
    ours, theirs, targets, run, x = _pair(kind)
    P.apply_vera(ours, targets, r=6, d_initial=0.2, seed=11)
    theirs = get_peft_model(theirs, VeraConfig(r=6, target_modules=targets, d_initial=0.2, projection_prng_key=11))
    ours.eval(), theirs.eval()
    names = _adapted(ours, P.VeRALinear)
    assert P.trainable_parameters(ours) == theirs.get_nb_trainable_parameters()[0]
    assert P.trainable_parameters(ours) == sum(6 + ours.get_submodule(n).base.out_features for n in names)
    first = ours.get_submodule(names[0])
    assert all(ours.get_submodule(n).A is first.A and ours.get_submodule(n).B is first.B for n in names)  # shared
    assert torch.equal(first.A, theirs.base_model.vera_A["default"])  # the same random projections
    assert torch.equal(first.B, theirs.base_model.vera_B["default"])
    for n in names:
        mine, layer = ours.get_submodule(n), _peft_layer(theirs, n)
        assert torch.equal(mine.lambda_d, layer.vera_lambda_d["default"])  # d_initial
        assert torch.equal(mine.lambda_b, layer.vera_lambda_b["default"])  # zeros
    with torch.no_grad():
        _randomise_vera(ours, theirs, torch.Generator().manual_seed(12))
        out, ref = run(ours, x), run(theirs, x)
        _close(out, ref)
        P.merge_adapters(ours)
        _close_rel(run(ours, x), out)
        plain = theirs.merge_and_unload()
        for n in names:
            _close(ours.get_submodule(n).base.weight, plain.get_submodule(n).weight)
        P.unmerge_adapters(ours)
        _close_rel(run(ours, x), out)


def test_vera_gradients_reach_only_the_scaling_vectors():
    ours, _, targets, run, x = _pair("mlp")
    P.apply_vera(ours, targets, r=3)
    run(ours, x).sum().backward()
    grads = {n for n, p in ours.named_parameters() if p.grad is not None}
    assert grads == {f"{n}.{k}" for n in targets for k in ("lambda_d", "lambda_b")}
    assert not any(b.requires_grad for b in ours.buffers())


# --- bad input -------------------------------------------------------------------------------------------------

def test_bad_input_is_named():
    lin = nn.Linear(4, 3)
    for r, error in ((0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="r must be an int >= 1 \\(the adapter rank\\)"):
            P.LoRALinear(lin, r, 8)
    with pytest.raises(ValueError, match="alpha"):
        P.LoRALinear(lin, 2, 0)
    with pytest.raises(ValueError, match="dropout"):
        P.LoRALinear(lin, 2, 4, dropout=1.0)
    with pytest.raises(TypeError, match="nn.Linear"):
        P.LoRALinear(nn.Conv1d(4, 3, 1), 2, 4)
    with pytest.raises(ValueError, match=r"'qq'.*\['fc1', 'fc2', 'k', 'out', 'q', 'v'\]"):
        P.apply_lora(_block(), ["q", "qq"], r=2, alpha=4)
    with pytest.raises(TypeError, match="'ln1'.*not an nn.Linear.*LayerNorm"):
        P.apply_lora(_block(), ["q", "ln1"], r=2, alpha=4)
    with pytest.raises(ValueError, match="r must be"):
        P.apply_vera(_block(), ["q"], r=0)
    with pytest.raises(ValueError, match="target_modules"):
        P.apply_lora(_block(), [], r=2, alpha=4)
    model = P.apply_lora(_block(), "q", r=2, alpha=4)  # one name as a string
    with pytest.raises(TypeError, match="already has an adapter"):
        P.apply_lora(model, "q", r=2, alpha=4)
    with pytest.raises(ValueError, match="A .* and B .* must be"):
        P.VeRALinear(nn.Linear(8, 3), torch.zeros(2, 4), torch.zeros(3, 2))
    with pytest.raises(TypeError, match="floating-point"):
        Q.nf4_quantize(torch.arange(64))
    with pytest.raises(ValueError, match="block_size"):
        Q.nf4_quantize(torch.randn(64), block_size=0)
    with pytest.raises(ValueError, match=r"^absmax_block_size must be an even int .*got 7$"):
        Q.nf4_quantize(torch.randn(64), absmax_block_size=7)
    with pytest.raises(TypeError, match=r"^block_size must be an int >= 1 \(an even number of values\), got 64.0"):
        Q.nf4_quantize(torch.randn(64), block_size=64.0)
    with pytest.raises(ValueError, match="non-finite"):
        Q.nf4_quantize(torch.tensor([1.0, float("nan")]))


# --- QLoRA's NF4 -----------------------------------------------------------------------------------------------

QLORA_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
             -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
             0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
             0.7229568362236023, 1.0]  # QLoRA, appendix E / bitsandbytes' dequantisation kernel


def test_nf4_levels_are_the_papers_and_come_from_normal_quantiles():
    assert Q.NF4.tolist() == QLORA_NF4
    assert torch.equal(Q.normal_float_levels(), Q.NF4)  # 8 positive + 7 negative normal quantiles + an exact zero
    code = Q.dynamic_map()
    assert code.numel() == 256 and torch.equal(code, code.sort().values) and code.unique().numel() == 256
    assert code[-1] == 1 and 0 in code and code[0] > -1 and code.abs().min() == 0
    assert code[code > 0].min() < 1e-6  # dense near zero: the smallest exponent is 1e-6


def _nearest(w: torch.Tensor, absmax: torch.Tensor, block: int) -> torch.Tensor:
    """Brute force: each value replaced by the closest NF4 level times its block's absmax."""
    scale = absmax.repeat_interleave(block)[: w.numel()]
    idx = (w.reshape(-1)[:, None] / scale[:, None] - Q.NF4).abs().argmin(dim=1)
    return (Q.NF4[idx] * scale).view(w.shape)


def test_nf4_round_trip_is_the_nearest_level_and_within_the_bound():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(37, 29, generator=g)  # numel 1073: neither a multiple of 64 nor even
    q = Q.nf4_quantize(w, double_quant=False)
    r = Q.nf4_dequantize(q)
    assert r.shape == w.shape and r.dtype == w.dtype and q.packed.dtype == torch.uint8
    assert q.packed.numel() == math.ceil(w.numel() / 2)  # two 4-bit indices per byte
    absmax = w.reshape(-1).abs().split(64)
    absmax = torch.stack([b.max() for b in absmax])
    assert torch.equal(q.absmax, absmax)
    _close(r, _nearest(w, absmax, 64))
    half_gap = (Q.NF4[1:] - Q.NF4[:-1]).max() / 2
    assert ((r - w).abs() <= half_gap * absmax.repeat_interleave(64)[: w.numel()].view(w.shape) + 1e-7).all()
    grid = Q.NF4[torch.randint(0, 16, (4, 64), generator=g)] * torch.tensor([[0.5], [2.0], [3.0], [1e-3]])
    grid[:, 0] = torch.tensor([0.5, 2.0, 3.0, 1e-3])  # each block reaches its absmax
    _close(Q.nf4_dequantize(Q.nf4_quantize(grid, double_quant=False)), grid, 1e-7)  # levels are stored exactly
    assert torch.equal(Q.nf4_dequantize(Q.nf4_quantize(torch.zeros(3, 70))), torch.zeros(3, 70))
    w16 = w.to(torch.bfloat16)
    assert Q.nf4_dequantize(Q.nf4_quantize(w16)).dtype == torch.bfloat16


def test_double_quantisation_costs_0_127_bits_and_keeps_the_error_small():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(512, 256, generator=g) * 0.02  # 2048 blocks of 64: 8 blocks of 256 constants
    single, double = Q.nf4_quantize(w, double_quant=False), Q.nf4_quantize(w)
    assert single.bits_per_parameter() == 4 + 32 / 64
    # QLoRA's 8/64 + 32/(64·256) ≈ 0.127 bits of constants per weight, plus the 32-bit mean of the absmax constants
    assert double.bits_per_parameter() == 4 + 8 / 64 + 32 / (64 * 256) + 32 / w.numel()
    # the absmax constants come back within half a step of the dynamic map times their block's scale
    code = Q.dynamic_map()
    absmax = Q.dynamic_map()[double.absmax_codes.long()] * double.absmax_scales.repeat_interleave(256)
    absmax = absmax + double.absmax_offset
    step = (code[1:] - code[:-1]).max() / 2 * double.absmax_scales.max()
    assert (absmax - single.absmax).abs().max() <= step + 1e-9
    r1, r2 = Q.nf4_dequantize(single), Q.nf4_dequantize(double)
    rel1, rel2 = ((r1 - w).norm() / w.norm()).item(), ((r2 - w).norm() / w.norm()).item()
    assert rel1 < 0.11 and rel2 < rel1 * 1.01  # double quantisation adds almost nothing
    # NF4 beats plain 4-bit absmax integers (levels -7..7) on normally distributed weights, the paper's point
    blocks = w.reshape(-1, 64)
    s = blocks.abs().amax(dim=1, keepdim=True) / 7
    int4 = ((blocks / s).round().clamp(-7, 7) * s).view(w.shape)
    assert rel1 < 0.9 * ((int4 - w).norm() / w.norm()).item()  # 0.092 against 0.107


def test_qlora_stores_4_bit_weights_and_trains_lora_on_the_dequantised_ones():
    """QLoRA: each targeted layer keeps its weight as NF4 codes (about 4.1 bits per weight, buffers, no gradient),
    computes with the dequantised weight, and LoRA trains on top in full precision."""
    model = _mlp()
    x = torch.randn(5, 12)
    with torch.no_grad():
        ref = model(x)
        fake = copy.deepcopy(model)  # the same numbers by hand: each weight replaced by its NF4 round trip
        for m in fake.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(Q.nf4_dequantize(Q.nf4_quantize(m.weight)))
    P.apply_qlora(model, ["0", "2", "4"], r=2, alpha=4)
    for name in ("0", "2", "4"):
        layer = model.get_submodule(name)
        assert isinstance(layer.base, Q.NF4Linear) and not any(p.requires_grad for p in layer.base.parameters())
        n = layer.base.in_features * layer.base.out_features
        blocks = math.ceil(n / 64)
        # half a byte per weight, one 8-bit code per block of 64, one fp32 scale per 256 codes, the fp32 mean
        assert layer.base.quantized().nbytes == math.ceil(n / 2) + blocks + 4 * math.ceil(blocks / 256) + 4
        assert sum(b.numel() * b.element_size() for b in layer.base.buffers()) == layer.base.quantized().nbytes
    with torch.no_grad():
        _close(model(x), fake(x), 1e-6)  # B = 0: the quantised model itself
        assert (model(x) - ref).norm() < 0.1 * ref.norm()
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert P.trainable_parameters(model) == 2 * (12 + 16) + 2 * (16 + 24) + 2 * (24 + 5)
    with pytest.raises(ValueError, match="cannot merge a LoRA adapter into a 4-bit NF4Linear"):
        P.merge_adapters(model)
    with pytest.raises(TypeError, match="base must be an nn.Linear"):
        P.VeRALinear(model.get_submodule("0").base, *P.vera_projections(2, 12, 16))
    # the stored codes survive a state-dict round trip
    again = P.apply_qlora(_mlp(), ["0", "2", "4"], r=2, alpha=4)
    again.load_state_dict(model.state_dict())
    with torch.no_grad():
        _close(again(x), model(x), 0)

