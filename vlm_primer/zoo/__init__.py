"""The zoo: small pretrained checkpoints that load in milliseconds, each with the command that rebuilds it.

Explained in notebook 00, §The zoo. Later chapters start from pretrained parts (a vision tower that
already tells a red circle from a blue square, a language model that already speaks the world's
language) instead of training them inside their two-minute budget. Each entry is two files in
``data/zoo/``: ``NAME.safetensors`` (fp16 weights) and ``NAME.json``, its card: the model config,
the recipe (function, steps, a hash of its source), the command that rebuilds it, the measured
quality on a fixed evaluation set, the file's size and SHA-256, the training time and, for a model that starts from
other zoo models, their SHA-256 at build time (``upstream``: rebuilding one of them makes this card stale).

    from vlm_primer.zoo import load, card
    clip = load("clip-tiny")          # our CLIP, fp32, eval mode, verified against the card's hash
    card("clip-tiny")["quality"]      # {"zero_shot_top1": ...}

``python -m vlm_primer.zoo build NAME`` (or ``make zoo``) retrains one from scratch;
``python -m vlm_primer.zoo export NAME DIR`` writes it as a ``transformers`` model
(``CLIPModel`` / ``SiglipModel`` / ``LlamaForCausalLM`` / ``LlavaForConditionalGeneration`` /
``LlavaNextForConditionalGeneration`` / ``ViTMAEForPreTraining`` plus the tokenizer) that
``from_pretrained(DIR)`` loads offline.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

import safetensors.torch
import torch
from torch import nn

from vlm_primer.training.checkpoint import alias_groups, file_sha256, fsync_path, load_weights

ZOO_DIR = Path(__file__).resolve().parents[2] / "data" / "zoo"
MODELS: dict[str, str] = {"clip-tiny": "CLIP", "clip-tiny-pairs": "CLIP", "siglip-tiny": "SigLIP",
                          "lm-tiny": "DecoderLM", "llava-tiny": "Llava", "llava-next-tiny": "LlavaNext",
                          "qformer-tiny": "Blip2Stage1", "blip2-tiny": "Blip2", "instructblip-tiny": "InstructBlip", "flamingo-tiny": "Flamingo",
                          "blip-tiny": "Blip", "coca-tiny": "CoCa", "mae-tiny": "MAE", "flava-tiny": "Flava",
                          "vqvae-tiny": "VQVAE", "ar-t2i-tiny": "EarlyFusion", "dit-tiny": "DiT",
                          "clip-spurious-tiny": "CLIP", "clip-spurious-control-tiny": "CLIP", "clip-dejavu-a-tiny": "CLIP",
                          "clip-dejavu-b-tiny": "CLIP", "clip-dejavu-a-masked-tiny": "CLIP",
                          "grounder-tiny": "Grounder", "video-llava-tiny": "LlavaNextVideo"}


def _check_name(name: str) -> str:
    if name not in MODELS:
        raise ValueError(f"unknown zoo model {name!r}; choose one of {tuple(MODELS)}")
    return name


def _recipe_module(name: str):
    """The module that holds ``name``'s recipe and its ``measure``: ``zoo/recipes.py``, ``zoo/llava_recipes.py``,
    ``zoo/llava_next_recipes.py``, ``zoo/bottleneck_recipes.py``, ``zoo/generative_recipes.py``,
    ``zoo/masking_recipes.py``, ``zoo/t2i_recipes.py``, ``zoo/evaluation_recipes.py``,
    ``zoo/grounding_recipes.py`` or ``zoo/video_recipes.py``."""
    _check_name(name)
    return next(m for m in _recipe_modules() if name in m.RECIPES)


def _recipe_modules() -> tuple:
    from vlm_primer.zoo import (bottleneck_recipes, evaluation_recipes, generative_recipes, grounding_recipes,
                                llava_next_recipes, llava_recipes, masking_recipes, recipes, t2i_recipes, video_recipes)

    return (recipes, llava_recipes, llava_next_recipes, bottleneck_recipes, generative_recipes, masking_recipes,
            t2i_recipes, evaluation_recipes, grounding_recipes, video_recipes)


def recipes_table() -> dict[str, Any]:
    """Every zoo recipe by model name."""
    return {name: fn for m in _recipe_modules() for name, fn in m.RECIPES.items()}


def recipe_hash(name: str) -> str:
    """A hash of the source of ``name``'s recipe module (every recipe and its helpers) and of the functions it
    lists in ``SOURCES`` (``"module:name"``), tagged with ``name``."""
    import importlib

    module = _recipe_module(name)
    parts = [inspect.getsource(module)]
    for source in getattr(module, "SOURCES", ()):
        mod, _, attr = source.partition(":")
        parts.append(inspect.getsource(getattr(importlib.import_module(mod), attr)))
    return hashlib.sha256("".join(parts).encode()).hexdigest()[:16] + ":" + name


def _rebuild(name: str) -> str:
    """The hint every missing, damaged or stale zoo file ends with."""
    return f"rebuild it with `python -m vlm_primer.zoo build {name} --overwrite`"


CARD_KEYS = frozenset({"name", "model", "config", "recipe", "command", "quality", "preprocess", "sha256", "params"})


def card(name: str, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The card of a zoo model (a dict, from ``NAME.json``)."""
    path = Path(root or ZOO_DIR) / f"{_check_name(name)}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {_rebuild(name)}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); {_rebuild(name)}")
    if not isinstance(meta, dict):
        problem = "not a JSON object"
    elif CARD_KEYS - meta.keys():
        problem = f"no {sorted(CARD_KEYS - meta.keys())}"
    elif not isinstance(meta["config"], dict) or not isinstance(meta["sha256"], str):
        problem = "its config or sha256 is of the wrong type"
    else:
        return meta
    raise ValueError(f"{path} is not a complete zoo card ({problem}); {_rebuild(name)}")


