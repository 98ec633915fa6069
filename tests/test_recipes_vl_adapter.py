"""Chapter 06b's VL-Adapter: bottleneck adapters after the attention and MLP sub-layers of a language model.

Against the computation written out by hand (every parameter perturbed), the zero-initialised start that leaves the
model unchanged (logits and greedy generation of a LLaVA), per-task adapter sets and their switch, parameter counts
against the formula, gradients that reach only what the caller trains, a short fit, and bad input."""

from __future__ import annotations

import pytest
import torch

from vlm_primer.backbones import Llava
from vlm_primer.backbones.llava import LlavaConfig
from vlm_primer.nn import Transformer
from vlm_primer.recipes.vl_adapter import (AdaptedSublayer, BottleneckAdapter, adapter_parameters, apply_adapters,
                                           set_task)

TOL = 1e-5


def _perturb(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


def _stack(depth: int = 2, dim: int = 32) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(depth, dim, heads=4, causal=True).eval()
    _perturb(model)
    return model


def test_adapted_stack_equals_the_computation_by_hand():
    model = _stack()
    plain = [(b.ln1, b.attn, b.ln2, b.mlp) for b in model.blocks]
    apply_adapters(model, ("a", "b"), reduction=4)
    _perturb(model, seed=1)  # the adapters (up starts at zero) and the base weights move together
    x = torch.randn(2, 5, 32)

    def adapter(a: BottleneckAdapter, y: torch.Tensor) -> torch.Tensor:
        return y + torch.relu(y @ a.down.weight.T + a.down.bias) @ a.up.weight.T + a.up.bias

    for task in ("a", "b"):
        set_task(model, task)
        h = x
        for block, (ln1, attn, ln2, mlp) in zip(model.blocks, plain):
            h = h + adapter(block.attn.adapters[task], attn(ln1(h)))
            h = h + adapter(block.mlp.adapters[task], mlp(ln2(h)))
        torch.testing.assert_close(model(x)[0], h, atol=TOL, rtol=0)
    set_task(model, "a")
    assert not torch.allclose(model(x)[0], set_task(model, "b")(x)[0])  # the two tasks' adapters differ


def _llava() -> Llava:
    torch.manual_seed(0)
    model = Llava(LlavaConfig.from_preset("tiny")).eval()
    _perturb(model)
    return model


def test_zero_initialised_adapters_leave_a_llava_unchanged_logits_and_generation():
    model = _llava()
    ids = torch.tensor([[1] + [model.cfg.image_token_id] * model.tokens_per_image + [7, 8, 9]])
    pixels = torch.randn(1, 3, model.cfg.vision.image_size, model.cfg.vision.image_size)
    before = model(ids, pixels).logits
    gen_before = model.generate(ids, pixels, max_new_tokens=5)
    apply_adapters(model)
    torch.testing.assert_close(model(ids, pixels).logits, before, atol=TOL, rtol=0)
    assert torch.equal(model.generate(ids, pixels, max_new_tokens=5), gen_before)  # the KV cache path too


def test_parameter_counts_follow_the_formula_and_tasks_switch():
    model = _stack(depth=3, dim=32)
    apply_adapters(model, ("vqa", "caption", "ground"), reduction=8)
    per_adapter = 2 * 32 * 4 + 32 + 4  # down (32 -> 4) and up (4 -> 32), with biases
    for task in ("vqa", "caption", "ground"):
        assert sum(p.numel() for p in adapter_parameters(model, task)) == 3 * 2 * per_adapter
    assert sum(p.numel() for p in adapter_parameters(model)) == 3 * 3 * 2 * per_adapter
    assert {s.active for s in model.modules() if isinstance(s, AdaptedSublayer)} == {"vqa"}
    set_task(model, "ground")
    assert {s.active for s in model.modules() if isinstance(s, AdaptedSublayer)} == {"ground"}
    with pytest.raises(KeyError, match="'vqa', 'caption', 'ground'"):
        set_task(model, "ocr")


def test_gradients_reach_the_active_adapters_only_and_a_fit_lowers_the_loss():
    model = _stack()
    apply_adapters(model, ("a", "b"))
    model.train()
    assert not any(p.requires_grad for b in model.blocks for p in (*b.attn.base.parameters(), *b.mlp.base.parameters()))
    for p in model.parameters():
        if p.requires_grad and not any(p is q for q in adapter_parameters(model)):
            p.requires_grad_(False)  # what the caller chooses to train: the adapters alone here
    x, target = torch.randn(4, 6, 32), torch.randn(4, 6, 32)
    opt = torch.optim.AdamW(adapter_parameters(model, "a"), lr=1e-2)
    first = None
    for _ in range(40):
        loss = torch.nn.functional.mse_loss(model(x)[0], target)
        opt.zero_grad()
        loss.backward()
        first = first if first is not None else loss.item()
        assert all(p.grad is None for p in adapter_parameters(model, "b"))
        opt.step()
    assert loss.item() < 0.9 * first


def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="distinct non-empty"):
        apply_adapters(_stack(), ("a", "a"))
    with pytest.raises(ValueError, match="distinct non-empty"):
        apply_adapters(_stack(), ())
    with pytest.raises(TypeError, match="language_model.transformer"):
        apply_adapters(torch.nn.Linear(3, 3))
    model = apply_adapters(_stack())
    with pytest.raises(ValueError, match="already has adapters"):
        apply_adapters(model)
    with pytest.raises(ValueError, match="no adapters"):
        set_task(_stack(), "a")
    with pytest.raises(ValueError, match="reduction"):
        BottleneckAdapter(16, 0)
    with pytest.raises(ValueError, match="no bottleneck"):
        BottleneckAdapter(16, 32)
