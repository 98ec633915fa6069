"""The world's questions, POPE probes and instruction data: every answer checked against the scene
graph, balance and the blind prior measured, datasets deterministic and held-out pairs honoured."""

from __future__ import annotations

import collections
import json
import tarfile

import numpy as np
import pytest

from vlm_primer.text import Tokenizer, encode_chat
from vlm_primer.world import (DEFAULT_HELD_OUT, QUESTION_TYPES, PopeStats, ShapesInstructDataset,
                              ShapesPOPEDataset, ShapesVQADataset, accuracy_by_type, ask, blind_prior,
                              export_webdataset, holds, parse_box, pope_probes, split_scene)
from vlm_primer.world.instruct import box_text, complex_reasoning, conversation, detailed_description, grounding
from vlm_primer.world.scene import clear_relations
from vlm_primer.world.vocab import COLOR_WORDS, NUMBER_WORDS, PLURALS, SHAPE_WORDS, SIZE_WORDS

SCENES = [split_scene("train", i, 0) for i in range(600)]


def _unique(np_, scene):
    return sum(np_.matches(o) for o in scene.objects) == 1


@pytest.mark.parametrize("qtype", QUESTION_TYPES)
def test_every_answer_is_true_of_its_scene(qtype):
    asked = 0
    for i, (scene, _) in enumerate(SCENES):
        q = ask(scene, np.random.default_rng(i), qtype)
        if q is None:
            continue
        asked += 1
        objs = scene.objects
        assert len(q.answers) == 10 and q.answers.count(q.answer) >= 7
        if q.answer_type == "yes/no":
            assert q.answer in ("yes", "no") and q.sentence.startswith(q.answer)
            if qtype == "relation_yn":  # the asked relation holds exactly when the answer is yes
                assert holds(q.meaning, scene) == (q.answer == "yes")
            else:  # the meaning is the true statement behind the answer
                assert holds(q.meaning, scene)
        if qtype in ("color", "shape", "size"):
            (t,) = q.targets
            assert q.answer == getattr(objs[t], qtype)
        if qtype == "count":
            n = NUMBER_WORDS.index(q.answer)
            assert n == len(q.targets) and holds(q.meaning, scene)
        if qtype == "relation":
            a, b = q.targets
            assert clear_relations(objs[a], objs[b], 0.08) == [q.answer]
            assert _unique(q.meaning.a, scene) and _unique(q.meaning.b, scene)
    assert asked >= 100, f"{qtype} applied to only {asked} of {len(SCENES)} scenes"


def test_questions_use_the_world_words_and_synonyms_count_as_answers():
    words = {w for table in (COLOR_WORDS, SHAPE_WORDS, SIZE_WORDS) for ws in table.values() for w in ws}
    qs = [ask(s, np.random.default_rng(i), "shape") for i, (s, _) in enumerate(SCENES)]
    alternatives = {a for q in qs if q is not None for a in q.answers} - {q.answer for q in qs if q is not None}
    assert alternatives and alternatives <= words  # "disk" for circle, "rhombus" for diamond
    counts = [ask(s, np.random.default_rng(i), "count") for i, (s, _) in enumerate(SCENES[:50])]
    assert all(str(NUMBER_WORDS.index(q.answer)) in q.answers for q in counts)


def test_balance_and_the_blind_prior():
    train = ShapesVQADataset("train", 3000)
    val = ShapesVQADataset("val", 1500)
    tq = [train.question(i) for i in range(len(train))]
    vq = [val.question(i) for i in range(len(val))]
    types = collections.Counter(q.qtype for q in tq)
    assert set(types) == set(QUESTION_TYPES)
    for qtype in ("exist", "attribute", "relation_yn"):
        yes = np.mean([q.answer == "yes" for q in tq if q.qtype == qtype])
        assert 0.44 < yes < 0.56, (qtype, yes)
    prior = blind_prior(tq)
    acc = accuracy_by_type(vq, [prior.predict(q) for q in vq])
    # The control: a language-only prior gets about chance on yes/no and well under half overall.
    assert acc["all"] < 0.5, acc
    for qtype in ("exist", "attribute", "relation_yn"):
        assert acc[qtype] < 0.6, acc
    assert acc["color"] < 0.25 and acc["shape"] < 0.3, acc
    # ...and the prior is a working baseline, not a broken one: it beats chance where the text says something.
    assert acc["size"] > 0.4 and acc["count"] > 0.3, acc


