"""The evaluation harness (issue 20): wrapping every model family, the record, bad input, the CLI, and the
answer suites (vqa, pope) and ARO against their blind baselines."""

import json

import numpy as np
import pytest
import torch

from vlm_primer import zoo
from vlm_primer.evaluation.harness import MissingCapability, evaluate, leaderboard, plot_leaderboard, replace, wrap
from vlm_primer.evaluation.hallucination import pope_metrics
from vlm_primer.evaluation.suites import SUITES, get_suite
from vlm_primer.evaluation.suites.answers import _vqa_rows
from vlm_primer.evaluation.suites.priors import TextPrior
from vlm_primer.evaluation.vqa_metrics import normalize_answer, vqa_accuracy

pytestmark = pytest.mark.xdist_group("harness")


@pytest.fixture(scope="module")
def llava():
    return wrap("llava-tiny")


@pytest.mark.parametrize("name, caps, blind", [
    ("clip-tiny", ("match",), False), ("siglip-tiny", ("match",), False), ("blip-tiny", ("match", "caption"), False),
    ("coca-tiny", ("match", "caption"), False), ("flava-tiny", ("match",), False),
    ("llava-tiny", ("caption", "answer"), False), ("flamingo-tiny", ("answer",), False),
    ("lm-tiny", ("match",), True), ("ar-t2i-tiny", ("generate",), False)])
def test_wrap_gives_each_family_its_capabilities(name, caps, blind):
    m = wrap(name)
    assert m.capabilities == caps and m.blind is blind and m.name == name
    assert wrap(m) is m


def test_wrap_refuses_what_it_cannot_evaluate():
    with pytest.raises(MissingCapability, match="mae-tiny .*no capability"):
        wrap("mae-tiny")
    with pytest.raises(ValueError, match="unknown model 'clip-huge'.*clip-tiny"):
        wrap("clip-huge")
    with pytest.raises(MissingCapability, match="no image-text matching head"):
        wrap("clip-tiny", head="itm")
    with pytest.raises(ValueError, match="head must be"):
        wrap("blip-tiny", head="itx")
    with pytest.raises(ValueError, match="pass transform="):
        wrap(zoo.load("clip-tiny"))
    with pytest.raises(TypeError, match="zoo name, an nn.Module"):
        wrap(3)


def test_match_is_the_cosine_and_itm_the_match_probability():
    from vlm_primer.contrastive import Llip, LlipConfig
    from vlm_primer.text import Tokenizer
    from vlm_primer.world import render, sample_scene, WorldConfig

    scenes = [sample_scene(np.random.default_rng(i), WorldConfig(image_size=48, sizes=("large",))) for i in range(5)]
    images = torch.stack([render(s, 48) for s in scenes])
    texts = ["a red circle", "a blue square", "two shapes", "a green star", "a circle left of a square"]
    clip, pre = zoo.load("clip-tiny"), zoo.preprocess("clip-tiny")
    pixels = torch.stack([pre(x) for x in images])
    enc = Tokenizer.load()(texts, max_length=clip.cfg.text.context_length)
    with torch.no_grad():  # the cosine, by hand
        img, txt = clip.encode_image(pixels), clip.encode_text(enc["input_ids"], enc["attention_mask"])
    want = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    torch.testing.assert_close(wrap("clip-tiny").match(images, texts), want)
    # Llip's image embedding depends on the caption: each pair is scored with the model's own similarity
    torch.manual_seed(0)
    llip = Llip(LlipConfig.from_preset("tiny")).eval()
    size = llip.cfg.vision.image_size
    big = torch.stack([render(s, size) for s in scenes])
    enc = Tokenizer.load()(texts, max_length=llip.cfg.text.context_length)
    with torch.no_grad():
        want = llip.similarity(llip.encode_image(pre(big)),
                               llip.encode_text(enc["input_ids"], enc["attention_mask"]))
    torch.testing.assert_close(wrap(llip, transform=pre).match(big, texts), want.diagonal())
    itm = wrap("blip-tiny", head="itm").match(images, texts)
    assert itm.shape == (5,) and ((itm >= 0) & (itm <= 1)).all()
    with pytest.raises(ValueError, match="one text per image"):
        wrap("clip-tiny").match(images, texts[:2])


def test_text_prior_match_is_the_language_models_log_likelihood():
    from vlm_primer.text import Tokenizer

    lm, tok = zoo.load("lm-tiny").eval(), Tokenizer.load()
    text = "a red circle left of a blue square"
    ids = torch.tensor([tok.encode(text, add_bos=True)])
    with torch.no_grad():
        nll = lm(ids, labels=ids).loss.item() * (ids.shape[1] - 1)
    got = wrap("lm-tiny").match(torch.zeros(2, 3, 48, 48), [text, text])
    assert got[0].item() == pytest.approx(-nll, rel=1e-5) and got[0] == got[1]


