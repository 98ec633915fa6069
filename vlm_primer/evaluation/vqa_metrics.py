"""VQA metrics as the benchmarks' official scripts compute them: VQA accuracy (VQA v2) and ANLS (ST-VQA, DocVQA).

Explained in notebook 07, §VQA accuracy. Every table, regular expression and quirk follows the official scripts so
that the numbers are comparable with papers':

* **VQA accuracy** (Antol et al. 2015; Goyal et al. 2017) is ``vqaEval.py`` of the VQA API (GT-Vision-Lab/VQA).
  Each question has 10 human answers; a prediction is right "if at least 3 humans said it", averaged over the 10
  leave-one-out subsets of 9 humans: with ``k`` humans giving the prediction, the question scores 0.3, 0.6, 0.9
  and 1.0 for ``k`` = 1, 2, 3 and 4+. Answers are compared as strings after :func:`normalize_answer` (see
  :func:`vqa_accuracy` for which side is normalised how: the official script is asymmetric).
* **ANLS** (Biten et al. 2019), Average Normalized Levenshtein Similarity: per question, the best over the answers
  of ``1 - NLD`` (the edit distance divided by the longer string's length), counted as 0 once ``NLD`` reaches the
  threshold (0.5), so that near-misses of OCR tokens earn partial credit and wrong answers none.
"""

from __future__ import annotations

import re
from typing import Sequence

__all__ = ["anls", "anls_score", "levenshtein", "normalize_answer", "vqa_accuracy", "vqa_score"]

# The tables of vqaEval.py, copied as they are, typos included: keys with capitals ("Im", "Ive", "Id've") can never
# match because the text is lower-cased first, and "somebody'd" maps to "somebodyd" (the other entries add the
# apostrophe). Only whole words are looked up.
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
_MANUAL_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
               "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = ("a", "an", "the")
# sic: "(?!<=\d)" is a typo for the look-behind "(?<!\d)"; as written it is a look-ahead that always succeeds, so the
# rule is "drop every period not followed by a digit" ("3.5" keeps its period, "3." and "yes." lose theirs).
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")  # only ever searched for, never substituted
_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
# sic: vqaEval.py calls periodStrip.sub("", text, re.UNICODE), which passes re.UNICODE (32) as the *count*.
_PERIOD_COUNT = int(re.UNICODE)


def _process_punctuation(text: str) -> str:
    """``processPunctuation``: each mark of the list is deleted if it touches a space somewhere in ``text`` (or if
    ``text`` has a comma between digits anywhere, "1,000"), else replaced by a space; then periods not followed by a
    digit are deleted (at most 32 of them). Apostrophes, colons and other marks stay."""
    out = text
    digit_comma = _COMMA_STRIP.search(text) is not None
    for p in _PUNCT:
        if p + " " in text or " " + p in text or digit_comma:  # sic: tested on the input, not on `out`
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_COUNT)


def _process_digit_article(text: str) -> str:
    """``processDigitArticle``: lower-case, split on whitespace, number words "none".."ten" to digits, drop the
    articles a/an/the, expand apostrophe-less contractions ("dont" -> "don't"), join with single spaces."""
    words = [_MANUAL_MAP.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words)


def _check_text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


def _check_answers(answers: object, name: str) -> list[str]:
    if isinstance(answers, str):
        raise TypeError(f"{name} must be a list of answer strings, not one str ({answers!r}): wrap it in a list")
    if not isinstance(answers, Sequence):
        raise TypeError(f"{name} must be a list of answer strings, got {type(answers).__name__}")
    if len(answers) == 0:
        raise ValueError(f"{name} is empty: each question needs at least one ground-truth answer")
    return [_check_text(a, f"{name}[{i}]") for i, a in enumerate(answers)]


def _check_batch(predictions: object, answer_lists: object) -> None:
    for value, name in ((predictions, "predictions"), (answer_lists, "answer_lists")):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise TypeError(f"{name} must be a list (one entry per question), got {type(value).__name__}")
    if len(predictions) != len(answer_lists):
        raise ValueError(f"{len(predictions)} predictions but {len(answer_lists)} answer_lists: one per question each")
    if len(predictions) == 0:
        raise ValueError("predictions is empty: no questions to score")


def _check_threshold(threshold: object) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold must be a number in (0, 1], got {type(threshold).__name__}")
    if not 0 < threshold <= 1:  # NaN fails too
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    return float(threshold)


