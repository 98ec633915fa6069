"""The zoo's masking models for notebook 03: MAE and FLAVA trained from scratch on Shapes World.

Explained in notebook 03. Chapter 02's tiny world (48 px, large objects, its pixel normalisation), one or two
objects per scene:

* ``mae-tiny``: MAE with chapter 02's image tower size (2 blocks of 64) and a 2-block decoder 32 wide, 75 % of the
  patches hidden, raw-pixel targets, 3,000 steps of 64 images from a pool of 8,192;
* ``flava-tiny``: FLAVA's tiny preset, 2,000 steps of 32 through
  :class:`~vlm_primer.masking.recipes.FlavaJointStep` (MIM on a 64-code k-means tokenizer, MLM, MMM, ITM on
  random mismatches, global contrastive).

The MAE card measures the held-out reconstruction loss against the predict-the-mean baseline and linear probes of
colour and shape on the frozen encoder; the FLAVA card zero-shot classification and chapter 02's binding probe
through ITM and through the contrastive embeddings. ``train_mae`` is also what the mask-ratio benchmark runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

SOURCES = ("vlm_primer.masking.mae:MAE", "vlm_primer.masking.flava:Flava", "vlm_primer.masking.recipes:FlavaJointStep",
           "vlm_primer.masking.recipes:flava_collate", "vlm_primer.masking.codebook:PatchCodebook",
           "vlm_primer.masking.codebook:kmeans",
           "vlm_primer.evaluation.linear_probe:linear_probe")
OBJECTS = (1, 2)
MAE_STEPS, MAE_BATCH, MAE_LR, POOL = 3000, 64, 3e-3, 8192
FLAVA_STEPS, FLAVA_BATCH, FLAVA_LR, CODES = 2000, 32, 1e-3, 64
PROBE_TRAIN, PROBE_TEST = 1000, 500


def world():
    from vlm_primer.world import WorldConfig
    from vlm_primer.zoo.recipes import WORLD

    return WorldConfig(**WORLD)


def images(split: str, n: int, seed: int = 0, num_objects: Any = OBJECTS) -> tuple[torch.Tensor, list[dict]]:
    """``n`` normalised Shapes World images of the chapter's world and their items (scene, caption, ...)."""
    from vlm_primer.world import ShapesCaptionDataset
    from vlm_primer.zoo.recipes import normalizer, pixel_stats

    ds = ShapesCaptionDataset(split, n, world(), seed=seed, num_objects=num_objects, statements=False,
                              num_paraphrases=1, transform=normalizer(*pixel_stats()))
    items = [ds[i] for i in range(n)]
    return torch.stack([it["image"] for it in items]), items


class ImagePool(torch.utils.data.Dataset):
    """A fixed set of images as ``{"pixel_values"}`` items (MAE draws a new mask every time it sees one)."""

    def __init__(self, pixels: torch.Tensor) -> None:
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixels[i]}


def mae_config(mask_ratio: float = 0.75, norm_pix_loss: bool = False):
    """The tiny MAE at chapter 02's tower size: a 2-block encoder of 64 over 8 x 8 patches of 6 px."""
    from vlm_primer.masking import MAEConfig

    cfg = MAEConfig.from_preset("tiny", mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss)
    return cfg.replace(encoder=cfg.encoder.replace(depth=2))