def test_record_has_score_interval_blind_and_items(llava):
    r = evaluate(llava, "pope", n=24)
    assert r["model"] == "llava-tiny" and r["suite"] == "pope" and r["n"] == len(r["items"]) == 72
    assert r["ci95"][0] <= r["score"] <= r["ci95"][1]
    assert r["score"] == pytest.approx(np.mean([it["value"] for it in r["items"]]))
    assert r["blind"]["score"] == pytest.approx(0.5)  # always "yes" on balanced probes
    assert set(r["breakdown"]) == {"random", "popular", "adversarial"}
    for setting, figures in r["extra"].items():
        rows = [it for it in r["items"] if it["type"] == setting]
        assert figures == pope_metrics([it["prediction"] for it in rows], [it["answer"] for it in rows])
    assert r["items_per_second"] > 0
    json.dumps(r)  # JSON-ready
    assert "llava-tiny" in leaderboard([r])
    ax = plot_leaderboard([r, evaluate(llava, "pope", n=24, seed=1)])
    assert len(ax.patches) == 2 and ax.get_title() == "pope"
    with pytest.raises(ValueError, match="one suite at a time"):
        plot_leaderboard([r, evaluate("clip-tiny", "aro", n=5)])


def test_vqa_beats_its_question_only_prior(llava):
    r = evaluate(llava, "vqa", n=150, keep_items=True)
    for it in r["items"][:20]:
        assert 0 <= it["value"] <= 1
    assert r["score"] - r["blind"]["score"] >= 0.1, (r["score"], r["blind"])
    assert set(r["extra"]["by_answer_type"]) <= {"yes/no", "number", "other"}
    again = evaluate(llava, "vqa", n=150, keep_items=True)
    assert [it["question"] for it in again["items"]] == [it["question"] for it in r["items"]]
    other = evaluate(llava, "vqa", n=150, seed=1, keep_items=True)
    assert [it["question"] for it in other["items"]] != [it["question"] for it in r["items"]]


def test_vqa_value_is_the_official_accuracy(llava):
    items = get_suite("vqa").build(llava, 12, 0)
    rows = get_suite("vqa").run(llava, items)
    for it, row in zip(items, rows):
        assert row["value"] == vqa_accuracy(row["prediction"], [normalize_answer(a) for a in it["question"].answers])
    # The right answer scores 1, counts too: the world's references say "two" 7 times and "2" 3 times, and raw, the
    # official rule matches the normalised prediction "2" to the three digits only (0.9).
    items = get_suite("vqa").build(llava, 80, 0)
    counts = [it["question"] for it in items if it["question"].qtype == "count"]
    assert counts and vqa_accuracy(counts[0].answer, counts[0].answers) < 1
    assert all(r["value"] == 1.0 for r in _vqa_rows(items, [it["question"].answer for it in items]))


def test_aro_text_prior_wins_on_word_order_not_on_relations():
    r = evaluate("lm-tiny", "aro", n=40)
    assert r["breakdown"]["order"]["score"] >= 0.9 and r["breakdown"]["order"]["blind"] >= 0.9
    assert r["breakdown"]["relation"]["blind"] <= 0.75  # fluent negatives: the bigram prior is near chance
    clip = evaluate("clip-tiny", "aro", n=40)
    assert clip["breakdown"]["order"]["score"] < r["breakdown"]["order"]["score"]


def test_text_prior_prefers_caption_like_text():
    prior = TextPrior(["a red circle", "a blue square", "a red square"])
    assert prior.log_prob("a red circle") > prior.log_prob("circle red a")
    with pytest.raises(ValueError, match="non-empty"):
        TextPrior([])


def test_bad_input_names_the_problem(llava):
    with pytest.raises(MissingCapability, match="suite 'vqa' needs a model that can 'answer'; clip-tiny can: match"):
        evaluate("clip-tiny", "vqa")
    with pytest.raises(MissingCapability, match="'match'; llava-tiny can: caption, answer"):
        evaluate(llava, "aro")
    with pytest.raises(ValueError, match="unknown suite 'vqa2'; choose one of .*vqa.*pope.*aro"):
        evaluate(llava, "vqa2")
    for n, error in ((0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="n must be an int >= 1"):
            evaluate(llava, "vqa", n=n)
    with pytest.raises(ValueError, match="seed must be"):
        evaluate(llava, "vqa", n=4, seed=-1)
    with pytest.raises(MissingCapability, match="'answer'"):
        evaluate(replace(llava, answer=None), "pope")
    with pytest.raises(ValueError, match="no records"):
        leaderboard([])
    assert set(SUITES) >= {"vqa", "pope", "aro"}


def test_cli_lists_runs_writes_and_never_overwrites(tmp_path, capsys):
    from vlm_primer.evaluate import main

    main(["--list"])
    assert "aro" in capsys.readouterr().out
    out = tmp_path / "clip.json"
    records = main(["clip-tiny", "--suite", "aro", "--n", "10", "--out", str(out), "--no-items"])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(records)) and "items" not in saved[0] and saved[0]["n"] == 30
    with pytest.raises(SystemExit):
        main(["clip-tiny", "--suite", "aro", "--out", str(out)])
    assert "exists; pass --overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["clip-tiny", "--suite", "vqa"])
    assert exit_.value.code == 2 and "needs a model that can 'answer'" in capsys.readouterr().err
    for bad, message in ((tmp_path, "is a folder"), (out / "x.json", "is a file, not a folder")):
        with pytest.raises(SystemExit):
            main(["clip-tiny", "--suite", "aro", "--out", str(bad), "--overwrite"])
        assert message in capsys.readouterr().err
    # a file that appears while the suites run is kept: the records go beside it
    from vlm_primer.evaluate import _write

    late = tmp_path / "late.json"
    late.write_text("someone else's results")
    assert _write(late, "[]", overwrite=False) == tmp_path / "late-1.json"
    assert late.read_text() == "someone else's results" and (tmp_path / "late-1.json").read_text() == "[]"
    assert _write(late, "[1]", overwrite=True) == late and late.read_text() == "[1]"