def normalize_answer(answer: str) -> str:
    """Normalise a predicted answer as ``vqaEval.py`` does: newlines and tabs to spaces, strip, punctuation
    (``processPunctuation``), then number words, articles and contractions (``processDigitArticle``).

    ``"Two dogs."`` -> ``"2 dogs"``, ``"the dog"`` -> ``"dog"``, ``"dont"`` -> ``"don't"``, ``"1,000"`` -> ``"1000"``
    (a comma between digits makes every punctuation mark vanish instead of becoming a space), ``"3.5"`` -> ``"3.5"``.
    Explained in notebook 07, §VQA accuracy.
    """
    text = _check_text(answer, "answer").replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy of one ``prediction`` against the human ``answers`` of its question, in [0, 1].

    For each answer ``i``, the prediction's accuracy against the *other* answers is ``min(#matches / 3, 1)``; the
    result is the mean over ``i``. With the usual 10 answers and ``k`` of them equal to the prediction this gives
    0.3, 0.6, 0.9, 1.0 for ``k`` = 1, 2, 3, 4+. The same formula is applied to any number ``n >= 1`` of answers,
    where it is harsher: one answer always scores 0 (its only subset is empty) and below 4 answers 1.0 is out of
    reach (3 identical answers give 2/3). Each answer is left out by position, as the official loop does (its answer
    records differ by ``answer_id``), so duplicates are not dropped together.

    Normalisation is the official script's, which is **asymmetric**: the prediction always goes through
    :func:`normalize_answer`; the answers are compared as given, except that when they are not all identical they go
    through the punctuation step alone (no lower-casing, number words, articles or contractions). The VQA v2
    annotations ship answers already normalised, so this is harmless there; answers of another source should be
    passed through :func:`normalize_answer` first, or "two" never matches the normalised prediction "2".
    Explained in notebook 07, §VQA accuracy.
    """
    prediction = normalize_answer(_check_text(prediction, "prediction"))
    answers = _check_answers(answers, "answers")
    if len(set(answers)) > 1:
        answers = [_process_punctuation(a) for a in answers]
    matches = [answer == prediction for answer in answers]
    total = sum(matches)
    per_subset = [min(1.0, (total - left_out) / 3) for left_out in matches]
    return sum(per_subset) / len(per_subset)


def vqa_score(predictions: Sequence[str], answer_lists: Sequence[Sequence[str]]) -> dict[str, object]:
    """VQA accuracy of ``predictions`` (one answer per question) against ``answer_lists`` (the human answers of each
    question): ``{"accuracy": the mean in [0, 1], "per_question": [one accuracy per question]}``. The official
    script reports 100x this, rounded to 2 decimals. Explained in notebook 07, §VQA accuracy.
    """
    _check_batch(predictions, answer_lists)
    per_question = []
    for i, (prediction, answers) in enumerate(zip(predictions, answer_lists)):
        _check_text(prediction, f"predictions[{i}]")
        _check_answers(answers, f"answer_lists[{i}]")
        per_question.append(vqa_accuracy(prediction, answers))
    return {"accuracy": sum(per_question) / len(per_question), "per_question": per_question}


def levenshtein(a: str, b: str) -> int:
    """Edit distance between ``a`` and ``b``: the fewest insertions, deletions and substitutions of characters that
    turn one into the other (dynamic programming, one row at a time)."""
    _check_text(a, "a")
    _check_text(b, "b")
    row = list(range(len(b) + 1))  # distances from the empty prefix of a to every prefix of b
    for i, x in enumerate(a, 1):
        prev_diag, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev_diag, row[j] = row[j], min(row[j] + 1,  # delete x
                                            row[j - 1] + 1,  # insert y
                                            prev_diag + (x != y))  # substitute (free when equal)
    return row[-1]


def _anls_text(text: str) -> str:
    """Lower-case, strip and collapse runs of whitespace to one space (case-insensitive, space-sensitive)."""
    return " ".join(text.strip().lower().split())


def anls(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """ANLS of one ``prediction`` against the accepted ``answers`` of its question, in [0, 1]: the best over the
    answers of ``1 - NLD`` if ``NLD < threshold`` else 0, where ``NLD = levenshtein(p, a) / max(len(p), len(a))``
    (0 when both are empty) on lower-cased, stripped, whitespace-collapsed strings.

    Conventions follow the ``anls`` package and the paper: the cut is strict (``NLD == threshold`` scores 0; the
    ST-VQA/DocVQA server script keeps ``1 - NLD`` when it equals the threshold, which differs only on that
    boundary), and lengths are those of the upper-cased strings, as both scripts measure them (this differs from
    ``len`` only for characters such as "ß"). Explained in notebook 07, §VQA accuracy.
    """
    prediction = _anls_text(_check_text(prediction, "prediction"))
    answers = [_anls_text(a) for a in _check_answers(answers, "answers")]
    threshold = _check_threshold(threshold)
    best = 0.0
    for answer in answers:
        length = max(len(prediction.upper()), len(answer.upper()))  # sic: upper-cased lengths, as the scripts do
        nld = levenshtein(prediction, answer) / length if length else 0.0
        best = max(best, 1 - nld if nld < threshold else 0.0)
    return best


def anls_score(predictions: Sequence[str], answer_lists: Sequence[Sequence[str]], threshold: float = 0.5) -> float:
    """Mean :func:`anls` over questions: ``predictions`` (one per question) against ``answer_lists`` (the accepted
    answers of each question). Explained in notebook 07, §VQA accuracy."""
    _check_batch(predictions, answer_lists)
    threshold = _check_threshold(threshold)
    scores = []
    for i, (prediction, answers) in enumerate(zip(predictions, answer_lists)):
        _check_text(prediction, f"predictions[{i}]")
        _check_answers(answers, f"answer_lists[{i}]")
        scores.append(anls(prediction, answers, threshold))
    return sum(scores) / len(scores)
