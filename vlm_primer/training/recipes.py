"""Recipes for ``python -m vlm_primer.train <recipe>``: named ways to build a training job.

A chapter package registers its recipes in its own module, by convention
``vlm_primer/<chapter>/recipes.py``::

    from vlm_primer.training.recipes import RecipeArgs, TrainJob, register_recipe

    @register_recipe("clip", help="CLIP on Shapes World captions (chapter 02)")
    def clip_recipe(args: RecipeArgs) -> TrainJob:
        model = CLIP(CLIPConfig.from_preset(args.preset))
        data = shard_loader(args.shards, args.batch_size or 64, collate) if args.shards else ShapesCaptionDataset(...)
        return TrainJob(model, data, TrainConfig.from_preset(args.preset, lr=5e-4), collate_fn=...)

and names it in :data:`RECIPE_MODULES`. The CLI imports only the module of the recipe asked for (all of
them only for ``--list`` or an unknown name), so ``import vlm_primer.training`` stays light, a chapter's
import errors surface only when one of its recipes is wanted, and a notebook that trains ``llava``
does not depend on the video package's files (the book re-executes a chapter when a file it imported
changes). More modules can be named with ``--recipe-module`` or the ``VLM_PRIMER_RECIPE_MODULES``
environment variable (comma-separated).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
from typing import Any, Callable, Sequence

from torch import nn

from vlm_primer.training.config import TrainConfig

#: The module that registers each of the package's recipes (a test keeps it equal to what registers them).
RECIPE_MODULES: dict[str, str] = {
    "clip": "vlm_primer.contrastive.recipes", "siglip": "vlm_primer.contrastive.recipes",
    "llip": "vlm_primer.contrastive.recipes",
    "mae": "vlm_primer.masking.recipes", "flava": "vlm_primer.masking.recipes",
    "blip": "vlm_primer.generative.recipes", "coca": "vlm_primer.generative.recipes",
    "vqvae": "vlm_primer.generative.t2i_recipes", "ar_t2i": "vlm_primer.generative.t2i_recipes",
    "diffusion": "vlm_primer.generative.t2i_recipes",
    "llava": "vlm_primer.backbones.recipes", "blip2": "vlm_primer.backbones.recipes",
    "flamingo": "vlm_primer.backbones.recipes",
    "dpo": "vlm_primer.recipes.train_recipes",
    "video_llava": "vlm_primer.video.recipes",
}
#: Modules imported to list every recipe (missing ones are skipped; errors inside existing ones are raised).
CHAPTER_MODULES: tuple[str, ...] = tuple(dict.fromkeys(RECIPE_MODULES.values()))


@dataclasses.dataclass
class RecipeArgs:
    """What the command line hands a recipe (``None`` = not given; the recipe picks its default).

    ``options`` holds free-form ``--set key=value`` pairs (values are strings).
    """

    preset: str = "tiny"
    shards: str | None = None
    batch_size: int | None = None
    seed: int = 0
    num_workers: int = 0
    options: dict[str, str] = dataclasses.field(default_factory=dict)
    grad_accum: int | None = None   # micro-batches per optimizer step (a recipe that scales its lr reads it)

    def check_options(self, known: Sequence[str]) -> None:
        """Refuse any ``--set`` key outside ``known`` (a typo would otherwise be ignored silently)."""
        unknown = sorted(set(self.options) - set(known))
        if unknown:
            raise ValueError(f"unknown --set option(s) {unknown}; this recipe knows {known}")

    def option(self, key: str, default: Any) -> Any:
        """``--set key=value`` as the type of ``default`` (``int``, ``float``, ``bool`` or ``str``), or ``default``
        when not given; a value that does not parse is a ``ValueError`` naming the option."""
        if key not in self.options:
            return default
        text = self.options[key]
        if isinstance(default, bool):
            words = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
            if text.lower() not in words:
                raise ValueError(f"--set {key}={text}: expected 1/0, true/false or yes/no")
            return words[text.lower()]
        if isinstance(default, (int, float)):
            try:
                return type(default)(text)
            except ValueError:
                kind = "a whole number" if isinstance(default, int) else "a number"
                raise ValueError(f"--set {key}={text}: expected {kind} (default {default})") from None
        return text


@dataclasses.dataclass
class TrainJob:
    """What a recipe returns: everything the :class:`~vlm_primer.training.Trainer` needs."""

    model: nn.Module
    train_data: Any
    config: TrainConfig
    collate_fn: Callable[[list[Any]], Any] | None = None
    eval_fn: Callable[[nn.Module], dict[str, float]] | None = None


@dataclasses.dataclass
class Recipe:
    name: str
    build: Callable[[RecipeArgs], TrainJob]
    help: str = ""
    module: str = ""


_RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str, *, help: str = "") -> Callable[[Callable[[RecipeArgs], TrainJob]], Callable[[RecipeArgs], TrainJob]]:
    """Decorator: register ``fn(args: RecipeArgs) -> TrainJob`` under ``name``."""
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"recipe name must be a non-empty identifier-like string, got {name!r}")

    def decorator(fn: Callable[[RecipeArgs], TrainJob]) -> Callable[[RecipeArgs], TrainJob]:
        old = _RECIPES.get(name)
        module = getattr(fn, "__module__", "")
        if old is not None and (old.module, old.build.__qualname__) != (module, fn.__qualname__):
            raise ValueError(f"recipe {name!r} is already registered by {old.module}.{old.build.__qualname__}")
        doc = help or (fn.__doc__ or "").strip().split("\n")[0]
        _RECIPES[name] = Recipe(name, fn, doc, module)
        return fn

    return decorator


def load_extra_modules(extra: list[str] | tuple[str, ...] = ()) -> None:
    """Import ``extra`` and the ``VLM_PRIMER_RECIPE_MODULES`` modules (which must exist)."""
    env = [m.strip() for m in os.environ.get("VLM_PRIMER_RECIPE_MODULES", "").split(",") if m.strip()]
    for name in [*env, *extra]:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name.split(".")[0] and e.name != name:
                raise  # the module exists but imports something missing: show where
            raise ValueError(f"recipe module {name!r} cannot be imported ({e}); is its folder on PYTHONPATH?") from None


def load_recipe_modules(extra: list[str] | tuple[str, ...] = ()) -> None:
    """Import the chapter recipe modules that exist, plus ``extra`` (which must exist)."""
    load_extra_modules(extra)
    for name in CHAPTER_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # the chapter package itself does not exist (yet)
            found = False
        if found:
            importlib.import_module(name)


def available_recipes() -> dict[str, Recipe]:
    """Registered recipes (after importing the chapter modules), by name."""
    load_recipe_modules()
    return dict(sorted(_RECIPES.items()))


def get_recipe(name: str, extra_modules: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Look up a recipe, importing ``extra_modules``, then its module in :data:`RECIPE_MODULES` (if still needed;
    every chapter module for a name not there)."""
    load_extra_modules(extra_modules)
    if name not in _RECIPES and name in RECIPE_MODULES:
        importlib.import_module(RECIPE_MODULES[name])
    if name not in _RECIPES:
        load_recipe_modules()
    if name not in _RECIPES:
        known = ", ".join(sorted(_RECIPES)) or "none registered"
        raise ValueError(f"unknown recipe {name!r}; available: {known}")
    return _RECIPES[name]
