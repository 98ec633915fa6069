"""Object hallucination: POPE on yes/no answers and CHAIR on captions of Shapes World.

Explained in notebook 07, §Hallucination. Two views of the same failure, a model naming objects that are not in
the image:

* **POPE** (Li et al. 2023) asks "Is there a <object> in the image?" for objects that are present (answer yes)
  and absent (answer no) and scores the yes/no answers as a binary classifier, "yes" being the positive class:
  accuracy, precision, recall, F1 and the *yes ratio* (the share of "yes" answers; a model that says yes to
  everything scores recall 1 and yes ratio 1). Free-text answers are read as POPE's ``evaluate.py`` reads them
  (:func:`parse_yes_no`), so the numbers are comparable with papers'.
* **CHAIR** (Rohrbach et al. 2018) reads the objects a caption mentions and checks them against the image's
  objects: ``CHAIR_i`` = hallucinated mentions / all mentions, ``CHAIR_s`` = captions with at least one
  hallucinated mention / all captions. In Shapes World the object words are the shape words and their synonyms
  (``SHAPE_WORDS``: "disk" is a circle, "rhombus" a diamond, plurals included), and the truth is the scene graph.

Like the original CHAIR, a mention is a mention whatever the sentence says about it: "there is no green star" in a
scene without stars counts as a hallucinated star (CHAIR was built for captions that describe what is there).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from vlm_primer.world.scene import Scene
from vlm_primer.world.vocab import COLOR_WORDS, PLURALS, SHAPE_WORDS

__all__ = ["chair", "mentioned_objects", "parse_yes_no", "pope_metrics"]

# Every word that names a shape (singular and plural synonyms) -> the canonical shape; the same for colours.
_SHAPE_OF: dict[str, str] = {}
for _shape, _words in SHAPE_WORDS.items():
    for _word in _words:
        _SHAPE_OF[_word] = _SHAPE_OF[PLURALS[_word]] = _shape
_COLOR_OF: dict[str, str] = {word: color for color, words in COLOR_WORDS.items() for word in words}
_WORD = re.compile(r"[a-z]+")


# --------------------------------------------------------------------------- POPE


def parse_yes_no(answer: str) -> bool:
    """Read a free-text answer as POPE's official ``evaluate.py`` does: ``True`` for yes, ``False`` for no.

    Keep the text before the first ``"."``, drop commas, split on single spaces: the answer is *no* when one of the
    words is exactly ``"No"``, ``"no"`` or ``"not"``, and *yes* otherwise (so "Yes, there is a red circle." is yes,
    "There is no star." is no, and an empty answer is yes). The rule's quirks are kept so that scores compare
    with papers': the words are case-sensitive ("NO" reads yes) and punctuation other than commas and full stops
    stays attached ("no!" reads yes). Outer whitespace is stripped first, as the official generation scripts
    strip the model's output before saving it. Explained in notebook 07, §Hallucination.
    """
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a str, got {type(answer).__name__}")
    text = answer.strip()
    if "." in text:
        text = text.split(".")[0]  # only the first sentence
    words = text.replace(",", "").split(" ")  # sic: single spaces, case-sensitive, as evaluate.py
    return not ("No" in words or "not" in words or "no" in words)


def _as_bool(value: object, name: str, free_text: bool) -> bool:
    """One prediction or label as a bool (yes = True). Free text is parsed only for predictions."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        if free_text:
            return parse_yes_no(value)
        word = value.strip().lower()
        if word not in ("yes", "no"):
            raise ValueError(f"{name} must be 'yes' or 'no', got {value!r}")
        return word == "yes"
    if isinstance(value, (int, np.integer)):
        if value not in (0, 1):
            raise ValueError(f"{name} must be 'yes'/'no', a bool or 0/1, got {value!r}")
        return bool(value)
    raise TypeError(f"{name} must be 'yes'/'no', a bool or 0/1, got {type(value).__name__}")


def pope_metrics(predictions: Sequence[str | bool], labels: Sequence[str | bool]) -> dict[str, float]:
    """POPE's scores of yes/no ``predictions`` against ``labels`` ("yes" is the positive class).

    ``predictions``: free-text answers (read by :func:`parse_yes_no`), bools or 0/1 (1 = yes); ``labels``:
    ``"yes"``/``"no"``, bools or 0/1. Returns ``accuracy``, ``precision``, ``recall``, ``f1`` and ``yes_ratio``
    (the share of predictions that are yes). A ratio with an empty denominator is 0 (no predicted yes: precision
    0; no yes label: recall 0), as scikit-learn's ``zero_division=0``. Explained in notebook 07, §Hallucination.
    """
    for name, values in (("predictions", predictions), ("labels", labels)):
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise TypeError(f"{name} must be a list of answers, got {type(values).__name__}")
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels: one label per prediction")
    if len(predictions) == 0:
        raise ValueError("predictions is empty: nothing to score")
    pred = [_as_bool(p, f"predictions[{i}]", free_text=True) for i, p in enumerate(predictions)]
    gold = [_as_bool(y, f"labels[{i}]", free_text=False) for i, y in enumerate(labels)]
    tp = sum(p and y for p, y in zip(pred, gold))
    fp = sum(p and not y for p, y in zip(pred, gold))
    fn = sum(y and not p for p, y in zip(pred, gold))
    tn = len(pred) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / len(pred), "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": (tp + fp) / len(pred)}


