"""Chapter 06b's training entry points: ``python -m vlm_primer.train dpo`` (a policy and its frozen reference as one
module the Trainer trains) and ``--peft`` on any recipe (adapters on the trainable linear layers, the connector kept
whole), a few steps each at the tiny preset, with their bad input."""

from __future__ import annotations

import contextlib
import io
import math
import re

import pytest
import torch
from torch import nn

from vlm_primer import zoo
from vlm_primer.recipes import alignment as A
from vlm_primer.recipes.peft import LoRALinear, VeRALinear, apply_peft, trainable_parameters
from vlm_primer.recipes.quant import NF4Linear

COMMON = ["--preset", "tiny", "--batch-size", "4", "--steps", "2", "--no-progress", "--device", "cpu",
          "--precision", "fp32", "--set", "train_size=16"]


def test_dpo_model_is_dpo_step_and_keeps_its_reference_frozen():
    policy = zoo.load("llava-tiny")
    policy.set_stage(2)
    model = A.DPOModel(policy, beta=0.2).train()
    assert not model.reference.training and all(not p.requires_grad for p in model.reference.parameters())
    batch = A.dpo_collate(policy.tokens_per_image, transform=zoo.preprocess("llava-tiny"))(
        A.preference_pairs(4, seed=0))
    out = model(**batch)
    want = A.dpo_step(policy, model.reference, batch, 0.2)
    torch.testing.assert_close(out.loss, want["loss"])
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-5)  # policy = reference at the start
    out.loss.backward()
    assert all(p.grad is None for p in model.reference.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="loss_type"):
        A.DPOModel(policy, loss_type="kto")
    with pytest.raises(ValueError, match="beta"):
        A.DPOModel(policy, beta=0)
    with pytest.raises(TypeError, match="policy"):
        A.DPOModel("llava")


def _trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method, kind", [("lora", LoRALinear), ("dora", LoRALinear), ("qlora", LoRALinear),
                                          ("vera", VeRALinear)])
def test_apply_peft_adapts_the_trainable_linears_and_keeps_the_connector_whole(method, kind):
    model = zoo.load("llava-tiny")
    model.set_stage(2)  # the tower frozen: it must get no adapter
    before = _trainable_names(model)
    apply_peft(model, method, r=2)
    after = _trainable_names(model)
    connector = {n for n in before if n.startswith("connector.")}
    assert connector and connector <= after  # trained in full, as LLaVA-1.5's LoRA recipe does
    assert not any(n.startswith("vision.") for n in after)
    adapted = [n for n, m in model.named_modules() if isinstance(m, kind)]
    assert adapted and all(n.startswith("language_model.") for n in adapted)
    assert not any(type(m) is nn.Linear and m.weight.requires_grad for n, m in model.named_modules()
                   if n.startswith("language_model."))
    if method == "qlora":
        assert all(isinstance(model.get_submodule(n).base, NF4Linear) for n in adapted)
    if method == "dora":
        assert all(model.get_submodule(n).use_dora for n in adapted)
    assert trainable_parameters(model) < sum(p.numel() for p in model.parameters()) / 5


def test_apply_peft_bad_input():
    model = zoo.load("llava-tiny")
    with pytest.raises(ValueError, match="method must be one of"):
        apply_peft(model, "prefix", 4)
    with pytest.raises(ValueError, match="r must be an int >= 1"):
        apply_peft(model, "lora", 0)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable nn.Linear"):
        apply_peft(model, "lora", 4)


def test_cli_dpo_and_peft(capsys, tmp_path):
    from vlm_primer.train import main

    h = main(["dpo", *COMMON, "--set", "beta=0.1", "--ckpt-dir", str(tmp_path / "dpo"), "--ckpt-every", "2"])
    assert h[-1]["step"] == 2 and h[-1]["loss"] == pytest.approx(math.log(2), abs=1e-2)  # two small steps from log 2
    h = main(["dpo", *COMMON, "--set", f"init={tmp_path / 'dpo'}", "--peft", "lora", "--peft-r", "2"])
    assert h[-1]["step"] == 2 and math.isfinite(h[-1]["loss"])
    h = main(["dpo", *COMMON, "--set", f"init={zoo.ZOO_DIR / 'llava-tiny.safetensors'}"])  # a LLaVA's weights
    assert h[-1]["loss"] == pytest.approx(math.log(2), abs=1e-2)
    assert "--peft lora (r=2)" in capsys.readouterr().out
    h = main(["llava", *COMMON, "--stage", "2", "--peft", "qlora", "--peft-r", "2"])
    assert h[-1]["step"] == 2 and math.isfinite(h[-1]["loss"])
    with pytest.raises(SystemExit, match="^2$"), contextlib.redirect_stderr(io.StringIO()) as err:
        main(["dpo", *COMMON, "--set", "stage=2"])
    assert re.search(r"unknown --set option\(s\) \['stage'\]", err.getvalue()), err.getvalue()
    with pytest.raises(SystemExit):
        main(["dpo", *COMMON, "--peft", "prefix"])
