"""The harness's suites: Shapes World tests, each with its metric, its blind baseline and its chance level.

Explained in notebook 07, §The harness. A :class:`Suite` builds deterministic items from the model's world (test
split, so held-out compositions stay held out), runs them through one capability of an
:class:`~vlm_primer.evaluation.harness.EvalModel`, and returns one result per item: ``{"id", "type", "value", ...}``
where ``value`` is what the score averages (1/0 correctness, a VQA accuracy, a CIDEr-D). ``blind`` scores the same
items with a predictor that never sees the image (:mod:`.priors`), so every number comes with the floor that
language alone reaches. Register a new suite with :func:`register`; :data:`SUITES` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

__all__ = ["SUITES", "Suite", "balanced_items", "get_suite", "register", "render_scenes"]

Items = list[dict[str, Any]]


@dataclass(frozen=True)
class Suite:
    """One test: ``build(model, n, seed) -> items``; ``run(model, items) -> results``; ``blind(model, items, seed)
    -> results`` of the blind baseline named ``blind_name``; ``extra(model, items, results) -> dict`` of figures that
    are not a mean over items (F1, CHAIR_i). ``needs`` is the capability ``run`` uses; ``chance`` the score of random
    guessing (None where it has no meaning); ``higher_is_better`` False for error rates (CHAIR)."""

    name: str
    needs: str
    metric: str
    description: str
    build: Callable[..., Items]
    run: Callable[..., Items]
    blind: Callable[..., Items]
    blind_name: str
    default_n: int = 200
    chance: float | None = None
    extra: Callable[..., dict[str, Any]] | None = None
    higher_is_better: bool = True


SUITES: dict[str, Suite] = {}


def register(suite: Suite) -> Suite:
    if suite.name in SUITES:
        raise ValueError(f"a suite named {suite.name!r} is already registered")
    SUITES[suite.name] = suite
    return suite


def get_suite(name: str) -> Suite:
    if not isinstance(name, str) or name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)}")
    return SUITES[name]


def render_scenes(model, scenes) -> Any:
    """``scenes`` rendered at ``model``'s resolution: ``(N, 3, H, W)`` in ``[0, 1]``, what every capability takes."""
    import torch

    from vlm_primer.world import render

    return torch.stack([render(s, model.image_size) for s in scenes])


def balanced_items(types: Sequence[str], n: int, tries: int, draw: Callable[[int, str], dict | None],
                   what: str) -> Items:
    """``n`` items of each of ``types``: index ``i`` (up to ``tries``) is offered to type ``types[i % len(types)]``
    while that type still needs items, and ``draw(i, type)`` returns the item's fields, or None when index ``i``
    admits none (the item gets its ``id`` and ``type``). Too few after ``tries`` indices: a ValueError naming
    ``what`` and the counts reached."""
    items: Items = []
    counts = dict.fromkeys(types, 0)
    for index in range(tries):
        if min(counts.values()) >= n:
            break
        kind = types[index % len(types)]
        if counts[kind] >= n:
            continue
        item = draw(index, kind)
        if item is None:
            continue
        items.append({"id": len(items), "type": kind, **item})
        counts[kind] += 1
    if min(counts.values()) < n:
        raise ValueError(f"only {counts} {what} could be built from the world; ask for fewer (n={n})")
    return items


# each module registers its suites
from vlm_primer.evaluation.suites import answers, generation, matching, redteam, spatial, zeroshot  # noqa: E402,F401
