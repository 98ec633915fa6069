"""Text-rich Shapes World: words on objects and on signs, with OCR targets, text VQA and LLaVAR-style data.

Chapter 06b (survey §3.6) explains it. A :class:`TextScene` is a Shapes World :class:`~vlm_primer.world.Scene`
plus the texts written in it, each a :class:`Text` with its string and its box in pixels (``x0, y0, x1, y1``,
``x1``/``y1`` exclusive: every pixel the text changes lies inside it, and every border row and column of the box
holds ink). A text is written either *on an object* (centred on it, black or white by the luminance of the
object's color, and only where the whole box lies on the object) or on a *sign*: a light gray rectangle with a
gray border, in free space, with dark text. Strings are single letters, digits and the short words of
:data:`WORDS` (capital letters and digits only); the strings of one scene are distinct, so "which shape has the
word CAT on it?" has one answer.

Text is drawn with Pillow's built-in scalable font (``ImageFont.load_default(size=...)``, no font file needed) at
``SUPERSAMPLE`` times the resolution, averaged down (anti-aliasing) and composited onto :func:`render`'s image.
``text_size`` is the font's em size in pixels of the final image (a capital letter is about 0.7 of it). The
default, ``image_size // 12``, keeps the text's share of the image fixed: 5 px at 64 px (hard to read), 10 px at
128 px and 21 px at 256 px (readable), so reading text asks for resolution.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from vlm_primer.text.chat import format_chat
from vlm_primer.validate import check_choice
from vlm_primer.world.datasets import SceneDataset
from vlm_primer.world.instruct import _user, position_words
from vlm_primer.world.language import NP
from vlm_primer.world.render import object_box, object_coverage, render
from vlm_primer.world.scene import Composition, Scene, WorldConfig, check_num_objects, sample_scene
from vlm_primer.world.splits import split_compositions, split_rng
from vlm_primer.world.tasks import _check_subset, _question_item
from vlm_primer.world.vocab import COLORS, NUMBER_WORDS
from vlm_primer.world.vqa import Question, _a, _the, ten_answers, unique_ref

__all__ = ["DEFAULT_VOCABULARY", "DIGITS", "LETTERS", "TEXT_INSTRUCTION_KINDS", "TEXT_QUESTION_TYPES", "WORDS", "Text",
           "TextInstructDataset", "TextQuestion", "TextScene", "TextVQADataset", "ask_text", "ask_text_any",
           "check_text_size", "check_vocabulary", "describe_text_scene", "ocr_targets", "render_text_scene",
           "sample_text_scene", "text_instruction", "text_mask"]

WORDS: tuple[str, ...] = tuple("CAT DOG SUN MAP CUP BUS KEY BOX PEN HAT TOY EGG STOP OPEN EXIT PUSH PULL SALE SHOP "
                                "CAFE TAXI BANK PARK BOOK MILK FISH BIRD TREE HOTEL PIZZA WATER LEMON".split())
LETTERS: tuple[str, ...] = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
DIGITS: tuple[str, ...] = tuple("0123456789")
DEFAULT_VOCABULARY: tuple[str, ...] = WORDS + LETTERS + DIGITS
ALLOWED_CHARS = frozenset(LETTERS + DIGITS)
MAX_TEXT_LENGTH = 8
SUPERSAMPLE = 4
SIGN_COLOR, SIGN_BORDER, _DARK, _LIGHT = (np.full((3, 1, 1), v, np.float32) for v in (0.86, 0.5, 0.0, 1.0))

TEXT_ANSWER_TYPES: dict[str, str] = {"read_object": "other", "read_sign": "other", "word_shape": "other",
                                     "word_color": "other", "word_yn": "yes/no", "count_signs": "number"}
TEXT_QUESTION_TYPES: tuple[str, ...] = tuple(TEXT_ANSWER_TYPES)
TEXT_INSTRUCTION_KINDS: tuple[str, ...] = ("describe", "conversation", "ocr")
DESCRIBE_PROMPTS = ("describe the image, including any text.", "what is in this image? read any text in it.")
OCR_PROMPTS = ("read all the text in the image.", "what is written in this image?")
Box = tuple[int, int, int, int]


# --------------------------------------------------------------------------- checks


def check_vocabulary(vocabulary: object) -> tuple[str, ...]:
    """A non-empty collection of strings of 1 to 8 capital letters or digits, as a tuple without duplicates."""
    if isinstance(vocabulary, str) or not isinstance(vocabulary, Iterable):
        raise TypeError(f"vocabulary must be a list of strings such as ('CAT', 'A', '7'), got {vocabulary!r}")
    words = tuple(dict.fromkeys(vocabulary))
    if not words:
        raise ValueError("vocabulary must not be empty")
    for w in words:
        if not isinstance(w, str):
            raise TypeError(f"vocabulary entries must be str, got {w!r} ({type(w).__name__})")
        bad = "".join(sorted(set(w) - ALLOWED_CHARS))
        if bad or not 1 <= len(w) <= MAX_TEXT_LENGTH:
            raise ValueError(f"vocabulary entry {w!r} must be 1 to {MAX_TEXT_LENGTH} capital letters A-Z or digits "
                             f"0-9" + (f"; it has {bad!r}" if bad else ""))
    return words


def _sign_pad(text_size: int) -> int:
    return max(2, round(0.3 * text_size))  # the border pixel and at least one pixel of sign around the text


def check_text_size(text_size: object, image_size: int, vocabulary: Sequence[str] = DEFAULT_VOCABULARY) -> int:
    """``text_size`` (None: ``max(4, image_size // 12)``) as an int; refused when an entry of ``vocabulary`` on its
    sign would not fit in the image."""
    text_size = max(4, image_size // 12) if text_size is None else text_size
    if not isinstance(text_size, (int, np.integer)) or isinstance(text_size, bool):
        raise TypeError(f"text_size must be an int number of pixels, got {text_size!r} ({type(text_size).__name__})")
    if not 1 <= text_size <= image_size:
        raise ValueError(f"text_size must be in [1, image_size={image_size}] pixels, got {text_size}")
    pad, size = 2 * _sign_pad(int(text_size)), int(text_size)
    widest = max(vocabulary, key=lambda w: text_mask(w, size).shape[1])
    h, w = text_mask(widest, size).shape
    if w + pad > image_size or h + pad > image_size:
        raise ValueError(f"text_size={size} is too big for a {image_size} px image: {widest!r} on its sign is "
                         f"{w + pad}x{h + pad} px")
    return size


def _check_count(value: object, name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        raise TypeError(f"{name} must be an int or a (min, max) pair of ints, got {value!r}")
    if not 0 <= value[0] <= value[1] <= 8:
        raise ValueError(f"{name} must satisfy 0 <= min <= max <= 8, got {tuple(value)}")
    return int(value[0]), int(value[1])


def _check_options(cfg: object, num_objects, num_texted, num_signs, vocabulary, text_size) -> tuple:
    """The options of :func:`sample_text_scene`, checked together (datasets check them once, up front)."""
    if not isinstance(cfg, WorldConfig):
        raise TypeError(f"config must be a WorldConfig, got {type(cfg).__name__}")
    objects = check_num_objects((cfg.min_objects, cfg.max_objects) if num_objects is None else num_objects)
    texted, signs = _check_count(num_texted, "num_texted"), _check_count(num_signs, "num_signs")
    if texted[1] + signs[1] == 0:
        raise ValueError("num_texted and num_signs allow no text at all: a text-rich scene needs at least one")
    if texted[0] > objects[1]:
        raise ValueError(f"num_texted={num_texted!r} asks for more texted objects than a scene has ({objects})")
    vocab = check_vocabulary(vocabulary)
    if len(vocab) < texted[1] + signs[1]:
        raise ValueError(f"vocabulary has {len(vocab)} distinct entries but a scene may carry up to "
                         f"{texted[1] + signs[1]} texts, all different")
    return objects, texted, signs, vocab, check_text_size(text_size, cfg.image_size, vocab)


# --------------------------------------------------------------------------- scenes with text


def _kind(text: str) -> str:
    return "number" if text.isdigit() else "letter" if len(text) == 1 else "word"


@dataclass(frozen=True)
class Text:
    """A string in a scene and its pixel ``box``, written on object ``obj`` or, with ``obj=None``, on the sign
    whose rectangle is ``sign``. ``kind``: "number", "letter" or "word" (how questions name it)."""

    text: str
    box: Box
    obj: int | None = None
    sign: Box | None = None

    @property
    def kind(self) -> str:
        return _kind(self.text)


@dataclass(frozen=True)
class TextScene:
    """A scene and its texts, drawn at ``image_size`` px with text of ``text_size`` px (see the module)."""

    scene: Scene
    texts: tuple[Text, ...]
    image_size: int
    text_size: int

    def __post_init__(self) -> None:
        if not isinstance(self.scene, Scene):
            raise TypeError(f"TextScene.scene must be a Scene, got {type(self.scene).__name__}")
        object.__setattr__(self, "texts", tuple(self.texts))
        for t in self.texts:
            if not isinstance(t, Text):
                raise TypeError(f"TextScene.texts must hold Text entries, got {type(t).__name__}")
            h, w = text_mask(check_vocabulary([t.text])[0], self.text_size).shape
            if ((t.obj is None) == (t.sign is None) or (t.obj is not None and not 0 <= t.obj < len(self.scene))
                    or (t.box[2] - t.box[0], t.box[3] - t.box[1]) != (w, h)
                    or not all(0 <= v <= self.image_size for v in t.box + (t.sign or ()))):
                raise ValueError(f"texts: {t} must be on an object of the scene (obj) or on a sign, in a box of its "
                                 f"{w}x{h} px at text_size={self.text_size}, inside the image")

    @property
    def signs(self) -> tuple[Text, ...]:
        return tuple(t for t in self.texts if t.obj is None)

    @property
    def on_objects(self) -> tuple[Text, ...]:
        return tuple(t for t in self.texts if t.obj is not None)

    def text_on(self, i: int) -> str | None:
        """The text written on object ``i`` (None when it carries none)."""
        return next((t.text for t in self.texts if t.obj == i), None)

    def boxes(self) -> torch.Tensor:
        """The texts' boxes ``(N, 4)`` in pixels (float32, xyxy), in the order of ``texts``."""
        return torch.tensor([t.box for t in self.texts], dtype=torch.float32).reshape(len(self.texts), 4)


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _whole_pixels(lo: int, hi: int) -> tuple[int, int]:
    """The ink span ``[lo, hi)`` of the supersampled canvas widened, centred, to whole pixels: (start, pixels)."""
    n = -(-(hi - lo) // SUPERSAMPLE)
    return lo - (n * SUPERSAMPLE - (hi - lo)) // 2, n


@functools.lru_cache(maxsize=8192)
def text_mask(text: str, text_size: int) -> np.ndarray:
    """Anti-aliased ink ``(h, w)`` in ``[0, 1]`` of ``text`` at ``text_size`` px: drawn ``SUPERSAMPLE`` times larger,
    cropped to the ink (centred in whole pixels) and averaged down, so every border row and column holds ink: its
    extent is the text's box. Read-only (it is cached)."""
    s, font = SUPERSAMPLE, _font(int(text_size) * SUPERSAMPLE)
    x0, y0, x1, y1 = font.getbbox(text)
    canvas = Image.new("L", (x1 - x0 + 4 * s, y1 - y0 + 4 * s), 0)
    ImageDraw.Draw(canvas).text((2 * s - x0, 2 * s - y0), text, fill=255, font=font)
    ink = np.asarray(canvas, dtype=np.float32) / 255.0
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if rows.size == 0:
        return np.zeros((1, 1), np.float32)
    (r0, h), (c0, w) = _whole_pixels(rows[0], rows[-1] + 1), _whole_pixels(cols[0], cols[-1] + 1)
    mask = ink[r0:r0 + h * s, c0:c0 + w * s].reshape(h, s, w, s).mean((1, 3))
    mask.setflags(write=False)
    return mask


def _text_color(color: str) -> np.ndarray:
    r, g, b = COLORS[color]
    return _DARK if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else _LIGHT


def render_text_scene(ts: TextScene, *, return_boxes: bool = False):
    """The image ``(3, S, S)`` in ``[0, 1]`` of a :class:`TextScene`: :func:`render`'s image with the signs, then
    the texts composited on it (and the text boxes ``(N, 4)`` if asked). Deterministic."""
    if not isinstance(ts, TextScene):
        raise TypeError(f"ts must be a TextScene (from sample_text_scene), got {type(ts).__name__}")
    img = render(ts.scene, ts.image_size).numpy()
    for t in ts.signs:
        x0, y0, x1, y1 = t.sign
        img[:, y0:y1, x0:x1] = SIGN_BORDER
        img[:, y0 + 1:y1 - 1, x0 + 1:x1 - 1] = SIGN_COLOR
    for t in ts.texts:
        x0, y0, x1, y1 = t.box
        color = _DARK if t.obj is None else _text_color(ts.scene[t.obj].color)
        patch = img[:, y0:y1, x0:x1]
        patch += text_mask(t.text, ts.text_size) * (color - patch)
    image = torch.from_numpy(img)
    return (image, ts.boxes()) if return_boxes else image


def _visible(scene: Scene, i: int, size: int) -> np.ndarray:
    """Object ``i``'s coverage over the whole image, less what the objects drawn after it hide."""
    out = np.zeros((size, size), np.float32)
    for j in range(i, len(scene)):
        r0, c0, cov = object_coverage(scene[j], size)
        patch = out[r0:r0 + cov.shape[0], c0:c0 + cov.shape[1]]
        patch[:] = cov if j == i else patch * (1.0 - cov)
    return out


def _write(scene: Scene, rng: np.random.Generator, size: int, text_size: int, vocab: tuple[str, ...],
           n_texted: int, n_signs: int) -> TextScene | None:
    """Distinct texts on ``n_texted`` random objects and on ``n_signs`` signs, or None where they do not fit."""
    texts: list[Text] = []
    for i in (int(j) for j in rng.permutation(len(scene))[:n_texted]):
        visible, obj, fits = _visible(scene, i, size), scene[i], []
        for word in vocab:
            h, w = text_mask(word, text_size).shape
            x0, y0 = round(obj.x * size - w / 2), round(obj.y * size - h / 2)
            if (0 <= x0 <= size - w and 0 <= y0 <= size - h and all(t.text != word for t in texts)
                    and visible[y0:y0 + h, x0:x0 + w].min() >= 0.5):  # the whole box lies on the object
                fits.append(Text(word, (x0, y0, x0 + w, y0 + h), obj=i))
        if not fits:
            return None
        texts.append(fits[int(rng.integers(len(fits)))])
    obstacles = [(int(np.floor(b[0])), int(np.floor(b[1])), int(np.ceil(b[2])), int(np.ceil(b[3])))
                 for b in (object_box(o, size) for o in scene.objects)]
    pad = _sign_pad(text_size)
    for _ in range(n_signs):
        left = [w for w in vocab if all(t.text != w for t in texts)]
        word = left[int(rng.integers(len(left)))]
        h, w = text_mask(word, text_size).shape
        for _ in range(50):
            x0, y0 = (int(v) for v in rng.integers(0, [size - w - 2 * pad + 1, size - h - 2 * pad + 1]))
            sign = (x0, y0, x0 + w + 2 * pad, y0 + h + 2 * pad)
            if not any(sign[0] <= b[2] and b[0] <= sign[2] and sign[1] <= b[3] and b[1] <= sign[3]
                       for b in obstacles):
                break  # a free place, a pixel apart from every object and sign
        else:
            return None
        texts.append(Text(word, (x0 + pad, y0 + pad, x0 + pad + w, y0 + pad + h), sign=sign))
        obstacles.append(sign)
    return TextScene(scene, tuple(texts), size, text_size)


def sample_text_scene(rng: np.random.Generator | int, config: WorldConfig | None = None, *,
                      num_objects: int | tuple[int, int] | None = None, num_texted: int | tuple[int, int] = (1, 2),
                      num_signs: int | tuple[int, int] = (0, 1), vocabulary: Sequence[str] = DEFAULT_VOCABULARY,
                      text_size: int | None = None, allowed: set[Composition] | None = None,
                      required: set[Composition] | None = None) -> TextScene:
    """A scene (:func:`sample_scene` with ``config``, ``num_objects``, ``allowed``, ``required``) with text on
    ``num_texted`` objects and ``num_signs`` signs (each ``n`` or ``(min, max)``), distinct strings drawn from
    ``vocabulary``. An object carries only strings whose box lies on it (at the default size words fit on large
    circles, squares and hexagons, letters and digits on most shapes). ``rng``: a generator or an int seed."""
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"rng as a seed must be a non-negative int, got {rng}")
        rng = np.random.default_rng(int(rng))
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}")
    cfg = WorldConfig() if config is None else config
    objects, texted, signs, vocab, size = _check_options(cfg, num_objects, num_texted, num_signs, vocabulary,
                                                         text_size)
    for _ in range(cfg.max_tries):
        scene = sample_scene(rng, cfg, objects, allowed, required)
        n_texted = int(rng.integers(texted[0], min(texted[1], len(scene)) + 1)) if texted[0] <= len(scene) else -1
        n_signs = int(rng.integers(signs[0], signs[1] + 1))
        if n_texted >= 0 and n_texted + n_signs > 0:
            ts = _write(scene, rng, cfg.image_size, size, vocab, n_texted, n_signs)
            if ts is not None:
                return ts
    raise ValueError(f"could not write {texted} texted objects and {signs} signs in {cfg.max_tries} scenes "
                     f"(text_size={size}, image_size={cfg.image_size}); use a smaller text_size, shorter words, "
                     "fewer texts or fewer objects")


def ocr_targets(ts: TextScene) -> list[tuple[str, Box]]:
    """Every ``(text, box)`` in reading order: lines top to bottom (a text joins a line when its vertical centre
    lies within the line's first box), left to right within a line. The target of a Lumos-style recognizer."""
    if not isinstance(ts, TextScene):
        raise TypeError(f"ts must be a TextScene, got {type(ts).__name__}")
    lines: list[list[Text]] = []
    for t in sorted(ts.texts, key=lambda t: (t.box[1] + t.box[3], t.box[0])):
        if lines and lines[-1][0].box[1] <= (t.box[1] + t.box[3]) / 2 < lines[-1][0].box[3]:
            lines[-1].append(t)
        else:
            lines.append([t])
    return [(t.text, t.box) for line in lines for t in sorted(line, key=lambda t: t.box[0])]


# --------------------------------------------------------------------------- questions and instructions


@dataclass(frozen=True)
class TextQuestion(Question):
    """A :class:`~vlm_primer.world.vqa.Question` whose ``qtype`` is one of :data:`TEXT_QUESTION_TYPES`."""

    @property
    def answer_type(self) -> str:
        return TEXT_ANSWER_TYPES[self.qtype]


def _sign_names(ts: TextScene) -> list[tuple[Text, str]]:
    """Signs with a phrase that picks each out: "the sign" when alone, else "the sign at the top left" when no other
    sign shares its place."""
    if len(ts.signs) == 1:
        return [(ts.signs[0], "the sign")]
    s = ts.image_size
    where = [position_words(SimpleNamespace(x=(b[0] + b[2]) / 2 / s, y=(b[1] + b[3]) / 2 / s))
             for b in (t.sign for t in ts.signs)]
    return [(t, f"the sign at the {w}") for t, w in zip(ts.signs, where) if where.count(w) == 1]


def ask_text(ts: TextScene, rng: np.random.Generator, qtype: str,
             vocabulary: Sequence[str] = DEFAULT_VOCABULARY) -> TextQuestion | None:
    """One question of ``qtype`` (:data:`TEXT_QUESTION_TYPES`) whose answer is read off the texts (None when the type
    does not apply). Objects are named only by a phrase that picks them out alone; ``word_yn`` is "yes" or "no" with
    equal probability (while some texted object can be named), a "no" asking for another text of the image or of
    ``vocabulary``."""
    check_choice(qtype, TEXT_QUESTION_TYPES, "qtype")
    scene, choice = ts.scene, lambda items: items[int(rng.integers(len(items)))]  # noqa: E731
    refs = {i: ref for i, o in enumerate(scene.objects) if (ref := unique_ref(o, scene)) is not None}
    named = [t for t in ts.on_objects if t.obj in refs]
    if qtype in ("read_object", "read_sign"):
        pool = [(t, _the(refs[t.obj], rng)) for t in named] if qtype == "read_object" else _sign_names(ts)
        if not pool:
            return None
        t, phrase = choice(pool)
        return TextQuestion(f"what {t.kind} is written on {phrase}?", t.text, ten_answers(t.text), qtype,
                            f"the {t.kind} on {phrase} is {t.text}.", () if t.obj is None else (t.obj,))
    if qtype in ("word_shape", "word_color"):
        if not ts.on_objects:
            return None
        t = choice(ts.on_objects)
        obj = scene[t.obj]
        answer = obj.shape if qtype == "word_shape" else obj.color
        question = (f"which shape has the {t.kind} {t.text} on it?" if qtype == "word_shape" else
                    f"what color is the shape with the {t.kind} {t.text} on it?")
        return TextQuestion(question, answer, ten_answers(answer), qtype,
                            f"the {t.kind} {t.text} is on {_a(NP(obj.shape, obj.color), rng)}.", (t.obj,))
    if qtype == "word_yn":
        if bool(rng.integers(2)) and named:
            t = choice(named)
            i, asked = t.obj, t.text
        elif refs:
            i = choice(sorted(refs))
            own = ts.text_on(i)
            others = [t.text for t in ts.texts if t.text != own] if rng.random() < 0.5 else []
            pool = others or [w for w in check_vocabulary(vocabulary) if w != own]
            if not pool:  # a one-word vocabulary on the only text: nothing else to ask about
                return None
            asked = choice(pool)
        else:
            return None
        own, the = ts.text_on(i), _the(refs[i], rng)
        ans = "yes" if own == asked else "no"
        sentence = (f"yes, {the} has the {_kind(asked)} {asked} on it." if ans == "yes" else
                    f"no, {the} has " + ("no text on it." if own is None else f"the {_kind(own)} {own} on it."))
        return TextQuestion(f"is the {_kind(asked)} {asked} written on {the}?", ans, ten_answers(ans), qtype,
                            sentence, (i,))
    n, ans = len(ts.signs), NUMBER_WORDS[len(ts.signs)]  # count_signs: always applies
    sentence = "there are no signs." if n == 0 else "there is one sign." if n == 1 else f"there are {ans} signs."
    return TextQuestion("how many signs are there?", ans, ten_answers(ans), qtype, sentence)


def ask_text_any(ts: TextScene, rng: np.random.Generator, qtypes: Sequence[str] = TEXT_QUESTION_TYPES,
                 vocabulary: Sequence[str] = DEFAULT_VOCABULARY) -> TextQuestion:
    """A question of a type drawn uniformly from ``qtypes`` (redrawn while the type does not apply; ``count_signs``,
    which always applies, when none of them does)."""
    for qtype in rng.permutation(list(qtypes)):
        q = ask_text(ts, rng, str(qtype), vocabulary)
        if q is not None:
            return q
    return ask_text(ts, rng, "count_signs")  # always applies


def describe_text_scene(ts: TextScene, rng: np.random.Generator) -> str:
    """Every object with the text written on it, then every sign (LLaVAR's text-aware description): "the image
    shows a red circle with the word CAT on it, a small blue star and a sign that says STOP."."""
    parts = [_a(NP(o.shape, o.color, o.size), rng) for o in ts.scene.objects]
    for t in ts.on_objects:
        parts[t.obj] += f" with the {t.kind} {t.text} on it"
    parts += [f"a sign that says {t.text}" if t.kind == "word" else f"a sign with the {t.kind} {t.text}"
              for t in ts.signs]
    return "the image shows " + (", ".join(parts[:-1]) + " and " if len(parts) > 1 else "") + parts[-1] + "."


def text_instruction(ts: TextScene, rng: np.random.Generator, kind: str,
                     vocabulary: Sequence[str] = DEFAULT_VOCABULARY) -> list[dict[str, str]]:
    """One LLaVAR-style sample of ``kind`` (:data:`TEXT_INSTRUCTION_KINDS`) as chat messages, in the format of
    :func:`vlm_primer.world.instruct.instruction`: a description that reads the text (``describe``), 2-3 text
    questions answered in sentences (``conversation``), or the transcription in reading order (``ocr``)."""
    check_choice(kind, TEXT_INSTRUCTION_KINDS, "kind")
    if kind != "conversation":
        prompts = DESCRIBE_PROMPTS if kind == "describe" else OCR_PROMPTS
        answer = describe_text_scene(ts, rng) if kind == "describe" else " ".join(t for t, _ in ocr_targets(ts))
        return [_user(prompts[int(rng.integers(len(prompts)))], True), {"role": "assistant", "content": answer}]
    messages: list[dict[str, str]] = []
    turns = int(rng.integers(2, 4))
    for qtype in rng.permutation(list(TEXT_QUESTION_TYPES)):
        q = ask_text(ts, rng, str(qtype), vocabulary)
        if q is not None and len(messages) < 2 * turns:
            messages += [_user(q.question, not messages), {"role": "assistant", "content": q.sentence}]
    return messages


# --------------------------------------------------------------------------- datasets


class TextVQADataset(SceneDataset):
    """Text VQA (TextVQA's task) on text-rich Shapes World: one question per image, its type drawn from ``qtypes``.

    Items as :class:`~vlm_primer.world.ShapesVQADataset`'s (``image`` after ``transform``, ``question``,
    ``answer``, ``answers``, ``qtype``, ``answer_type``, ``sentence``, ``scene``, ``index``) plus ``text_scene``,
    ``text_boxes`` ``(N, 4)`` and ``ocr`` (:func:`ocr_targets`). Item ``i`` is a pure function of
    ``(seed, split, i)`` and honours ``held_out`` like every Shapes World split; the text options are those of
    :func:`sample_text_scene`.
    """

    def __init__(self, split: str = "train", size: int = 1000, config: WorldConfig | None = None, seed: int = 0,
                 num_objects: int | tuple[int, int] | None = None, held_out: Iterable[Composition] | None = None, *,
                 qtypes: Sequence[str] = TEXT_QUESTION_TYPES, num_texted: int | tuple[int, int] = (1, 2),
                 num_signs: int | tuple[int, int] = (0, 1), vocabulary: Sequence[str] = DEFAULT_VOCABULARY,
                 text_size: int | None = None, transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__(split, size, config, seed, num_objects, held_out)
        self.qtypes = _check_subset(qtypes, TEXT_QUESTION_TYPES, "qtypes")
        _, self.num_texted, self.num_signs, self.vocabulary, self.text_size = _check_options(
            self.config, self.num_objects, num_texted, num_signs, vocabulary, text_size)
        self.transform = transform

    def text_scene(self, index: int) -> tuple[TextScene, np.random.Generator]:
        """Text scene ``index`` and its generator (positioned after sampling it, for the questions)."""
        index = self._index(index)
        allowed, required = split_compositions(self.split, self.config, self.held_out)
        rng = split_rng(self.split, index, self.seed)
        return sample_text_scene(rng, self.config, num_objects=self.num_objects, num_texted=self.num_texted,
                                 num_signs=self.num_signs, vocabulary=self.vocabulary, text_size=self.text_size,
                                 allowed=allowed, required=required), rng

    def scene(self, index: int) -> tuple[Scene, np.random.Generator]:
        ts, rng = self.text_scene(index)
        return ts.scene, rng

    def question(self, index: int) -> TextQuestion:
        """The question of item ``index`` without rendering its image."""
        return ask_text_any(*self.text_scene(index), self.qtypes, self.vocabulary)

    def _item(self, ts: TextScene, index: int) -> dict[str, Any]:
        image = render_text_scene(ts)
        return {"image": image if self.transform is None else self.transform(image), "scene": ts.scene,
                "text_scene": ts, "text_boxes": ts.boxes(), "ocr": ocr_targets(ts), "index": self._index(index)}

    def __getitem__(self, index: int) -> dict[str, Any]:
        ts, rng = self.text_scene(index)
        return {**self._item(ts, index), **_question_item(ask_text_any(ts, rng, self.qtypes, self.vocabulary))}


class TextInstructDataset(TextVQADataset):
    """LLaVAR-style instructions on text-rich scenes, the kind drawn from ``kinds`` (:func:`text_instruction`).

    Items as :class:`~vlm_primer.world.ShapesInstructDataset`'s (``image``, ``messages``, ``kind``, ``text``: the
    chat template, ``scene``, ``index``) plus ``text_scene``, ``text_boxes`` and ``ocr``.
    """

    def __init__(self, split: str = "train", size: int = 1000, *args: Any,
                 kinds: Sequence[str] = TEXT_INSTRUCTION_KINDS, **kw: Any) -> None:
        super().__init__(split, size, *args, **kw)
        self.kinds = _check_subset(kinds, TEXT_INSTRUCTION_KINDS, "kinds")

    def __getitem__(self, index: int) -> dict[str, Any]:
        ts, rng = self.text_scene(index)
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        messages = text_instruction(ts, rng, kind, self.vocabulary)
        return {**self._item(ts, index), "messages": messages, "kind": kind, "text": format_chat(messages)}