def _model_from_config(name: str, config: dict[str, Any]) -> nn.Module:
    kind = MODELS[name]
    if kind == "CLIP":
        from vlm_primer.contrastive import CLIP, CLIPConfig
        return CLIP(CLIPConfig(**config))
    if kind == "SigLIP":
        from vlm_primer.contrastive import SigLIP, SigLIPConfig
        return SigLIP(SigLIPConfig(**config))
    if kind == "Llava":
        from vlm_primer.backbones import Llava, LlavaConfig
        return Llava(LlavaConfig(**config))
    if kind == "LlavaNext":
        from vlm_primer.backbones import LlavaNext, LlavaNextConfig
        return LlavaNext(LlavaNextConfig(**config))
    if kind == "LlavaNextVideo":
        from vlm_primer.video import LlavaNextVideo, LlavaNextVideoConfig
        return LlavaNextVideo(LlavaNextVideoConfig(**config))
    if kind == "Blip2Stage1":
        from vlm_primer.backbones import Blip2Stage1, QFormer, QFormerConfig
        return Blip2Stage1(QFormer(QFormerConfig(**config)))
    if kind in ("Blip", "CoCa"):
        from vlm_primer import generative
        from vlm_primer.generative import coca
        cls, cfg = (generative.Blip, generative.BlipConfig) if kind == "Blip" else (coca.CoCa, coca.CoCaConfig)
        return cls(cfg(**config))
    if kind in ("VQVAE", "EarlyFusion", "DiT"):
        from vlm_primer.generative import dit, early_fusion, vqvae
        module = {"VQVAE": vqvae, "EarlyFusion": early_fusion, "DiT": dit}[kind]
        return getattr(module, kind)(getattr(module, kind + "Config")(**config))
    if kind in ("MAE", "Flava"):
        from vlm_primer import masking
        return getattr(masking, kind)(getattr(masking, kind + "Config")(**config))
    if kind in ("Blip2", "InstructBlip", "Flamingo"):
        from vlm_primer import backbones
        return getattr(backbones, kind)(getattr(backbones, kind + "Config")(**config))
    if kind == "Grounder":
        from vlm_primer.recipes.xvlm import Grounder, GrounderConfig
        return Grounder(GrounderConfig(**config))
    from vlm_primer.nn import DecoderConfig, DecoderLM
    return DecoderLM(DecoderConfig(**config))


# While a recipe runs in :func:`build`: the zoo models it loads, by name, with the SHA-256 it got (its card's upstream).
_loaded: dict[str, str] | None = None


@contextlib.contextmanager
def _recording_loads() -> Iterator[dict[str, str]]:
    """Inside the block, every :func:`load` records its model's name and SHA-256 in the dict it yields."""
    global _loaded
    outer, _loaded = _loaded, {}
    try:
        yield _loaded
    finally:
        _loaded = outer


def load(name: str, root: str | os.PathLike | None = None, verify: bool = True) -> nn.Module:
    """Our model with the zoo weights (fp32, eval mode). ``verify`` checks the file against the card's SHA-256."""
    meta = card(name, root)
    if _loaded is not None:
        _loaded[name] = meta["sha256"]
    path = Path(root or ZOO_DIR) / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {_rebuild(name)}")
    if verify and file_sha256(path) != meta["sha256"]:
        raise ValueError(f"{path} does not match the SHA-256 on its card: the file is corrupt or stale; {_rebuild(name)}")
    # Names and shapes are checked (tied weights are stored once); the fp16 values are copied into fp32.
    return load_weights(_model_from_config(name, meta["config"]), path).float().eval()