def test_pope_probes_are_balanced_and_negatives_follow_the_setting():
    stats = PopeStats.from_scenes(s for s, _ in SCENES)
    for setting in ("random", "popular", "adversarial"):
        for i, (scene, _) in enumerate(SCENES[:100]):
            probes = pope_probes(scene, np.random.default_rng(i), setting, 3, stats)
            yes = [q for q in probes if q.answer == "yes"]
            no = [q for q in probes if q.answer == "no"]
            assert len(yes) == len(no) == min(3, len({o.composition for o in scene.objects}))
            assert all(holds(q.meaning, scene) for q in probes)
            present = {o.composition for o in scene.objects}
            absent_scores = {}
            for q in no:
                comp = (q.meaning.np.color, q.meaning.np.shape)
                assert comp not in present
                if setting == "popular":
                    absent_scores[comp] = stats.frequency[comp]
                elif setting == "adversarial":
                    absent_scores[comp] = sum(stats.cooccurrence[(p, comp)] for p in present)
            if absent_scores:  # the chosen negatives score at least as high as every absent one left out
                from vlm_primer.world.vocab import COLORS, SHAPES
                left_out = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present and (c, s) not in absent_scores]
                score = (lambda c: stats.frequency[c]) if setting == "popular" else \
                    (lambda c: sum(stats.cooccurrence[(p, c)] for p in present))
                assert min(absent_scores.values()) >= max(map(score, left_out), default=0)
    with pytest.raises(ValueError, match="needs stats"):
        pope_probes(SCENES[0][0], np.random.default_rng(0), "popular")


