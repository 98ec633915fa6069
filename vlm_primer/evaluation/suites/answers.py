"""Suites for models that answer questions: ``vqa`` and ``pope``. Explained in notebook 07, §VQA accuracy and
§Hallucination."""

from __future__ import annotations

from typing import Any

from vlm_primer.evaluation.hallucination import parse_yes_no, pope_metrics
from vlm_primer.evaluation.suites import Items, Suite, register, render_scenes
from vlm_primer.evaluation.suites.priors import vqa_prior
from vlm_primer.evaluation.vqa_metrics import normalize_answer, vqa_accuracy

__all__: list[str] = []


def _qtypes(model) -> tuple[str, ...]:
    from vlm_primer.world import QUESTION_TYPES

    one_size = len(model.world_config().sizes) < 2  # every object the same size: the answer is in the question
    return tuple(t for t in QUESTION_TYPES if not (t == "size" and one_size))


# --------------------------------------------------------------------------------------------------- VQA

def build_vqa(model, n: int, seed: int) -> Items:
    from vlm_primer.world import ShapesVQADataset

    ds = ShapesVQADataset("test", n, config=model.world_config(), num_objects=model.num_objects, seed=seed,
                          qtypes=_qtypes(model))
    items = []
    for i in range(n):
        scene, _ = ds.scene(i)
        q = ds.question(i)
        items.append({"id": i, "scene": scene, "question": q})
    return items


def _vqa_rows(items: Items, predictions: list[str]) -> Items:
    """Each prediction scored by VQA v2's accuracy against the world's ten references, normalised first as VQA v2's
    are: the official script normalises only the prediction, so a raw "two" reference never matches (the right
    count would score 0.9)."""
    return [{"id": it["id"], "type": it["question"].qtype, "answer_type": it["question"].answer_type,
             "question": it["question"].question, "prediction": p, "answer": it["question"].answer,
             "value": vqa_accuracy(p, [normalize_answer(a) for a in it["question"].answers])}
            for it, p in zip(items, predictions)]


def run_vqa(model, items: Items) -> Items:
    images = render_scenes(model, [it["scene"] for it in items])
    answers = model.answer(images, [it["question"].question for it in items])
    return _vqa_rows(items, answers)


def blind_vqa(model, items: Items, seed: int) -> Items:
    prior = vqa_prior(model, _qtypes(model))
    return _vqa_rows(items, [prior.predict(it["question"]) for it in items])


def extra_vqa(model, items: Items, results: Items) -> dict[str, Any]:
    by = {}
    for t in sorted({r["answer_type"] for r in results}):
        rows = [r["value"] for r in results if r["answer_type"] == t]
        by[t] = {"n": len(rows), "score": sum(rows) / len(rows)}
    return {"by_answer_type": by}


register(Suite("vqa", "answer", "vqa_accuracy",
               "one question per held-out scene, of a type drawn among those that apply (relations are rarer: see the "
               "breakdown's n); VQA v2's accuracy over its ten references",
               build_vqa, run_vqa, blind_vqa, "most frequent training answer per question (question-only)",
               default_n=400, extra=extra_vqa))


# -------------------------------------------------------------------------------------------------- POPE

def build_pope(model, n: int, seed: int) -> Items:
    """``n`` probes per setting (random, popular, adversarial), about half "yes": each image gives one "yes" probe per
    object present (up to k = 3) and as many "no", so ``ceil(n / 2)`` images give at least ``n``."""
    from vlm_primer.world import POPE_SETTINGS, ShapesPOPEDataset

    items = []
    for setting in POPE_SETTINGS:
        ds = ShapesPOPEDataset("test", -(-n // 2), setting=setting, k=3, config=model.world_config(),
                               num_objects=model.num_objects, seed=seed)
        for image_index, q in ds.probes[:n]:
            items.append({"id": len(items), "setting": setting, "scene": ds.scenes[image_index], "question": q})
    return items


def _pope_rows(items: Items, predictions: list[str]) -> Items:
    return [{"id": it["id"], "type": it["setting"], "question": it["question"].question, "prediction": p,
             "answer": it["question"].answer, "value": float(parse_yes_no(p) == (it["question"].answer == "yes"))}
            for it, p in zip(items, predictions)]


def run_pope(model, items: Items) -> Items:
    images = render_scenes(model, [it["scene"] for it in items])
    return _pope_rows(items, model.answer(images, [it["question"].question for it in items]))


def blind_pope(model, items: Items, seed: int) -> Items:
    return _pope_rows(items, ["yes"] * len(items))


def extra_pope(model, items: Items, results: Items) -> dict[str, Any]:
    return {s: pope_metrics([r["prediction"] for r in results if r["type"] == s],
                            [r["answer"] for r in results if r["type"] == s])
            for s in dict.fromkeys(r["type"] for r in results)}


register(Suite("pope", "answer", "accuracy",
               "POPE: 'Is there a ... in the image?' about present and absent objects, random/popular/adversarial",
               build_pope, run_pope, blind_pope, "always 'yes' (the yes-bias POPE exposes)", default_n=150,
               chance=0.5, extra=extra_pope))
