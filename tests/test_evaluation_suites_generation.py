"""The harness's generation suites: captioning (CIDEr-D), chair (CHAIR_s) and t2i (text-to-image consistency)."""

import json
import re

import pytest
import torch

from vlm_primer import zoo
from vlm_primer.evaluation.captioning import caption_scores, cider_d, simple_tokenize
from vlm_primer.evaluation.harness import EvalModel, MissingCapability, evaluate, wrap
from vlm_primer.evaluation.suites import SUITES, get_suite
from vlm_primer.evaluation.suites.generation import prior_caption


def _render_prompts(size: int):
    """A perfect generator: each prompt "a large {colour} {shape}" drawn exactly, at ``size`` px."""
    from vlm_primer.world import Obj, Scene, render

    def generate(texts, seed=0):
        out = []
        for t in texts:
            color, shape = re.fullmatch(r"a large (\w+) (\w+)", t).groups()
            out.append(render(Scene((Obj(shape, color, "large", 0.5, 0.5),)), size))
        return torch.stack(out)
    return generate


def test_suites_are_registered_with_their_needs():
    assert {s: SUITES[s].needs for s in ("captioning", "chair", "t2i")} == {
        "captioning": "caption", "chair": "caption", "t2i": "generate"}
    assert "lower is better" in SUITES["chair"].metric and SUITES["chair"].chance is None
    assert SUITES["t2i"].chance == pytest.approx(1 / 48)  # 8 colours x 6 shapes


@pytest.mark.slow
def test_captioning_blip_beats_the_fixed_prior_caption():
    r = evaluate("blip-tiny", "captioning", n=40)
    assert r["metric"] == "cider_d" and r["n"] == 40
    assert r["score"] > 3.0 and r["blind"]["score"] < 1.5, (r["score"], r["blind"])
    assert r["ci95"][0] > r["blind"]["ci95"][1]
    assert set(r["breakdown"]) <= {"1 object", "2 objects"}
    # per-item CIDEr-D uses the IDF of the whole evaluated corpus: their mean is the corpus CIDEr-D
    assert r["extra"]["CIDEr-D"] == pytest.approx(r["score"], abs=1e-9)
    assert 0 < r["extra"]["BLEU-4"] <= r["extra"]["BLEU-1"] <= 1 and 0 < r["extra"]["ROUGE-L"] <= 1
    items = get_suite("captioning").build(wrap("blip-tiny"), 40, 0)
    refs = [[simple_tokenize(x) for x in it["references"]] for it in items]
    assert [x["value"] for x in r["items"]] == pytest.approx(
        cider_d(refs, [simple_tokenize(x["caption"]) for x in r["items"]])[1])
    assert all(len(it["references"]) >= 2 for it in items)  # several true captions per scene
    prior = r["extra"]["blind_caption"]
    assert r["blind"]["score"] == pytest.approx(caption_scores([it["references"] for it in items],
                                                               [prior] * 40)["CIDEr-D"])
    json.dumps(r)


@pytest.mark.slow
def test_captioning_reproduces_the_zoo_card():
    """The default set (200 held-out scenes, seed 0) is chapter 04's caption_set: the card's CIDEr-D."""
    r = evaluate("blip-tiny", "captioning", keep_items=False)
    assert r["n"] == 200 and round(r["score"], 4) == zoo.card("blip-tiny")["quality"]["cider_d"]


@pytest.mark.slow
def test_chair_blip_hallucinates_less_than_the_prior_caption():
    r = evaluate("blip-tiny", "chair", n=40)
    assert r["chance"] is None
    assert r["score"] < 0.5 < r["blind"]["score"], (r["score"], r["blind"])
    ex = r["extra"]
    assert ex["chair_s"] == pytest.approx(r["score"]) and 0 <= ex["chair_i"] <= 1
    assert ex["chair_s_color"] >= ex["chair_s"] and ex["hallucinations_color"] >= ex["hallucinations"]
    assert ex["coverage"] > 0.5 and ex["mentions_per_caption"] >= 1
    for x in r["items"]:
        assert x["value"] == float(bool(x["hallucinated"])) and set(x["hallucinated"]) <= set(x["mentioned"])
    # the blind caption names one shape: hallucinated exactly where the scene lacks it
    m = wrap("blip-tiny")
    shape = next(s for s in m.world_config().shapes if s in prior_caption(m))
    items = get_suite("chair").build(m, 40, 0)
    blind = get_suite("chair").blind(m, items, 0)
    assert [b["value"] for b in blind] == [float(shape not in {o.shape for o in it["scene"].objects})
                                           for it in items]