def test_instruction_data_is_true_and_trains_on_the_assistant_only():
    tok = Tokenizer.load()
    inverse_plural = {v: k for k, v in PLURALS.items()}
    shape_of = {w: s for s, ws in SHAPE_WORDS.items() for w in ws}
    for i, (scene, _) in enumerate(SCENES[:150]):
        rng = np.random.default_rng(i)
        msgs = conversation(scene, rng, turns=3)
        assert [m["role"] for m in msgs] == ["user", "assistant"] * (len(msgs) // 2) and msgs
        assert msgs[0]["content"].startswith("<image>") and all("<image>" not in m["content"] for m in msgs[1:])
        ids, target = encode_chat(tok, msgs)
        answer_ids = sum((tok.encode(m["content"] + "<|end|>", add_eos=False) for m in msgs[1::2]), [])
        assert [t for t, keep in zip(ids, target) if keep] == answer_ids

        detail = detailed_description(scene, rng)
        n = len(scene.objects)
        assert detail.startswith(f"the image shows {NUMBER_WORDS[n]} object") and detail.count("there is") == n

        question, answer = complex_reasoning(scene, rng)
        if question.startswith("are there more"):
            pl1, pl2 = question[len("are there more "):-1].split(" than ")
            n1, n2 = (sum(o.shape == shape_of[inverse_plural[p]] for o in scene.objects) for p in (pl1, pl2))
            assert answer.startswith("yes" if n1 > n2 else "no")
        else:
            color = answer.rsplit(" ", 1)[1].rstrip(".")
            assert color in {o.color for o in scene.objects}

        q, box, j = grounding(scene, rng)
        assert box == box_text(scene.objects[j]) and parse_box(box) == tuple(int(v) for v in box[5:-6].split(","))
        x0, y0, x1, y1 = parse_box(box)
        assert 0 <= x0 < x1 < 100 and 0 <= y0 < y1 < 100
        assert parse_box("</box> stray, then " + box) == (x0, y0, x1, y1)  # the first <box> and the </box> after it
        assert x0 <= scene.objects[j].x * 100 <= x1 + 1 and y0 <= scene.objects[j].y * 100 <= y1 + 1


def test_datasets_are_deterministic_and_honour_held_out_pairs(tmp_path):
    held = set(DEFAULT_HELD_OUT)
    for cls, kw in ((ShapesVQADataset, {}), (ShapesInstructDataset, {}), (ShapesPOPEDataset, {"setting": "random"})):
        a, b = cls("train", 40, **kw), cls("train", 40, **kw)
        for i in range(0, len(a), 7):
            x, y = a[i], b[i]
            assert (x["image"] == y["image"]).all()
            assert {k: v for k, v in x.items() if k != "image"} == {k: v for k, v in y.items() if k != "image"}
            assert not {o.composition for o in x["scene"].objects} & held
    comp = ShapesVQADataset("compositional", 20)
    assert all({o.composition for o in comp[i]["scene"].objects} & held for i in range(20))
    with pytest.raises(ValueError, match="unknown qtypes"):
        ShapesVQADataset(qtypes=["color", "mood"])
    with pytest.raises(ValueError, match="setting must be one of"):
        ShapesPOPEDataset(setting="hard")

    paths = export_webdataset(ShapesVQADataset("val", 5), tmp_path / "vqa")
    with tarfile.open(paths[0]) as tar:
        names = sorted(tar.getnames())
        meta = json.load(tar.extractfile(next(n for n in names if n.endswith(".json"))))
        text = tar.extractfile(next(n for n in names if n.endswith(".txt"))).read().decode()
    assert len(names) == 15 and meta["question"] == text and len(meta["answers"]) == 10
    with pytest.raises(FileExistsError):
        export_webdataset(ShapesVQADataset("val", 5), tmp_path / "vqa")

    class Counted(ShapesVQADataset):
        def __getitem__(self, i):
            calls.append(i)
            return super().__getitem__(i)

    calls = []
    export_webdataset(Counted("val", 3), tmp_path / "counted")
    assert calls == [0, 1, 2]  # each scene rendered once, the first one included



def test_mosaics_keep_each_object_whole_in_its_own_cell_at_the_cell_scale():
    import dataclasses

    import torch

    from vlm_primer.world import (MosaicVQADataset, Scene, WorldConfig, render, render_mosaic, sample_scene,
                                  spread_scene)

    cfg = WorldConfig(image_size=48, sizes=("large",))
    ds = MosaicVQADataset("test", 12, config=cfg, num_objects=(1, 2), qtypes=("color", "count"))
    for i in range(len(ds)):
        item = ds[i]
        scene = item["scene"]
        assert item["image"].shape == (3, 96, 96) and item["question"] == ds.question(i).question
        assert len({(int(o.y * 2), int(o.x * 2)) for o in scene.objects}) == len(scene.objects)  # one per cell
        for o in scene.objects:  # each cell is the 48 px scene of its object, at the object's own scale
            r, c = int(o.y * 2), int(o.x * 2)
            alone = Scene((dataclasses.replace(o, x=o.x * 2 - c, y=o.y * 2 - r),), scene.background)
            assert torch.equal(item["image"][:, 48 * r:48 * r + 48, 48 * c:48 * c + 48], render(alone, 48))
    three = sample_scene(np.random.default_rng(1), cfg, (3, 3))
    assert len(spread_scene(three, np.random.default_rng(0), grid=2).objects) == 3
    with pytest.raises(ValueError, match="a 1x1 mosaic has 1 cells for one object each, the scene has 3"):
        spread_scene(three, np.random.default_rng(0), grid=1)
    with pytest.raises(ValueError, match=r"grid must be an int >= 1 \(cells per side\)"):
        render_mosaic(three, 48, grid=0)
    with pytest.raises(ValueError, match="do not fit one per cell"):
        MosaicVQADataset("test", 4, config=cfg, num_objects=(1, 5))


@pytest.mark.parametrize("text", ["no box here", "<box>1,2,3</box>", "<box>1,2,3,\u00b2</box>", "<box>1,2,3,4"])
def test_parse_box_names_what_is_not_a_box(text):
    with pytest.raises(ValueError, match="box"):
        parse_box(text)


def test_a_world_of_one_colour_asks_no_impossible_question():
    from vlm_primer.world import WorldConfig

    ds = ShapesVQADataset("train", 200, config=WorldConfig(colors=("red",)), seed=0)
    qs = [ds.question(i) for i in range(len(ds))]  # "is the circle <colour>?" has no other colour to ask about
    colour_words = {w for words in COLOR_WORDS.values() for w in words}
    asks_colour = [q for q in qs if q.qtype == "attribute" and q.question.rstrip("?").split()[-1] in colour_words]
    assert asks_colour and all(q.answer == "yes" for q in asks_colour)


def test_bad_export_and_box_input(tmp_path):
    from vlm_primer.world.video_qa import VideoQADataset

    with pytest.raises(TypeError, match="one image per sample"):
        export_webdataset(VideoQADataset("train", 2, suite="standard"), tmp_path / "shards")
    assert not (tmp_path / "shards").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="image_size must be an int >= 1"):
        box_text(ShapesVQADataset("train", 1).scene(0)[0].objects[0], 0)
