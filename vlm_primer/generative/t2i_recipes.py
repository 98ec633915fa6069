"""Training recipes of chapter 04b: ``python -m vlm_primer.train vqvae|ar_t2i|diffusion --preset tiny|small|base``.

All three train from scratch on Shapes World scenes of one or two objects, rendered at the model's image size, with
pixels in ``[-1, 1]`` and the scene's caption (the project tokenizer, ``<bos> ... <eos>``):

* ``vqvae``: the VQ-VAE image tokenizer (reconstruction, codebook and commitment losses);
* ``ar_t2i``: the early-fusion transformer over caption and image tokens; the images are tokenized on the fly
  by a trained VQ-VAE: ``--set vqvae=zoo`` (default, ``vqvae-tiny``, 32 px) or ``--set vqvae=PATH`` (a
  checkpoint of ``train vqvae`` at the same preset);
* ``diffusion``: the text-conditioned DiT (epsilon-prediction, condition dropout for classifier-free guidance), on
  pixels, or with ``--set vqvae=zoo|PATH`` on the VQ-VAE's continuous latent grid scaled to unit variance (latent
  diffusion, as Stable Diffusion; the DiT then reads ``grid x grid`` latents of ``code_dim`` channels, patch 1).

Options (``--set key=value``): ``train_size`` (default 50 000 scenes per epoch), ``vqvae``.

    python -m vlm_primer.train vqvae --preset tiny --steps 2000 --ckpt-dir runs/vqvae
    python -m vlm_primer.train ar_t2i --preset tiny --set vqvae=runs/vqvae/step_00002000
    python -m vlm_primer.train diffusion --preset base --precision bf16 --compile --batch-size 256

Explained in notebook 04b, §Training at scale.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from vlm_primer.training.config import TrainConfig
from vlm_primer.training.recipes import RecipeArgs, TrainJob, register_recipe

__all__ = ["CAPTION_TOKENS", "OBJECTS", "T2I_WORLD", "LatentCodec", "shapes_t2i", "t2i_collate", "to_model_range",
           "to_unit_range"]

T2I_WORLD = dict(sizes=("large",))      # chapter 02's world: large objects (the image size is the model's)
OBJECTS = (1, 2)                        # one or two objects per scene
CAPTION_TOKENS = 16                     # <bos> caption <eos>, padded
OPTIONS = ("train_size", "vqvae")


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """Pixels ``[0, 1]`` -> ``[-1, 1]``, the range the VQ-VAE and the diffusion model work in."""
    return x * 2 - 1


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` -> ``[0, 1]`` (clamped), for display and for the scene reader."""
    return ((x + 1) / 2).clamp(0, 1)


def shapes_t2i(split: str, size: int, image_size: int = 32, seed: int = 0, num_objects: Any = OBJECTS, **kwargs):
    """Shapes World scenes as ``{"image": (3, H, W) in [-1, 1], "caption": str, "scene": ...}`` items."""
    from vlm_primer.world import ShapesCaptionDataset, WorldConfig

    return ShapesCaptionDataset(split, size, WorldConfig(image_size=image_size, **T2I_WORLD), seed=seed,
                                num_objects=num_objects, statements=False, num_paraphrases=1,
                                transform=to_model_range, **kwargs)