def test_chair_a_caption_that_names_nothing_hallucinates_nothing():
    """CHAIR's blind spot (the zoo's VQA-tuned models answer "yes" to a caption request): coverage exposes it."""
    yes = EvalModel(name="yes", caption=lambda images: ["yes"] * len(images))
    r = evaluate(yes, "chair", n=12, keep_items=False)
    assert r["score"] == 0 and r["extra"]["coverage"] == 0 and r["extra"]["mentions"] == 0
    assert evaluate(yes, "captioning", n=12)["score"] < 0.1


def test_t2i_a_perfect_generator_scores_one_and_a_prompt_blind_image_near_chance():
    perfect = EvalModel(name="perfect", world={"image_size": 32, "sizes": ("large",)},
                        generate=_render_prompts(32))
    r = evaluate(perfect, "t2i", n=48)
    assert r["score"] == 1.0 and r["n"] == 48
    assert {x["prompt"] for x in r["items"]} == {f"a large {c} {s}" for c in perfect.world_config().colors
                                                 for s in perfect.world_config().shapes}
    assert r["breakdown"]["held-out"]["n"] == 6 and r["breakdown"]["seen"]["n"] == 42
    assert r["blind"]["score"] <= 0.15
    assert r["breakdown"]["held-out"]["blind"] == 0  # test scenes never show a held-out composition


@pytest.mark.slow
def test_t2i_generator_beats_its_blind_baseline():
    m = wrap("ar-t2i-tiny")
    assert m.image_size == 32  # the generators' world (their card's preprocess.image_size)
    r = evaluate(m, "t2i", n=48)
    assert r["score"] >= 0.25 and r["blind"]["score"] <= 0.1, (r["score"], r["blind"])
    assert r["ci95"][0] > r["blind"]["ci95"][1]
    assert r["extra"]["color"] >= r["score"] and r["extra"]["shape"] >= r["score"]
    json.dumps(r)


@pytest.mark.slow
def test_t2i_reproduces_the_zoo_card():
    """The default prompts (every composition twice, seed 0) are the card's faithfulness prompts at guidance 3."""
    r = evaluate("ar-t2i-tiny", "t2i", keep_items=False)
    quality = zoo.card("ar-t2i-tiny")["quality"]
    assert r["n"] == 96 and round(r["score"], 4) == quality["both_s3"]
    assert round(r["breakdown"]["held-out"]["score"], 4) == quality["both_heldout_s3"]
    assert (round(r["extra"]["color"], 4), round(r["extra"]["shape"], 4)) == (quality["color_s3"], quality["shape_s3"])


@pytest.mark.parametrize("suite", ["captioning", "chair", "t2i"])
def test_same_seed_same_items(suite):
    model = EvalModel(name="m", caption=lambda x: [""] * len(x), generate=_render_prompts(48))
    build = get_suite(suite).build

    def key(items):
        return [(it["type"], it.get("prompt"), it.get("scene"), it.get("references")) for it in items]

    assert key(build(model, 10, 3)) == key(build(model, 10, 3))
    assert key(build(model, 10, 3)) != key(build(model, 10, 4))
    assert len(build(model, 10, 3)) == 10
    if suite == "t2i":  # the blind images too
        items = build(model, 10, 3)
        assert get_suite(suite).blind(model, items, 3) == get_suite(suite).blind(model, items, 3)


@pytest.mark.parametrize("suite", ["captioning", "chair", "t2i"])
def test_missing_capability(suite):
    with pytest.raises(MissingCapability, match="clip-tiny"):
        evaluate("clip-tiny", suite)


@pytest.mark.parametrize("n, error", [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError),
                                      ("4", TypeError)])
def test_bad_n(n, error):
    with pytest.raises(error, match="n must be an int >= 1"):
        evaluate(EvalModel(name="m", caption=lambda x: ["a red circle"] * len(x)), "captioning", n=n)
