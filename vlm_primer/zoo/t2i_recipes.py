"""The zoo's text-to-image models for notebook 04b: a VQ-VAE, an early-fusion transformer and a DiT.

Explained in notebook 04b. Shapes World at 32 px (large objects, one or two per scene, the ``train`` split: the six
held-out colour-shape pairs of chapter 01 never appear), pixels in ``[-1, 1]``, the scene's caption:

* ``vqvae-tiny``: the VQ-VAE's tiny preset with EMA codebook updates and dead-code restarts, 3,000 steps of 64;
* ``ar-t2i-tiny``: the early-fusion transformer over ``vqvae-tiny``'s 64 codes and the caption, both directions,
  condition dropout 0.1 (the card records the tokenizer's SHA-256: rebuild this one after ``vqvae-tiny``);
* ``dit-tiny``: latent diffusion: the DiT's tiny preset (128 wide, a 2-block caption encoder) on ``vqvae-tiny``'s
  8 x 8 x 16 latent grid (scaled to unit variance; 2 x 2 cells per token; decoded through the nearest codes), the
  cosine schedule, epsilon-prediction, condition dropout 0.1, 10,000 steps of 32 (it too depends on ``vqvae-tiny``).

Each card measures what the chapter uses: the tokenizer's held-out reconstruction against the mean-image baseline,
its codebook usage and whether the reconstructions still read back as the right colour and shape (chapter 04b's
scene reader); the two generators' faithfulness, i.e. how often a sample for ``"a large {colour} {shape}"`` reads
back as that colour and shape, without guidance (scale 1) and with it (scale 3).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

SOURCES = ("vlm_primer.generative.vqvae:VQVAE", "vlm_primer.generative.vqvae:VectorQuantizer",
           "vlm_primer.generative.early_fusion:EarlyFusion", "vlm_primer.generative.dit:DiT",
           "vlm_primer.generative.t2i_recipes:shapes_t2i", "vlm_primer.generative.t2i_recipes:t2i_collate",
           "vlm_primer.generative.t2i_recipes:LatentCodec",
           "vlm_primer.evaluation.scene_reader:read_objects")
VQ_STEPS, VQ_BATCH, VQ_LR = 3000, 64, 2e-3
AR_STEPS, AR_BATCH, AR_LR = 3000, 32, 1e-3
DIT_STEPS, DIT_BATCH, DIT_LR = 10000, 32, 1e-3
GUIDANCE = 3.0
SAMPLE_STEPS = 25                      # DDIM steps for the DiT's samples


def vqvae_config():
    from vlm_primer.generative.vqvae import VQVAEConfig

    return VQVAEConfig.from_preset("tiny", ema=True, restart_dead=True)


def ar_config():
    from vlm_primer.generative.early_fusion import EarlyFusionConfig

    return EarlyFusionConfig.from_preset("tiny")


def dit_config(codec):
    """The tiny DiT over ``codec``'s latents: one token per 2 x 2 latent cells (16 tokens), the cosine schedule."""
    from vlm_primer.generative.dit import DiTConfig

    channels, grid, _ = codec.shape
    return DiTConfig.from_preset("tiny", image_size=grid, in_channels=channels, patch_size=2, beta_schedule="cosine")


def latent_codec(tokenizer: nn.Module | None = None):
    """``vqvae-tiny`` (or ``tokenizer``) as latent diffusion's auto-encoder."""
    from vlm_primer.generative.t2i_recipes import LatentCodec
    from vlm_primer.zoo import load

    return LatentCodec(tokenizer or load("vqvae-tiny"))


