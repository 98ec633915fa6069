"""One evaluation harness for every model in the book: ``evaluate(model, suite)``.

Explained in notebook 07, §The harness. A model is wrapped once (:func:`wrap`) into an :class:`EvalModel` that
says what it can do, in four capabilities every suite is written against:

* ``match``    score aligned image-text pairs, higher = better fit (contrastive cosine, an ITM head's match
               probability, or a text prior's ``log P(text)`` that never looks at the image);
* ``caption``  write a caption for each image (BLIP and CoCa; LLaVA and LLaVA-NeXT asked for a description);
* ``answer``   answer a question about each image (the LLaVA family, BLIP-2, InstructBLIP, Flamingo);
* ``generate`` draw an image for each caption (chapter 04b's generators).

Images reach a capability as pixels in ``[0, 1]`` at the model's resolution; the wrapper applies the model's own
preprocessing. A suite (:mod:`vlm_primer.evaluation.suites`) builds its items from Shapes World in the world the
model was trained on (the zoo card's ``preprocess.world``), test split, so held-out compositions stay held out;
it scores every item, and scores its **blind baseline** on the same items (a predictor that never sees the
image). :func:`evaluate` returns one JSON-ready record: per-item results, the score with its bootstrap 95 %
interval, the blind baseline's score and interval beside it, a breakdown by item type, and the throughput.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from vlm_primer.evaluation.stats import bootstrap_ci
from vlm_primer.validate import check_int
from vlm_primer.world.instruct import DETAIL_PROMPTS

__all__ = ["CAPABILITIES", "EvalModel", "MissingCapability", "evaluate", "leaderboard", "plot_leaderboard", "wrap"]

CAPABILITIES = ("match", "caption", "answer", "generate")
# The LLaVA family's caption: its stage-2 request for a detailed description; stage 1's short-caption request is
# forgotten by then (the models answer it "yes" or "no").
DESCRIBE = DETAIL_PROMPTS[0]
ZOO_OBJECTS = (1, 2)  # objects per scene in every zoo model's training world (backbones.stages.TINY_OBJECTS)


class MissingCapability(ValueError):
    """A suite needs something the model cannot do (``evaluate("clip-tiny", "vqa")``: CLIP does not answer)."""


@dataclass
class EvalModel:
    """A model as the harness sees it: a name, its world, and a callable per capability it has (None otherwise).

    ``match(images, texts) -> (N,)`` scores aligned pairs; ``caption(images) -> list[str]``;
    ``answer(images, questions) -> list[str]``; ``generate(texts, seed) -> (N, 3, H, W)`` in ``[0, 1]``.
    ``images`` are ``(N, 3, image_size, image_size)`` in ``[0, 1]``. ``blind`` marks a scorer that ignores the
    image (a text prior): suites report it as a baseline, and it can never tell two images apart.
    ``classify(images, classnames, templates) -> (N, C)``, when set, is the model's own zero-shot classifier
    (a contrastive model's prompt-ensemble weights); otherwise suites average ``match`` over the templates.
    """

    name: str
    world: dict[str, Any] = field(default_factory=lambda: {"image_size": 48, "sizes": ("large",)})
    num_objects: tuple[int, int] = ZOO_OBJECTS
    match: Callable[[torch.Tensor, list[str]], torch.Tensor] | None = None
    caption: Callable[[torch.Tensor], list[str]] | None = None
    answer: Callable[[torch.Tensor, list[str]], list[str]] | None = None
    generate: Callable[[list[str], int], torch.Tensor] | None = None
    classify: Callable[[torch.Tensor, list[str], list[str]], torch.Tensor] | None = None
    blind: bool = False
    module: nn.Module | None = field(default=None, repr=False)

    def __post_init__(self) -> None:  # world values as tuples: hashable (suites cache priors per world)
        self.world = {k: tuple(v) if isinstance(v, list) else v for k, v in self.world.items()}

    @property
    def image_size(self) -> int:
        return int(self.world.get("image_size", 48))

    @property
    def capabilities(self) -> tuple[str, ...]:
        return tuple(c for c in CAPABILITIES if getattr(self, c) is not None)

    def need(self, capability: str, suite: str) -> Callable:
        """The callable for ``capability``, or a :class:`MissingCapability` naming what is missing."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}; choose one of {CAPABILITIES}")
        fn = getattr(self, capability)
        if fn is None:
            has = ", ".join(self.capabilities) or "nothing the harness can use"
            raise MissingCapability(f"suite {suite!r} needs a model that can {capability!r}; {self.name} can: {has}")
        return fn

    def world_config(self):
        from vlm_primer.world import WorldConfig

        return WorldConfig(**self.world)


# --------------------------------------------------------------------------------------------- adapters

