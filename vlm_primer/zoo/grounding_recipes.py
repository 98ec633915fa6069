"""The zoo's grounder: chapter 06b's X-VLM-style box regression, trained from ``clip-tiny-pairs``.

Explained in notebook 06b, §Grounding. Kept apart from the other recipe modules so that their hashes do not move;
this recipe's hash covers this file and the code it trains (``SOURCES``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

SOURCES = ("vlm_primer.recipes.xvlm:Grounder", "vlm_primer.recipes.grounding:referring_items",
           "vlm_primer.recipes.grounding:box_loss", "vlm_primer.recipes.grounding:BoxHead")
STEPS, BATCH, LR, NEW_LR_FACTOR, TRAIN_ITEMS = 3000, 32, 3e-4, 5, 24_000
GROUNDING_WORLD = dict(max_objects=3)      # on top of the zoo's world: up to three objects, some of them twins
TEST_ITEMS, TEST_SEED = 600, 2


def world():
    """The world of the grounding items: the zoo's (48 px, large objects) with up to three objects."""
    from vlm_primer.world import WorldConfig
    from vlm_primer.zoo.recipes import WORLD

    return WorldConfig(**(WORLD | GROUNDING_WORLD))


def referring_collate(tokenizer, transform):
    """Referring items -> the grounder's batch: normalised images, the tokenised expressions, the boxes."""
    from vlm_primer.zoo.recipes import CONTEXT

    def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        enc = tokenizer([it["text"] for it in items], max_length=CONTEXT)
        return {"pixel_values": torch.stack([transform(it["image"]) for it in items]),
                "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "boxes": torch.stack([it["box"] for it in items])}

    return collate


def test_items(n: int = TEST_ITEMS) -> list[dict[str, Any]]:
    """The fixed held-out referring items (seed 2; training uses seed 1): half attribute, half relational."""
    from vlm_primer.recipes.grounding import referring_items

    return referring_items(n, world(), seed=TEST_SEED)


def measure(name: str, model: nn.Module) -> dict[str, float]:
    """Referring accuracy (IoU >= 0.5) on :func:`test_items`, by kind, and the largest-object control's."""
    from vlm_primer.recipes.grounding import largest_object_baseline, referring_accuracy
    from vlm_primer.text import Tokenizer
    from vlm_primer.zoo.recipes import normalizer, pixel_stats

    items = test_items()
    batch = referring_collate(Tokenizer.load(), normalizer(*pixel_stats()))(items)
    boxes = batch.pop("boxes")
    pred = model.float().eval().predict(**batch)
    out = {"referring_accuracy": referring_accuracy(pred, boxes)}
    for kind in ("attribute", "relation"):
        keep = [i for i, it in enumerate(items) if it["kind"] == kind]
        out[f"referring_accuracy_{kind}"] = referring_accuracy(pred[keep], boxes[keep])
    out["largest_object_baseline"] = referring_accuracy(largest_object_baseline([it["scene"] for it in items],
                                                                                world().image_size), boxes)
    return {k: round(v, 4) for k, v in out.items()}


def grounder_tiny(steps: int | None = None, progress: bool = True, seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """X-VLM's recipe at the tiny scale: ``clip-tiny-pairs``'s towers (trained on, not frozen), a 2-block
    cross-modal encoder and the box head, 3,000 steps of 32 referring expressions (24,000 items of seed 1, half
    of them relational), AdamW at 3e-4 for the towers and 1.5e-3 for the new layers, L1 + GIoU."""
    from vlm_primer import zoo
    from vlm_primer.recipes.grounding import referring_items
    from vlm_primer.recipes.xvlm import Grounder
    from vlm_primer.text import Tokenizer
    from vlm_primer.training import ResumableLoader, Trainer, TrainConfig
    from vlm_primer.utils import seed_everything
    from vlm_primer.zoo.recipes import normalizer, pixel_stats

    steps = steps or STEPS
    seed_everything(seed)
    model = Grounder.from_clip(zoo.load("clip-tiny-pairs").float()).train()
    items = referring_items(min(TRAIN_ITEMS, steps * BATCH), world(), seed=1 + seed)
    collate = referring_collate(Tokenizer.load(), normalizer(*pixel_stats()))
    config = TrainConfig(max_steps=steps, batch_size=BATCH, lr=LR, warmup_steps=min(100, steps // 5),
                         weight_decay=0.01, log_every=max(1, steps // 20), seed=seed, device="cpu", progress=progress,
                         live_plot=False)
    # X-VLM's practice: the pretrained encoders at a lower rate than the new cross-modal encoder and head
    new = [p for n, p in model.named_parameters() if not n.startswith("clip.")]
    optimizer = torch.optim.AdamW([{"params": model.clip.parameters(), "lr": LR},
                                   {"params": new, "lr": LR * NEW_LR_FACTOR}], lr=LR, betas=(0.9, 0.98),
                                  weight_decay=0.01)
    loader = ResumableLoader(items, BATCH, collate_fn=collate, shuffle=True, seed=seed)
    Trainer(model, loader, config, optimizer=optimizer).fit()
    return model.eval(), measure("grounder-tiny", model)


RECIPES = {"grounder-tiny": grounder_tiny}
