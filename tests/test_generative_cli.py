"""``python -m vlm_primer.train blip|coca`` at the tiny preset: a few steps each, checkpoints that resume, the
options checked; the base presets are the papers' shapes."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
import torch

COMMON = ["--preset", "tiny", "--batch-size", "4", "--steps", "2", "--no-progress", "--device", "cpu",
          "--set", "train_size=16"]


@pytest.mark.parametrize("recipe", ["blip", "coca"])
def test_recipe_trains_and_checks_its_options(recipe, tmp_path):
    from vlm_primer.train import main

    history = main([recipe, *COMMON, "--ckpt-dir", str(tmp_path), "--ckpt-every", "2"])
    assert history[-1]["step"] == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    with pytest.raises(SystemExit, match="^2$"), contextlib.redirect_stderr(io.StringIO()) as err:
        main([recipe, *COMMON, "--set", "stage=1"])
    assert re.search(r"unknown --set option\(s\) \['stage'\]", err.getvalue()), err.getvalue()


def test_blip_distill_option_and_base_shapes():
    from vlm_primer.generative import Blip, BlipConfig
    from vlm_primer.generative.coca import CoCa, CoCaConfig
    from vlm_primer.generative.recipes import shapes_vocab
    from vlm_primer.train import main

    history = main(["blip", *COMMON, "--set", "distill=1"])
    assert history[-1]["step"] == 2
    with pytest.raises(SystemExit, match="^2$"), contextlib.redirect_stderr(io.StringIO()) as err:
        main(["coca", *COMMON, "--set", "distill=1"])
    assert re.search("BLIP's option", err.getvalue()), err.getvalue()
    with torch.device("meta"):
        blip = Blip(BlipConfig.from_preset("base"))
        coca = CoCa(CoCaConfig.from_preset("base"))
        assert shapes_vocab(blip.cfg).text.vocab_size == 816 and shapes_vocab(coca.cfg).vocab_size == 814

    def count(m):
        return sum(p.numel() for p in m.parameters() if p.requires_grad)

    assert abs(count(blip.vision) - 86e6) < 1e6 and blip.cfg.distill  # ViT-B/16
    own = sum(count(layer.attn_dec) + count(layer.ln_attn_dec) for layer in blip.text.layers)
    assert own == 12 * (4 * 768 * 768 + 4 * 768 + 2 * 768)  # the decoder's own self-attention, nothing else
    # CoCa-Base (Yu et al. 2022, Table 1): 86 M image encoder + 297 M text decoder = 383 M
    assert abs(count(coca) - 383e6) / 383e6 < 0.02