def _batched(fn: Callable, n: int, batch_size: int) -> list:
    out: list = []
    for start in range(0, n, batch_size):
        out.append(fn(slice(start, min(start + batch_size, n))))
    return out


def _check_pairs(images: torch.Tensor, texts: Sequence[str]) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (N, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if len(texts) != len(images):
        raise ValueError(f"one text per image: got {len(images)} images and {len(texts)} texts")


def _contrastive(model: nn.Module, transform: Callable, tokenizer: Callable, length: int,
                 batch_size: int = 256) -> tuple[Callable, Callable]:
    """``match`` (cosine of the pair's embeddings) and ``classify`` (the prompt-ensemble zero-shot classifier)."""
    from vlm_primer.evaluation.probes import pair_similarity
    from vlm_primer.evaluation.zeroshot import build_classifier, zero_shot_classify

    def match(images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        _check_pairs(images, texts)
        return torch.cat(_batched(lambda s: pair_similarity(model, tokenizer, _pixels(images[s], transform),
                                                            list(texts[s]), length).float(), len(texts), batch_size))

    def classify(images: torch.Tensor, classnames: list[str], templates: list[str]) -> torch.Tensor:
        weights = build_classifier(model, tokenizer, classnames, templates, max_length=length)
        return zero_shot_classify(model, _pixels(images, transform), weights)

    return match, classify


def _itm(model: nn.Module, transform: Callable, tokenizer: Callable, max_length: int, batch_size: int = 256
         ) -> Callable:
    """``match`` through an image-text matching head: the probability that the pair matches."""
    def match(images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        _check_pairs(images, texts)

        def chunk(s: slice) -> torch.Tensor:
            enc = tokenizer(list(texts[s]), max_length=max_length)
            return model.itm_scores(_pixels(images[s], transform), enc["input_ids"], enc["attention_mask"]).float()

        with torch.no_grad():
            return torch.cat(_batched(chunk, len(texts), batch_size))
    return match


def _pixels(images: torch.Tensor, transform: Callable) -> torch.Tensor:
    return torch.stack([transform(im) for im in images])


def text_prior_match(model: nn.Module, tokenizer=None, batch_size: int = 256) -> Callable:
    """A blind ``match``: ``log P(<bos> text <eos>)`` under a language model, the same for every image. Explained
    in notebook 07, §Language priors (the survey's §4.2.3: BLIP's ``P(text)`` solves ARO without looking)."""
    from vlm_primer.text import Tokenizer

    tok = tokenizer or Tokenizer.load()

    def match(images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        _check_pairs(images, texts)

        def chunk(s: slice) -> torch.Tensor:
            enc = tok(list(texts[s]), add_bos=True)
            ids, mask = enc["input_ids"], enc["attention_mask"]
            logits = model(ids, attention_mask=mask).logits.float()
            logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
            return (logp * mask[:, 1:]).sum(-1)

        with torch.no_grad():
            return torch.cat(_batched(chunk, len(texts), batch_size))
    return match


def _replies(model: nn.Module, transform: Callable, batch_size: int = 100, max_new_tokens: int = 4) -> Callable:
    """``answer`` (or, with a fixed request, ``caption``) for the LLaVA family: greedy replies to each prompt."""
    from vlm_primer.backbones.inference import generate_replies
    from vlm_primer.backbones.llava_next import LlavaNext, anyres_view

    def answer(images: torch.Tensor, prompts: list[str], max_new_tokens: int = max_new_tokens) -> list[str]:
        _check_pairs(images, prompts)
        if isinstance(model, LlavaNext):
            views = [anyres_view(im, model.cfg, transform) for im in images]
            pixels, sizes = [v[0] for v in views], [v[1] for v in views]
        else:
            pixels, sizes = _pixels(images, transform), None
        return generate_replies(model, list(prompts), pixels, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                image_sizes=sizes)
    return answer


def _generator(model: nn.Module, name: str) -> Callable:
    """``generate`` for chapter 04b's zoo generators (``ar-t2i-tiny``, ``dit-tiny``): images in ``[0, 1]`` at the
    zoo's guidance scale, decoded through ``vqvae-tiny`` (:func:`vlm_primer.zoo.t2i_recipes.generate`)."""
    from vlm_primer.zoo import t2i_recipes

    if name not in ("ar-t2i-tiny", "dit-tiny"):
        raise ValueError(f"wrap a text-to-image model by its zoo name (ar-t2i-tiny, dit-tiny), got {name or 'a module'}: "
                         "it needs the zoo's VQ-VAE to turn its output into pixels")

    def generate(texts: list[str], seed: int = 0) -> torch.Tensor:
        return t2i_recipes.generate(name, model, list(texts), t2i_recipes.GUIDANCE, seed=seed).clamp(0, 1)
    return generate


def wrap(model: str | nn.Module | EvalModel, *, head: str = "itc", name: str | None = None,
         transform: Callable | None = None, world: dict[str, Any] | None = None) -> EvalModel:
    """An :class:`EvalModel` for a zoo name (``"clip-tiny"``), a model of the book, or an ``EvalModel`` (returned).

    ``head``: which score ``match`` uses where a model has two, ``"itc"`` (embedding cosine) or ``"itm"`` (BLIP's
    and FLAVA's matching head). A module that is not from the zoo needs its ``transform`` (``[0, 1]`` pixels ->
    model input) and, if it was not trained on the zoo's world, its ``world`` (:class:`WorldConfig` keywords).
    Explained in notebook 07, §The harness.
    """
    if isinstance(model, EvalModel):
        return model
    if head not in ("itc", "itm"):
        raise ValueError(f"head must be 'itc' or 'itm', got {head!r}")
    from vlm_primer import zoo

    if isinstance(model, str):
        zoo_name = model
        if zoo_name not in zoo.MODELS:
            raise ValueError(f"unknown model {zoo_name!r}: wrap a zoo name ({', '.join(zoo.MODELS)}) or a module")
        module = zoo.load(zoo_name).float().eval()
        pre = zoo.card(zoo_name).get("preprocess") or {}
        world = world or {"image_size": pre.get("image_size", 48), **(pre.get("world") or {"sizes": ["large"]})}
        transform = transform or (zoo.preprocess(zoo_name) if pre else None)
        name = name or zoo_name
    elif isinstance(model, nn.Module):
        module, zoo_name = model.eval(), None
        name = name or type(model).__name__
        world = world or {"image_size": 48, "sizes": ["large"]}
    else:
        raise TypeError(f"model must be a zoo name, an nn.Module or an EvalModel, got {type(model).__name__}")
    kind = type(module).__name__
    out = EvalModel(name=name, world=world, module=module)
    needs_pixels = kind not in ("DecoderLM", "EarlyFusion", "DiT")
    if needs_pixels and transform is None:
        raise ValueError(f"{name} ({kind}) reads images: pass transform=, the function from [0, 1] pixels to its input")
    if head == "itm" and not hasattr(module, "itm_scores"):
        raise MissingCapability(f"{name} ({kind}) has no image-text matching head; use head='itc'")
    if kind in ("CLIP", "SigLIP", "Llip", "CoCa", "Blip", "Flava"):
        from vlm_primer.text import Tokenizer

        tok = Tokenizer.load()
        bos = kind in ("CoCa", "Blip", "Flava")  # BLIP, CoCa and FLAVA read <bos> (their [CLS]) caption <eos>
        tokenizer = (lambda texts, max_length=32: tok(texts, max_length=max_length, add_bos=True)) if bos else tok
        length = 32 if bos else module.cfg.text.context_length
        out.match, out.classify = _contrastive(module, transform, tokenizer, length)
        if head == "itm":
            out.match, out.classify = _itm(module, transform, tokenizer, length), None
        if hasattr(module, "captions"):
            out.caption = lambda images: module.captions(_pixels(images, transform), tok, max_new_tokens=20)
    elif kind in ("Llava", "LlavaNext", "Blip2", "InstructBlip", "Flamingo"):
        out.answer = _replies(module, transform)
        if kind in ("Llava", "LlavaNext"):  # the only ones instruction-tuned on descriptions (BLIP-2 & co.: VQA)
            out.caption = lambda images: out.answer(images, [DESCRIBE] * len(images), max_new_tokens=48)
    elif kind == "DecoderLM":
        out.match, out.blind = text_prior_match(module), True
    elif kind in ("EarlyFusion", "DiT"):
        out.generate = _generator(module, zoo_name or "")
    if not out.capabilities:
        raise MissingCapability(f"{name} ({kind}) has no capability the harness evaluates ({', '.join(CAPABILITIES)})")
    return out


# --------------------------------------------------------------------------------------------- evaluate

def evaluate(model: str | nn.Module | EvalModel, suite: str, *, n: int | None = None, seed: int = 0,
             boot: int = 1000, keep_items: bool = True, **wrap_kw: Any) -> dict[str, Any]:
    """Run ``suite`` on ``model``: a JSON-ready record with ``score``, ``ci95`` (percentile bootstrap over items),
    the ``blind`` baseline's score and interval on the same items, a ``breakdown`` by item type (score, ``n``),
    the suite's ``extra`` figures (e.g. POPE's F1 and yes-ratio), the per-item ``items`` (unless
    ``keep_items=False``), and ``seconds`` and ``items_per_second`` of the model's pass over the items. ``n`` is the
    suite's size (its default if None): items *per type* where a suite balances its types (aro, winoground, dci,
    pug, zeroshot), probes per setting for pope, questions, scenes or prompts otherwise; the items are a pure
    function of ``(n, seed)``. Explained in notebook 07, §The harness."""
    from vlm_primer.evaluation.suites import get_suite

    spec = get_suite(suite)
    m = wrap(model, **wrap_kw)
    m.need(spec.needs, spec.name)  # fail before building anything
    n = spec.default_n if n is None else n
    check_int(n, "n")
    check_int(seed, "seed", 0)
    items = spec.build(m, n, seed)
    t0 = time.perf_counter()
    results = spec.run(m, items)
    seconds = time.perf_counter() - t0
    blind = spec.blind(m, items, seed)
    record = {"model": m.name, "suite": spec.name, "metric": spec.metric,
              "higher_is_better": spec.higher_is_better, "n": len(results), "seed": seed,
              **_summary(results, seed, boot), "blind": {"name": spec.blind_name, **_summary(blind, seed, boot)},
              "chance": spec.chance, "breakdown": _breakdown(results, blind),
              "extra": spec.extra(m, items, results) if spec.extra else {},
              "seconds": round(seconds, 3), "items_per_second": round(len(results) / max(seconds, 1e-9), 2)}
    if keep_items:  # each item with the blind baseline's value beside the model's, for paired comparisons
        record["items"] = [{**r, "blind_value": b["value"]} for r, b in zip(results, blind)]
    return record


def _summary(results: list[dict], seed: int, boot: int) -> dict[str, Any]:
    """The mean and its percentile bootstrap interval, resampling items independently: for items that come in
    clusters (POPE's several probes of one image) the interval is narrower than a per-image bootstrap's."""
    values = np.array([r["value"] for r in results], dtype=float)
    if len(values) == 0:
        raise ValueError("the suite produced no items")
    _, lo, hi = bootstrap_ci(values, n_resamples=boot, seed=seed) if len(values) > 1 else (0, values[0], values[0])
    return {"score": float(values.mean()), "ci95": [float(lo), float(hi)]}


def _breakdown(results: list[dict], blind: list[dict]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for t in sorted({r.get("type", "all") for r in results}):
        rows = [i for i, r in enumerate(results) if r.get("type", "all") == t]
        out[t] = {"n": len(rows), "score": float(np.mean([results[i]["value"] for i in rows])),
                  "blind": float(np.mean([blind[i]["value"] for i in rows]))}
    return out


def leaderboard(records: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of :func:`evaluate` records, one row per (suite, model), best first within a suite: score,
    interval, blind baseline."""
    if not records:
        raise ValueError("no records to tabulate")
    rows = [f"{'suite':<12} {'model':<18} {'metric':<26} {'score':>7} {'95% CI':>16} {'blind':>7}  blind baseline"]
    for r in sorted(records, key=lambda r: (r["suite"], -r["score"] if r.get("higher_is_better", True) else r["score"])):
        ci = f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
        rows.append(f"{r['suite']:<12} {r['model']:<18} {r['metric']:<26} {r['score']:>7.3f} {ci:>16} "
                    f"{r['blind']['score']:>7.3f}  {r['blind']['name']}")
    return "\n".join(rows)


def plot_leaderboard(records: Sequence[dict[str, Any]], ax=None):
    """One suite's records as bars with their 95 % intervals, the blind baseline of each as a black tick and the
    suite's chance level as a dotted line; returns the axes. Explained in notebook 07, §The harness."""
    import matplotlib.pyplot as plt

    suites = {r["suite"] for r in records}
    if len(suites) != 1:
        raise ValueError(f"plot one suite at a time, got records of {sorted(suites) or 'none'}")
    ax = ax or plt.subplots(figsize=(6, 0.45 * len(records) + 1))[1]
    y = np.arange(len(records))
    scores = np.array([r["score"] for r in records])
    err = np.array([[r["score"] - r["ci95"][0], r["ci95"][1] - r["score"]] for r in records]).T
    ax.barh(y, scores, xerr=err, color="tab:blue", alpha=0.8, capsize=3, label="model (95% CI)")
    ax.scatter([r["blind"]["score"] for r in records], y, marker="|", s=300, color="black", zorder=3,
               label="blind baseline")
    if records[0].get("chance") is not None:
        ax.axvline(records[0]["chance"], ls=":", color="gray", label="chance")
    ax.set_yticks(y, [r["model"] for r in records])
    ax.set_xlabel(records[0]["metric"])
    ax.set_title(records[0]["suite"])
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3, frameon=False)
    return ax


def replace(model: EvalModel, **changes: Any) -> EvalModel:
    """A copy of ``model`` with some fields changed (e.g. ``match=None`` to test a missing capability)."""
    return dataclasses.replace(model, **changes)