def build(name: str, root: str | os.PathLike | None = None, *, steps: int | None = None,
          progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Train ``name`` with its recipe and write ``NAME.safetensors`` + ``NAME.json``; return the card.

    Refuses to replace existing files unless ``overwrite`` (``make zoo`` passes it). The new weights and card are
    written and measured under temporary names and replace the old pair only once both are complete, so an
    interrupted build leaves the previous model working.
    """
    RECIPES = recipes_table()
    root = Path(root or ZOO_DIR)
    weights, meta_path = root / f"{_check_name(name)}.safetensors", root / f"{name}.json"
    if (weights.exists() or meta_path.exists()) and not overwrite:
        raise FileExistsError(f"{weights} already exists; pass overwrite=True (--overwrite) to rebuild it")
    new_weights, new_card = weights.with_name(weights.name + ".tmp"), meta_path.with_name(meta_path.name + ".tmp")
    try:
        with _recording_loads() as upstream:  # what the recipe starts from, and what its measure reads
            start = time.perf_counter()
            model, quality = RECIPES[name](steps=steps, progress=progress)
            seconds = time.perf_counter() - start
            model = model.float().eval()
            root.mkdir(parents=True, exist_ok=True)
            sd = model.state_dict()
            half = {group[0]: sd[group[0]].detach().to(torch.float16).contiguous() for group in alias_groups(sd)}
            safetensors.torch.save_file(half, str(new_weights))
            os.chmod(new_weights, 0o644)
            fsync_path(new_weights)
            # The quality on the card is measured on the *saved* fp16 weights, so loading reproduces it.
            saved = load_weights(_model_from_config(name, model.cfg.to_dict()), new_weights)
            quality_fp16 = _recipe_module(name).measure(name, saved)
        meta = {
            "name": name, "model": MODELS[name], "config": model.cfg.to_dict(),
            "recipe": {"function": f"{RECIPES[name].__module__}.{RECIPES[name].__name__}", "steps": steps,
                       "source": recipe_hash(name), "doc": inspect.getdoc(RECIPES[name])},
            "command": f"python -m vlm_primer.zoo build {name} --overwrite" + (f" --steps {steps}" if steps else ""),
            "upstream": dict(sorted(upstream.items())), "data_seed": 0, "quality": quality_fp16,
            "quality_fp32": quality,
            "preprocess": _preprocess_card(name),
            "params": sum(p.numel() for p in model.parameters()), "dtype": "float16",
            "bytes": new_weights.stat().st_size, "sha256": file_sha256(new_weights),
            "train_seconds": round(seconds, 1),
            "trained_on": "CPU, " + (os.uname().machine if hasattr(os, "uname") else "unknown"),
        }
        new_card.write_text(json.dumps(meta, indent=1) + "\n")
        fsync_path(new_card)
        os.replace(new_weights, weights)  # both complete: the new pair replaces the old one
        os.replace(new_card, meta_path)
        fsync_path(root)
        return meta
    except BaseException:
        new_weights.unlink(missing_ok=True)
        new_card.unlink(missing_ok=True)
        raise


def stale_upstream(name: str, root: str | os.PathLike | None = None) -> dict[str, tuple[str, str]]:
    """The zoo models ``name`` (its card in ``root``) was built from that have been rebuilt since: ``{upstream:
    (SHA-256 on name's card, SHA-256 on the upstream's card in the zoo now)}``; empty when ``name`` is up to date
    with everything it starts from. Recipes load their upstream models from the zoo (``ZOO_DIR``)."""
    recorded = card(name, root).get("upstream", {})
    now = {up: card(up)["sha256"] for up in recorded}
    return {up: (sha, now[up]) for up, sha in recorded.items() if now[up] != sha}


def _preprocess_card(name: str) -> dict[str, Any] | None:
    """What an image must go through before the vision tower (size and normalisation), or None for text models."""
    from vlm_primer.zoo import recipes

    if MODELS[name] == "DecoderLM":
        return None
    if MODELS[name] in ("VQVAE", "EarlyFusion", "DiT"):
        from vlm_primer.generative.t2i_recipes import T2I_WORLD
        return {"image_size": 32, "range": "[-1, 1] (2 x - 1)", "world": T2I_WORLD}
    mean, std = recipes.pixel_stats()
    return {"image_size": recipes.WORLD["image_size"], "mean": mean, "std": std, "world": recipes.WORLD}


def preprocess(name: str, root: str | os.PathLike | None = None):
    """The transform a zoo vision tower expects, ``(3, H, W)`` in ``[0, 1]`` -> normalised (from the card)."""
    from vlm_primer.zoo.recipes import normalizer

    pre = card(name, root).get("preprocess")
    if not pre:
        raise ValueError(f"{name} takes no images")
    if "range" in pre:  # chapter 04b's generators work on pixels in [-1, 1]
        from vlm_primer.generative.t2i_recipes import to_model_range
        return to_model_range
    return normalizer(pre["mean"], pre["std"])


def measure(name: str, root: str | os.PathLike | None = None) -> dict[str, float]:
    """Re-measure the card's quality figure from the saved file (what the tests compare with the card)."""
    return _recipe_module(name).measure(name, load(name, root))


# Why a zoo kind has no ``transformers`` export: export refuses these before it loads the weights.
_NO_EXPORT = {
    "Blip2Stage1": "it is a Q-Former alone (vlm_primer.interop.blip2.qformer_to_hf converts its weights into a "
                   "Blip2QFormerModel)",
    "Blip": "our BLIP keeps the encoder and the decoder in one MED (transformers splits them into a retrieval and a "
            "captioning model; vlm_primer.interop.blip converts those into ours)",
    "CoCa": "transformers has no CoCa",
    "VQVAE": "transformers has no VQ-VAE",
    "EarlyFusion": "transformers has no early-fusion text-to-image model",
    "DiT": "transformers has no DiT (diffusers has DiTTransformer2DModel, class-conditioned only)",
    "Flava": "transformers' FlavaForPreTraining carries DALL-E's dVAE as its image tokenizer, ours a k-means "
             "codebook (vlm_primer.interop.flava converts FlavaForPreTraining into ours)",
    **dict.fromkeys(("Blip2", "InstructBlip", "Flamingo"),
                    "its tower is CLIP-layout (transformers' BLIP-2 and InstructBLIP take an EVA-layout one) and "
                    "lm-tiny uses grouped-query attention (IDEFICS has none); the converters in "
                    "vlm_primer.interop.blip2 / .idefics take models that fit"),
    "Grounder": "transformers has no X-VLM-style grounder (a box head on a cross-modal encoder)",
}


def export(name: str, out_dir: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Write ``name`` as a ``transformers`` model plus the tokenizer into ``out_dir`` (``save_pretrained``)."""
    from vlm_primer.text import Tokenizer

    kind = MODELS[_check_name(name)]
    if kind in _NO_EXPORT:
        raise ValueError(f"{name} has no transformers class to export to: {_NO_EXPORT[kind]}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; refusing to overwrite it")
    model = load(name, root)
    if kind == "CLIP":
        from vlm_primer.interop.clip import clip_to_hf
        hf = clip_to_hf(model)
    elif kind == "SigLIP":
        from vlm_primer.interop.siglip import siglip_to_hf
        hf = siglip_to_hf(model)
    elif kind in ("Llava", "LlavaNext"):
        from vlm_primer.interop.llava import llava_to_hf
        hf = llava_to_hf(model)
    elif kind == "LlavaNextVideo":
        from vlm_primer.interop.video_llava import llava_next_video_to_hf
        hf = llava_next_video_to_hf(model)
    elif kind == "MAE":
        from vlm_primer.interop.mae import mae_to_hf
        hf = mae_to_hf(model)
    elif kind == "DecoderLM":
        from transformers import LlamaForCausalLM

        from vlm_primer.interop import load_strict
        from vlm_primer.interop.llama import decoder_to_hf_llama, llama_config_from_decoder
        hf = load_strict(LlamaForCausalLM(llama_config_from_decoder(model.cfg)), decoder_to_hf_llama(model),
                         "LlamaForCausalLM (from the zoo)").eval()
    else:
        raise ValueError(f"{name} ({kind}) has no export to transformers")
    hf.save_pretrained(str(out))
    tokenizer = Tokenizer.load().to_hf(add_eos=kind in ("CLIP", "SigLIP"))  # text towers pool at the <eos>
    tokenizer.save_pretrained(str(out))
    if kind in ("CLIP", "SigLIP"):  # so that CLIPProcessor / AutoProcessor.from_pretrained(out) work
        _image_processor(kind, card(name, root)["preprocess"]).save_pretrained(str(out))
    return out


def _image_processor(kind: str, pre: dict[str, Any]):
    """The ``transformers`` image processor of a zoo tower: resize to its size, pixels / 255, the card's mean/std."""
    from transformers import CLIPImageProcessor, SiglipImageProcessor

    size, norm = pre["image_size"], dict(image_mean=pre["mean"], image_std=pre["std"])
    if kind == "CLIP":
        return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}, **norm)
    return SiglipImageProcessor(size={"height": size, "width": size}, **norm)


__all__ = ["MODELS", "ZOO_DIR", "build", "card", "export", "load", "measure", "preprocess", "recipe_hash",
           "stale_upstream"]
