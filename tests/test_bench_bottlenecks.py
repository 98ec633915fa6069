"""benchmarks/bench_bottlenecks.py: its arms build, train a step and report accuracy, parameters, tokens and time
(the full run, three seeds, is written to benchmarks/results/bottlenecks.json for notebook 05b)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_bottlenecks as bench  # noqa: E402


@pytest.mark.parametrize("arm", ["Qwen resampler", "InstructBLIP", "InstructBLIP, question hidden", "Flamingo",
                                 "Flamingo, no dense layers"])
def test_an_arm_trains_and_reports(arm):
    threads = torch.get_num_threads()
    try:
        out = bench.run((arm, 1, 1))
    finally:
        torch.set_num_threads(threads)
    assert out["arm"] == arm and 0.0 <= out["accuracy"]["vqa_all"] <= 1.0 and out["trainable_params"] > 0
    assert out["visual_tokens_per_image"] == (bench.QUERIES if arm == "Qwen resampler" else 8)
    assert out["input_positions_per_image"] == (1 if arm.startswith("Flamingo") else out["visual_tokens_per_image"])


def test_the_controls_change_only_what_they_claim():
    """The hidden-question InstructBLIP has the same parameters and ignores all but the first instruction token;
    the Flamingo without dense layers keeps every cross-attention weight and adds nothing after it."""
    from vlm_primer.backbones import InstructBlip, InstructBlipConfig
    from vlm_primer.backbones.flamingo import GatedCrossAttentionLayer

    torch.manual_seed(0)
    model = InstructBlip(InstructBlipConfig.from_preset("tiny")).eval()
    pixels, first = torch.rand(2, 3, 48, 48), torch.full((2, 1), 2)
    ids = [torch.cat([first, torch.randint(5, 50, (2, 6))], 1) for _ in range(2)]
    with torch.no_grad():
        sees = [model.image_features(pixels, i, torch.ones_like(i)) for i in ids]
        count = sum(p.numel() for p in model.parameters())
        hidden = bench.question_hidden(model)
        blind = [hidden.image_features(pixels, i, torch.ones_like(i)) for i in ids]
    assert (sees[0] - sees[1]).abs().max() > 1e-4  # the real model reads the question...
    torch.testing.assert_close(blind[0], blind[1], rtol=0, atol=0)  # ...the control cannot
    assert sum(p.numel() for p in hidden.parameters()) == count

    flamingo = bench.build("Flamingo, no dense layers", 0, 0)
    layer = flamingo.gated_layers[0]
    assert isinstance(layer, GatedCrossAttentionLayer) and not any("mlp" in n for n, _ in layer.named_parameters())
    with torch.no_grad():
        layer.alpha_xattn.fill_(1.0)
        x, media = torch.randn(1, 3, flamingo.cfg.text.dim), torch.randn(1, 8, flamingo.cfg.vision.dim)
        mask = torch.ones(1, 3, 8, dtype=torch.bool)
        out = layer(x, media, mask)
        h = layer.xattn(layer.ln_xattn(x), context=media, attn_mask=mask)
    torch.testing.assert_close(out, x + torch.tanh(layer.alpha_xattn) * h)


def test_results_file_has_three_seeds_of_every_arm_at_the_recipes_budget():
    import json

    from vlm_primer.zoo import bottleneck_recipes

    results = json.loads(bench.OUT.read_text())
    assert results["steps"] == {"stage1": bottleneck_recipes.STAGE1_STEPS, "stage2": bottleneck_recipes.STAGE2_STEPS,
                                "batch": 32} and results["queries"] == bench.QUERIES
    for arm in bench.ARMS:
        assert len({r["seed"] for r in results["runs"] if r["arm"] == arm}) >= 3, arm
