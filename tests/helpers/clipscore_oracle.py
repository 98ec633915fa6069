"""torchmetrics' CLIPScore on the zoo's clip-tiny exported to transformers, made to see exactly our inputs: the
oracle of chapter 07's CLIPScore tests and chapter 06's pruning tests.

torchmetrics reports ``max(100 * cos, 0)`` per pair where CLIPScore is ``max(2.5 * cos, 0)``, so ours = its / 40 per
pair (and it clips the *mean* over a batch at 0, not each pair: score pairs one by one to see the per-pair clip).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vlm_primer import zoo


class _Features(nn.Module):
    """transformers' CLIPModel with get_image_features / get_text_features returning the projected embedding.

    torchmetrics 1.9.0 normalises what these return, but under transformers >= 5 they return a
    BaseModelOutputWithPooling (Lightning-AI/torchmetrics#3407, fixed after 1.9.0 by #3408, which unwraps
    ``pooler_output`` as we do here). Everything else, the processor call and the score, is torchmetrics' code."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf, self.config = hf, hf.config

    @staticmethod
    def _tensor(out):
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_image_features(self, pixel_values):
        return self._tensor(self.hf.get_image_features(pixel_values))

    def get_text_features(self, input_ids, attention_mask=None):
        return self._tensor(self.hf.get_text_features(input_ids, attention_mask))


def torchmetrics_oracle(path: Path):
    """``() -> (model, processor)`` for torchmetrics' ``CLIPScore(model_name_or_path=...)``, exported to ``path``.

    * ``zoo.export``'s image processor reads 8-bit images (it divides by 255); torchmetrics is given the world's
      float pixels in [0, 1], so it gets the card's normalisation alone (no resize, no crop, no rescale).
    * The exported tokenizer appends ``<eos>`` as ours does (CLIP pools the text there).
    * torchmetrics only loads paths whose name has "openai", "jinaai" or "zer0int" in it; its documented other
      way in is this callable.
    """
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor

    zoo.export("clip-tiny", path)
    pre = zoo.card("clip-tiny")["preprocess"]
    CLIPImageProcessor(do_resize=False, do_center_crop=False, do_rescale=False, do_convert_rgb=False,
                       do_normalize=True, image_mean=pre["mean"], image_std=pre["std"]).save_pretrained(path)
    model = _Features(CLIPModel.from_pretrained(path, local_files_only=True).eval())
    processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
    return lambda: (model, processor)