def _train(model: nn.Module, collate, steps: int, batch: int, lr: float, seed: int, progress: bool,
           weight_decay: float = 0.0) -> list[dict]:
    from vlm_primer.generative.t2i_recipes import shapes_t2i
    from vlm_primer.training import ResumableLoader, TrainConfig, Trainer

    data = shapes_t2i("train", steps * batch, seed=seed)
    loader = ResumableLoader(data, batch, collate_fn=collate, shuffle=True, seed=seed)
    cfg = TrainConfig(max_steps=steps, batch_size=batch, lr=lr, weight_decay=weight_decay,
                      warmup_steps=max(1, steps // 20), log_every=max(1, steps // 20), seed=seed, device="cpu",
                      progress=progress, live_plot=False)
    return Trainer(model, loader, cfg).fit()


def train_vqvae(steps: int = VQ_STEPS, seed: int = 0, progress: bool = False, batch: int = VQ_BATCH, **changes
                ) -> tuple[nn.Module, list]:
    """A fresh tiny VQ-VAE (EMA codebook, dead-code restarts unless ``changes`` say otherwise) trained on scenes."""
    from vlm_primer.generative.t2i_recipes import _images_only
    from vlm_primer.generative.vqvae import VQVAE
    from vlm_primer.utils import seed_everything

    seed_everything(seed)
    model = VQVAE(vqvae_config().replace(**changes))
    history = _train(model, _images_only, steps, batch, VQ_LR, seed, progress)
    return model.eval(), history


def train_ar(steps: int = AR_STEPS, seed: int = 0, progress: bool = False, tokenizer: nn.Module | None = None
             ) -> tuple[nn.Module, list]:
    """A fresh tiny early-fusion model trained on scenes tokenized by ``tokenizer`` (default: ``vqvae-tiny``)."""
    from vlm_primer.generative.early_fusion import EarlyFusion
    from vlm_primer.generative.t2i_recipes import t2i_collate
    from vlm_primer.utils import seed_everything
    from vlm_primer.zoo import load

    vq = (tokenizer or load("vqvae-tiny")).eval()
    seed_everything(seed)
    model = EarlyFusion(ar_config())
    history = _train(model, t2i_collate(model.cfg.max_text, vq), steps, AR_BATCH, AR_LR, seed, progress, 0.05)
    return model.eval(), history


def train_dit(steps: int = DIT_STEPS, seed: int = 0, progress: bool = False, codec=None) -> tuple[nn.Module, list]:
    """A fresh tiny DiT trained on the latents of scenes (``codec``, default :func:`latent_codec`) and captions."""
    from vlm_primer.generative.dit import DiT
    from vlm_primer.generative.t2i_recipes import t2i_collate
    from vlm_primer.utils import seed_everything

    codec = codec or latent_codec()
    seed_everything(seed)
    model = DiT(dit_config(codec))
    history = _train(model, t2i_collate(model.cfg.text.context_length, latents=codec), steps, DIT_BATCH, DIT_LR,
                     seed, progress)
    return model.eval(), history


# --------------------------------------------------------------------------- measurements


def test_scenes(n: int = 256, num_objects: Any = 1, split: str = "test", seed: int = 0):
    """``n`` test scenes: images in ``[-1, 1]`` and each scene's first object as ``(colour, shape)``."""
    from vlm_primer.generative.t2i_recipes import shapes_t2i

    ds = shapes_t2i(split, n, seed=seed, num_objects=num_objects)
    items = [ds[i] for i in range(n)]
    objs = [it["scene"].objects[0] for it in items]
    return torch.stack([it["image"] for it in items]), [(o.color, o.shape) for o in objs]


def prompts(per_prompt: int = 2) -> tuple[list[str], list[tuple[str, str]]]:
    """``"a large {colour} {shape}"`` for every colour-shape pair of the world, ``per_prompt`` times each."""
    from vlm_primer.world.vocab import COLORS, SHAPES

    pairs = [(c, s) for c in COLORS for s in SHAPES for _ in range(per_prompt)]
    return [f"a large {c} {s}" for c, s in pairs], pairs


def encode(texts: list[str], max_length: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions as the models read them: ``<bos> ... <eos>`` padded to ``max_length``."""
    from vlm_primer.text import Tokenizer

    enc = Tokenizer.load()(texts, max_length=max_length, add_bos=True)
    return enc["input_ids"], enc["attention_mask"]


@torch.no_grad()
def generate(name: str, model: nn.Module, texts: list[str], guidance: float, seed: int = 0,
             tokenizer: nn.Module | None = None, steps: int = SAMPLE_STEPS, codec=None) -> torch.Tensor:
    """Images in ``[0, 1]`` for ``texts`` from the zoo generator ``name`` (``ar-t2i-tiny`` or ``dit-tiny``; both
    decode through ``vqvae-tiny`` unless ``tokenizer`` / ``codec`` is given)."""
    from vlm_primer.generative.t2i_recipes import to_unit_range
    from vlm_primer.zoo import load

    ids, mask = encode(texts)
    g = torch.Generator().manual_seed(seed)
    if name == "dit-tiny":
        codec = codec or latent_codec(tokenizer)
        z = model.sample(ids, mask, steps=steps, sampler="ddim", guidance_scale=guidance, generator=g,
                         clip_sample=False)   # latents are not bounded to [-1, 1]
        x = codec.decode(z)
    else:
        vq = tokenizer or load("vqvae-tiny")
        x = vq.detokenize(model.generate_image(ids, mask, guidance_scale=guidance, generator=g))
    return to_unit_range(x)


def faithfulness(name: str, model: nn.Module, tokenizer: nn.Module | None = None) -> dict[str, float]:
    """How often samples read back as their prompt's colour and shape, at guidance 1 and at :data:`GUIDANCE`."""
    from vlm_primer.evaluation.scene_reader import reading_accuracy
    from vlm_primer.world.splits import DEFAULT_HELD_OUT

    texts, pairs = prompts()
    seen = [p not in DEFAULT_HELD_OUT for p in pairs]
    out = {}
    for s in (1.0, GUIDANCE):
        images = generate(name, model, texts, s, tokenizer=tokenizer)
        key = f"s{s:g}"
        both = reading_accuracy(images, pairs, sizes=("large",))
        out[f"color_{key}"], out[f"shape_{key}"], out[f"both_{key}"] = both["color"], both["shape"], both["both"]
        idx = [i for i, k in enumerate(seen) if not k]
        out[f"both_heldout_{key}"] = reading_accuracy(images[idx], [pairs[i] for i in idx], sizes=("large",))["both"]
    return {k: round(v, 4) for k, v in out.items()}


@torch.no_grad()
def reconstruction(model: nn.Module) -> dict[str, float]:
    """Held-out reconstruction error against the mean-image baseline, codebook use, and reading the reconstructions."""
    from vlm_primer.evaluation.scene_reader import reading_accuracy
    from vlm_primer.generative.t2i_recipes import to_unit_range

    x, pairs = test_scenes(256)
    out = model.eval()(x)
    baseline = (x - test_scenes(1024, split="train")[0].mean(0, keepdim=True)).pow(2).mean()
    read = reading_accuracy(to_unit_range(out.reconstruction), pairs, sizes=("large",))
    return {"recon_mse": round(out.recon_loss.item(), 5), "mean_image_mse": round(baseline.item(), 5),
            "recon_ratio": round(out.recon_loss.item() / baseline.item(), 4),
            "perplexity": round(float(out.perplexity), 2), "usage": round(float(out.usage), 4),
            "read_color": read["color"], "read_shape": read["shape"], "read_both": read["both"]}


def measure(name: str, model: nn.Module) -> dict[str, float]:
    """The card's figures (see the module docstring)."""
    if name == "vqvae-tiny":
        return reconstruction(model)
    return faithfulness(name, model.float().eval())


def vqvae_tiny(steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The VQ-VAE tokenizer: 3,000 steps of 64 scenes, EMA codebook (decay 0.99) and dead-code restarts."""
    model, _ = train_vqvae(steps or VQ_STEPS, progress=progress)
    return model, measure("vqvae-tiny", model)


def ar_t2i_tiny(steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The early-fusion transformer: 3,000 steps of 32 scenes as ``vqvae-tiny`` codes and captions, half of them
    caption -> image and half image -> caption."""
    model, _ = train_ar(steps or AR_STEPS, progress=progress)
    return model, measure("ar-t2i-tiny", model)


def dit_tiny(steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Latent diffusion: a DiT trained for 10,000 steps of 32 scenes' ``vqvae-tiny`` latents and captions,
    epsilon-prediction on the cosine schedule."""
    model, _ = train_dit(steps or DIT_STEPS, progress=progress)
    return model, measure("dit-tiny", model)


RECIPES = {"vqvae-tiny": vqvae_tiny, "ar-t2i-tiny": ar_t2i_tiny, "dit-tiny": dit_tiny}
