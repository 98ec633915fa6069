"""Small models, data and CLI recipes used by the training tests (not part of the package).

Imported by the tests and, in subprocesses, through ``PYTHONPATH=tests/helpers`` (the CLI finds the
recipes with ``--recipe-module toy_training``).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from vlm_primer.training import TrainConfig, TrainJob, register_recipe, shard_loader
from vlm_primer.training.shards import collate_samples


@dataclasses.dataclass
class ToyOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor


class ToyClassifier(nn.Module):
    """An MLP with LayerNorm and dropout: enough moving parts for optimizer, RNG and decay tests."""

    def __init__(self, dim_in: int = 8, hidden: int = 32, classes: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim_in, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, classes)
        )
        self.post_steps = 0

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> ToyOutput:
        logits = self.net(x)
        return ToyOutput(F.cross_entropy(logits, y) if y is not None else None, logits)

    def post_step(self) -> None:
        self.post_steps += 1


def checkpoint_config(tmp_path, **kw) -> TrainConfig:
    """A 3-step run of the toy classifier that checkpoints into ``tmp_path/ckpt`` (the checkpoint tests)."""
    base = dict(max_steps=3, batch_size=8, lr=1e-2, warmup_steps=1, log_every=1, progress=False,
                live_plot=False, ckpt_dir=str(tmp_path / "ckpt"))
    return TrainConfig(**{**base, **kw})


class ToyDataset(torch.utils.data.Dataset):
    """``n`` Gaussian points labelled by the argmax of a fixed random projection (learnable)."""

    def __init__(self, n: int = 64, dim: int = 8, classes: int = 4, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        self.y = (self.x @ torch.randn(dim, classes, generator=g)).argmax(-1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


class ToyTagger(nn.Module):
    """Tags each of 6 positions of a point with one of 4 classes. Its loss averages over the positions that are
    targets (the others are -100), as a language model's averages over answer tokens; ``loss_items`` counts them."""

    def __init__(self, dim_in: int = 8, positions: int = 6, classes: int = 4) -> None:
        super().__init__()
        self.net, self.positions, self.classes = nn.Linear(dim_in, positions * classes), positions, classes

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> ToyOutput:
        logits = self.net(x).view(len(x), self.positions, self.classes)
        return ToyOutput(F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100), logits)

    def loss_items(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["y"] != -100).sum())


class ToyTagDataset(ToyDataset):
    """Points with 1 to 6 tagged positions each (``y`` ``(6,)``, -100 after the last tag)."""

    def __init__(self, n: int = 64, dim: int = 8, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        self.y = (self.x @ torch.randn(dim, 6, generator=g)).gt(0).long() + 2 * torch.randint(0, 2, (n, 6), generator=g)
        self.y[torch.arange(6) >= torch.randint(1, 7, (n, 1), generator=g)] = -100


class ToyImageModel(nn.Module):
    """Pools an image to 4x4 and classifies it (for the shard pipeline test)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.head = nn.Linear(3 * 4 * 4, classes)

    def forward(self, image: torch.Tensor, y: torch.Tensor | None = None) -> ToyOutput:
        logits = self.head(F.adaptive_avg_pool2d(image, 4).flatten(1))
        return ToyOutput(F.cross_entropy(logits, y) if y is not None else None, logits)


def caption_collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    batch = collate_samples(samples)
    return {"image": batch["image"], "y": torch.tensor([len(c.split()) % 4 for c in batch["caption"]])}


@register_recipe("toy_mlp", help="test recipe: MLP on Gaussian blobs, or a linear image model on --shards")
def toy_mlp(args) -> TrainJob:
    config = TrainConfig(max_steps=4, batch_size=args.batch_size or 4, lr=1e-2, warmup_steps=1, log_every=1,
                         progress=False, live_plot=False)
    if args.shards:
        data = shard_loader(args.shards, config.batch_size, caption_collate, shuffle_buffer=8, seed=args.seed)
        return TrainJob(ToyImageModel(), data, config)
    if args.options.get("tagger") == "1":  # a loss averaged over a varying number of targets per sample
        return TrainJob(ToyTagger(), ToyTagDataset(64, seed=args.seed), config)
    dropout = float(args.options.get("dropout", 0.1))
    return TrainJob(ToyClassifier(dropout=dropout), ToyDataset(64, seed=args.seed), config)