class LatentCodec:
    """Latent diffusion's auto-encoder (Rombach et al. 2022): a trained VQ-VAE's encoder maps pixels ``[-1, 1]`` to its
    continuous latent grid, scaled by ``scale`` so the latents have unit variance; :meth:`decode` snaps a latent to
    the nearest codes and runs the VQ-VAE's decoder (the VQ-regularised variant of the paper). Explained in notebook
    04b, §Diffusion."""

    def __init__(self, vqvae: nn.Module, scale: float | None = None) -> None:
        self.vqvae = vqvae.eval()
        if scale is None:  # 1 / std of the latents of 1,024 training scenes
            x = torch.stack([it["image"] for it in (lambda d: [d[i] for i in range(1024)])(
                shapes_t2i("train", 1024, vqvae.cfg.image_size, seed=12345))])
            with torch.no_grad():
                scale = 1.0 / vqvae.encode(x).std().item()
        self.scale = float(scale)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of a latent."""
        cfg = self.vqvae.cfg
        return cfg.code_dim, cfg.grid, cfg.grid

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vqvae.encode(pixel_values) * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vqvae.detokenize(self.vqvae.quantizer.nearest(latents / self.scale))


def t2i_collate(max_length: int = CAPTION_TOKENS, image_tokenizer: nn.Module | None = None,
                latents: LatentCodec | None = None) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    """Items -> ``{"pixel_values", "input_ids", "attention_mask"}``; with ``image_tokenizer`` (a VQ-VAE) the images
    become ``"image_codes"`` ``(B, N)`` instead of pixels, with ``latents`` their scaled latents (still called
    ``pixel_values``: the DiT does not care)."""
    from vlm_primer.text import Tokenizer

    tok = Tokenizer.load()

    def collate(items: list[dict]) -> dict[str, torch.Tensor]:
        enc = tok([it["caption"] for it in items], max_length=max_length, add_bos=True)
        pixels = torch.stack([it["image"] for it in items])
        out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if latents is not None:
            return {"pixel_values": latents.encode(pixels), **out}
        if image_tokenizer is None:
            return {"pixel_values": pixels, **out}
        with torch.no_grad():
            return {"image_codes": image_tokenizer.tokenize(pixels), **out}

    return collate


def _images_only(items: list[dict]) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.stack([it["image"] for it in items])}


def _job(args: RecipeArgs, model: nn.Module, image_size: int, lr: float, collate, weight_decay: float = 0.05
         ) -> TrainJob:
    """The job every recipe here builds (its options already checked): Shapes World scenes at ``image_size``."""
    train = TrainConfig.from_preset(args.preset, lr=lr, weight_decay=weight_decay)
    if args.batch_size is not None:
        train = train.replace(batch_size=args.batch_size)
    data = shapes_t2i("train", args.option("train_size", 50_000), image_size, seed=args.seed)
    return TrainJob(model, data, train, collate_fn=collate)


@register_recipe("vqvae", help="VQ-VAE image tokenizer on Shapes World (chapter 04b)")
def vqvae_recipe(args: RecipeArgs) -> TrainJob:
    from vlm_primer.generative.vqvae import VQVAE, VQVAEConfig

    args.check_options(("train_size",))
    model = VQVAE(VQVAEConfig.from_preset(args.preset))
    return _job(args, model, model.cfg.image_size, 2e-3 if args.preset == "tiny" else 3e-4, _images_only,
                weight_decay=0.0)


def image_tokenizer(spec: str, preset: str) -> nn.Module:
    """The frozen VQ-VAE ``ar_t2i`` tokenizes with: ``"zoo"`` (``vqvae-tiny``) or a checkpoint path of that preset."""
    from vlm_primer.generative.vqvae import VQVAE, VQVAEConfig
    from vlm_primer.training.checkpoint import load_weights

    if spec == "zoo":
        if preset != "tiny":
            raise ValueError(f"the zoo's vqvae-tiny tokenizes 32 px images; --preset {preset} needs a VQ-VAE trained "
                             f"at that preset: --set vqvae=PATH (a checkpoint of `train vqvae --preset {preset}`)")
        from vlm_primer.zoo import load
        vq = load("vqvae-tiny")
    else:
        vq = load_weights(VQVAE(VQVAEConfig.from_preset(preset)), spec)
    return vq.float().eval().requires_grad_(False)


@register_recipe("ar_t2i", help="early-fusion autoregressive text-to-image (and image-to-text) over VQ tokens on "
                                "Shapes World (chapter 04b)")
def ar_t2i_recipe(args: RecipeArgs) -> TrainJob:
    from vlm_primer.generative.early_fusion import EarlyFusion, EarlyFusionConfig

    args.check_options(OPTIONS)
    vq = image_tokenizer(args.options.get("vqvae", "zoo"), args.preset)
    cfg = EarlyFusionConfig.from_preset(args.preset)
    cfg = cfg.replace(codebook_size=vq.cfg.codebook_size, image_tokens=vq.cfg.num_tokens)
    model = EarlyFusion(cfg)
    return _job(args, model, vq.cfg.image_size, 1e-3 if args.preset == "tiny" else 3e-4,
                t2i_collate(cfg.max_text, vq))


@register_recipe("diffusion", help="text-conditioned DiT diffusion model (DDPM training, CFG) on Shapes World pixels, "
                                   "or on a VQ-VAE's latents with --set vqvae=zoo|PATH (chapter 04b)")
def diffusion_recipe(args: RecipeArgs) -> TrainJob:
    from vlm_primer.generative.dit import DiT, DiTConfig

    args.check_options(OPTIONS)
    cfg = DiTConfig.from_preset(args.preset)
    if "vqvae" not in args.options:
        model = DiT(cfg)
        return _job(args, model, cfg.image_size, 1e-3 if args.preset == "tiny" else 1e-4,
                    t2i_collate(cfg.text.context_length))
    codec = LatentCodec(image_tokenizer(args.options["vqvae"], args.preset))
    channels, grid, _ = codec.shape
    model = DiT(cfg.replace(image_size=grid, in_channels=channels, patch_size=1))
    return _job(args, model, codec.vqvae.cfg.image_size, 1e-3 if args.preset == "tiny" else 1e-4,
                t2i_collate(cfg.text.context_length, latents=codec))