def train_mae(steps: int = MAE_STEPS, mask_ratio: float = 0.75, seed: int = 0, norm_pix_loss: bool = False,
              lr: float = MAE_LR, batch: int = MAE_BATCH, progress: bool = False
              ) -> tuple[nn.Module, list[dict[str, float]]]:
    """A fresh tiny MAE trained on a pool of training images (AdamW, betas (0.9, 0.95), warm-up then cosine);
    returns ``(model in eval mode, history)``."""
    from vlm_primer.masking import MAE
    from vlm_primer.training import ResumableLoader, TrainConfig, Trainer
    from vlm_primer.utils import seed_everything

    seed_everything(seed)
    model = MAE(mae_config(mask_ratio, norm_pix_loss))
    pool, _ = images("train", POOL, seed=seed)
    loader = ResumableLoader(ImagePool(pool), batch, shuffle=True, seed=seed)
    cfg = TrainConfig(max_steps=steps, batch_size=batch, lr=lr, betas=(0.9, 0.95), weight_decay=0.05,
                      warmup_steps=max(1, steps // 20), grad_clip=None, log_every=max(1, steps // 20), seed=seed,
                      device="cpu", progress=progress, live_plot=False)
    history = Trainer(model, loader, cfg).fit()
    return model.eval(), history


@torch.no_grad()
def reconstruction(model: nn.Module, n: int = 256) -> dict[str, float]:
    """Held-out reconstruction: the MAE's loss on ``n`` test scenes (a fixed mask) against the predict-the-mean
    baseline (every hidden patch predicted as the mean training target at its position)."""
    test, _ = images("test", n, seed=1)
    train, _ = images("train", 1024, seed=1)
    out = model.eval()(test, generator=torch.Generator().manual_seed(0))
    mean = model.target(train).mean(0)
    baseline = ((mean[None] - out.target).pow(2).mean(-1) * out.mask).sum() / out.mask.sum()
    return {"recon_loss": round(out.loss.item(), 4), "mean_baseline": round(baseline.item(), 4),
            "recon_ratio": round(out.loss.item() / baseline.item(), 4)}


def probe_set() -> dict[str, Any]:
    """Single-object scenes for the linear probes: train and test images with their colour and shape ids."""
    cfg = world()
    out = {}
    for split, n, seed in (("train", PROBE_TRAIN, 5), ("test", PROBE_TEST, 6)):
        x, items = images(split, n, seed=seed, num_objects=1)
        objs = [it["scene"].objects[0] for it in items]
        out[split] = (x, {"color": torch.tensor([cfg.colors.index(o.color) for o in objs]),
                          "shape": torch.tensor([cfg.shapes.index(o.shape) for o in objs])})
    return out


@torch.no_grad()
def probe_accuracy(features, probes: dict[str, Any] | None = None) -> dict[str, float]:
    """Linear-probe test accuracy of colour and shape on ``features(images) -> (N, D)``."""
    from vlm_primer.evaluation import linear_probe

    probes = probes or probe_set()
    (xtr, ytr), (xte, yte) = probes["train"], probes["test"]
    ftr, fte = features(xtr), features(xte)
    return {f"probe_{k}": round(linear_probe(ftr, ytr[k], fte, yte[k]).accuracy, 4) for k in ("color", "shape")}


def mae_tiny(steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """MAE trained from scratch on Shapes World: 3,000 steps of 64 images, 75 % of the patches hidden."""
    model, _ = train_mae(steps or MAE_STEPS, progress=progress)
    return model, measure("mae-tiny", model)


# --------------------------------------------------------------------------- FLAVA


def text_tokenizer():
    """The project tokenizer as FLAVA reads captions: ``<bos>`` (``[CLS]``) caption ``<eos>``."""
    from vlm_primer.text import Tokenizer

    tok = Tokenizer.load()
    return lambda texts, max_length=32: tok(texts, max_length=max_length, add_bos=True)


def flava_codebook():
    """FLAVA's image tokenizer here: 64 k-means codes of normalised training patches."""
    from vlm_primer.masking.recipes import shapes_codebook
    from vlm_primer.zoo.recipes import normalizer, pixel_stats

    return shapes_codebook(world(), 6, CODES, transform=normalizer(*pixel_stats()))


def train_flava(steps: int = FLAVA_STEPS, seed: int = 0, progress: bool = False) -> tuple[nn.Module, list]:
    """A fresh tiny FLAVA trained with all its objectives; returns ``(flava in eval mode, history)``."""
    from vlm_primer.masking import Flava, FlavaConfig
    from vlm_primer.masking.recipes import FlavaJointStep, flava_collate
    from vlm_primer.training import ResumableLoader, TrainConfig, Trainer
    from vlm_primer.utils import seed_everything
    from vlm_primer.world import ShapesCaptionDataset
    from vlm_primer.zoo.recipes import normalizer, pixel_stats

    seed_everything(seed)
    cfg = FlavaConfig.from_preset("tiny", codebook_size=CODES)
    step = FlavaJointStep(Flava(cfg))
    data = ShapesCaptionDataset("train", steps * FLAVA_BATCH, world(), seed=seed, num_objects=OBJECTS,
                                statements=False, num_paraphrases=1, transform=normalizer(*pixel_stats()))
    loader = ResumableLoader(data, FLAVA_BATCH, collate_fn=flava_collate(cfg, flava_codebook(), seed=seed),
                             shuffle=True, seed=seed)
    train = TrainConfig(max_steps=steps, batch_size=FLAVA_BATCH, lr=FLAVA_LR, weight_decay=0.1,
                        warmup_steps=max(1, steps // 20), log_every=max(1, steps // 20), seed=seed, device="cpu",
                        progress=progress, live_plot=False)
    history = Trainer(step, loader, train).fit()
    return step.flava.eval(), history


def flava_scores(model: nn.Module) -> dict[str, float]:
    """Zero-shot top-1 (chapter 02's names and prompts) and the binding probe through ITM and the contrastive
    embeddings: how often the true caption beats the one-word replacement (the control) and the binding swap."""
    from vlm_primer.evaluation import build_classifier, caption_probe, probe_scores, zero_shot_accuracy
    from vlm_primer.world import ShapesCaptionDataset
    from vlm_primer.zoo.recipes import ZERO_SHOT_TEMPLATES, normalizer, pixel_stats

    model, tok = model.float().eval(), text_tokenizer()
    x, items = images("test", 480, num_objects=1)
    names = [f"{c} {s}" for c in world().colors for s in world().shapes]
    classifier = build_classifier(model, tok, names, list(ZERO_SHOT_TEMPLATES), max_length=32)
    labels = torch.tensor([names.index(f"{it['scene'].objects[0].color} {it['scene'].objects[0].shape}")
                           for it in items])
    out = {"zero_shot_top1": round(float(zero_shot_accuracy(model, x, labels, classifier, topk=(1,))["top1"]), 4)}
    probe = caption_probe(ShapesCaptionDataset("test", 300, world(), num_objects=2, statements=False,
                                               transform=normalizer(*pixel_stats())))

    def itm(images_: torch.Tensor, captions: list[str]) -> torch.Tensor:
        enc = tok(captions, 32)
        return model.itm_scores(images_, enc["input_ids"], enc["attention_mask"])

    for head, score in (("itm", itm), ("itc", None)):
        rows = probe_scores(model, tok, probe, 32, score=score)
        out[f"{head}_replace_win"] = round(rows["replace one word"]["prefers_true"], 4)
        out[f"{head}_binding_win"] = round(rows["binding swap"]["prefers_true"], 4)
    return out


def flava_tiny(steps: int | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """FLAVA trained from scratch on Shapes World: 2,000 steps of 32, every objective in every step."""
    model, _ = train_flava(steps or FLAVA_STEPS, progress=progress)
    return model, measure("flava-tiny", model)


def measure(name: str, model: nn.Module) -> dict[str, float]:
    """The card's figures (see the module docstring)."""
    if name == "mae-tiny":
        return {**reconstruction(model), **probe_accuracy(model.eval().features)}
    return flava_scores(model)


RECIPES = {"mae-tiny": mae_tiny, "flava-tiny": flava_tiny}