# --------------------------------------------------------------------------- CHAIR


def _mentions(caption: str) -> list[tuple[str | None, str]]:
    """``(colour or None, shape)`` for every shape word of ``caption``, in order; the colour is the word right
    before the shape word when that word names a colour ("a violet disk" -> ``("purple", "circle")``)."""
    words = _WORD.findall(caption.lower())
    return [(_COLOR_OF.get(words[i - 1]) if i else None, _SHAPE_OF[w]) for i, w in enumerate(words) if w in _SHAPE_OF]


def mentioned_objects(caption: str) -> list[str]:
    """The canonical shapes a caption mentions, once per mention, in order.

    Shape words, their synonyms and plurals count ("two disks and a rhombus" -> ``["circle", "diamond"]``);
    "shape" and "object" name no shape and do not. Explained in notebook 07, §Hallucination.
    """
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, got {type(caption).__name__}")
    return [shape for _, shape in _mentions(caption)]


def chair(captions: Sequence[str], scenes: Sequence[Scene], with_color: bool = False) -> dict:
    """CHAIR of ``captions`` (one per scene) against the objects of ``scenes``.

    A mention is *hallucinated* when no object of the scene has its shape; with ``with_color=True``, a mention
    preceded by a colour word ("a violet disk") is hallucinated when no object has that colour *and* shape, and
    one without a colour word is checked on its shape alone. Returns

    * ``chair_i``: hallucinated mentions / all mentions over the corpus (0 when nothing is mentioned at all);
    * ``chair_s``: captions with at least one hallucinated mention / all captions;
    * ``mentions`` and ``hallucinations``: the two counts behind ``chair_i``;
    * ``per_caption``: for each caption a dict with ``mentioned`` (every mention, in order: the canonical shape,
      or ``"color shape"`` when ``with_color`` and a colour word is given), ``hallucinated`` (those of them that
      are hallucinated) and its own ``chair_i`` (0 without mentions).

    Explained in notebook 07, §Hallucination.
    """
    if isinstance(captions, str) or not hasattr(captions, "__len__"):
        raise TypeError(f"captions must be a list of str (one per scene), got {type(captions).__name__}")
    if isinstance(scenes, Scene) or not hasattr(scenes, "__len__"):
        raise TypeError(f"scenes must be a list of Scene (one per caption), got {type(scenes).__name__}")
    if len(captions) != len(scenes):
        raise ValueError(f"{len(captions)} captions but {len(scenes)} scenes: one scene per caption")
    if len(captions) == 0:
        raise ValueError("captions is empty: nothing to score")
    if not isinstance(with_color, bool):
        raise TypeError(f"with_color must be a bool, got {type(with_color).__name__}")
    for i, (caption, scene) in enumerate(zip(captions, scenes)):
        if not isinstance(caption, str):
            raise TypeError(f"captions[{i}] must be a str, got {type(caption).__name__}")
        if not isinstance(scene, Scene):
            raise TypeError(f"scenes[{i}] must be a Scene, got {type(scene).__name__}")

    per_caption = []
    for caption, scene in zip(captions, scenes):
        shapes = {o.shape for o in scene.objects}
        pairs = {(o.color, o.shape) for o in scene.objects}
        mentioned, hallucinated = [], []
        for color, shape in _mentions(caption):
            if with_color and color is not None:
                name, present = f"{color} {shape}", (color, shape) in pairs
            else:
                name, present = shape, shape in shapes
            mentioned.append(name)
            if not present:
                hallucinated.append(name)
        per_caption.append({"mentioned": mentioned, "hallucinated": hallucinated,
                            "chair_i": len(hallucinated) / len(mentioned) if mentioned else 0.0})
    mentions = sum(len(c["mentioned"]) for c in per_caption)
    hallucinations = sum(len(c["hallucinated"]) for c in per_caption)
    return {
        "chair_i": hallucinations / mentions if mentions else 0.0,
        "chair_s": sum(bool(c["hallucinated"]) for c in per_caption) / len(per_caption),
        "mentions": mentions,
        "hallucinations": hallucinations,
        "per_caption": per_caption,
    }
