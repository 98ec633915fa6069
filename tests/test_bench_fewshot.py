"""benchmarks/bench_fewshot.py: both arms train a step and report few-shot accuracy (the full run, three seeds, is
written to benchmarks/results/fewshot.json for notebook 05b); and the interleaved sequences it trains on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_fewshot as bench  # noqa: E402


def test_interleaved_items_are_few_shot_prompts_with_every_answer_a_target():
    from vlm_primer.backbones import media_mask
    from vlm_primer.backbones.fewshot import InterleavedVQADataset, few_shot_ids
    from vlm_primer.backbones.stages import vqa_set
    from vlm_primer.text import Tokenizer

    tok, qs = Tokenizer.load(), vqa_set(30, split="train")
    data = InterleavedVQADataset(qs, max_shots=3, seed=1)
    ks = set()
    for i in range(12):
        item, shots = data[i], data.shots(i)
        ks.add(len(shots))
        assert i not in shots and item["image"].shape == (4, 3, 48, 48)
        prompt = few_shot_ids(tok, [(qs[j]["question"], qs[j]["answer"]) for j in shots], qs[i]["question"])
        assert item["input_ids"][:len(prompt)] == prompt  # training sequences are laid out as the prompts
        answers = tok.decode([t for t, m in zip(item["input_ids"], item["target"]) if m]).split()
        assert answers[-1] == qs[i]["answer"].split()[-1] and len(answers) >= len(shots) + 1
        mm = media_mask(torch.tensor([item["input_ids"]]), tok.image_id, 4, tok.eos_id)[0]
        assert not mm[:, len(shots) + 1:].any(), "the padding images are never seen"
        assert torch.equal(item["image"][len(shots) + 1:], torch.zeros_like(item["image"][len(shots) + 1:]))
    assert len(ks) > 1, "the number of examples varies"
    with pytest.raises(ValueError, match="max_shots"):
        InterleavedVQADataset(qs, max_shots=-1)
    with pytest.raises(ValueError, match="cannot supply"):
        InterleavedVQADataset(vqa_set(3, split="train"), max_shots=3)


@pytest.mark.parametrize("arm", bench.ARMS)
def test_an_arm_trains_and_reports(arm, monkeypatch):
    monkeypatch.setattr(bench, "QUESTIONS", 8)
    threads = torch.get_num_threads()
    try:
        out = bench.run((arm, 1, 1))
    finally:
        torch.set_num_threads(threads)
    assert out["arm"] == arm and set(out["accuracy"]) == {str(k) for k in bench.SHOTS}
    assert all(0.0 <= a <= 1.0 for a in out["accuracy"].values())


def test_results_file_has_three_seeds_of_both_arms_at_the_recipes_budget():
    import json

    from vlm_primer.zoo import bottleneck_recipes

    results = json.loads(bench.OUT.read_text())
    assert results["steps"] == bottleneck_recipes.STAGE2_STEPS and results["shots"] == list(bench.SHOTS)
    for arm in bench.ARMS:
        assert len({r["seed"] for r in results["runs"] if r["arm"] == arm}) >= 3, arm


def test_results_writer_records_the_command_budget_and_runs(tmp_path):
    import json
    import time

    from common import write_seed_runs

    out = tmp_path / "results" / "x.json"
    write_seed_runs(out, "bench_x.py", [0, 1, 2], 2, time.perf_counter(), [{"arm": "a", "seed": 0}], steps=5)
    got = json.loads(out.read_text())
    assert got["command"] == "python benchmarks/bench_x.py --seeds 0 1 2" and got["steps"] == 5
    assert list(got)[-1] == "runs" and got["runs"] == [{"arm": "a", "seed": 0}]
