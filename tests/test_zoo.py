"""The zoo: every card matches its file and its recipe, every model reproduces its card's quality from
the saved file, the recipes run, and each model exports to its ``transformers`` class."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from vlm_primer.text import Tokenizer
from vlm_primer import zoo
from vlm_primer.zoo import (MODELS, ZOO_DIR, build, card, export, load, measure, preprocess, recipe_hash,
                            stale_upstream)
from vlm_primer.zoo.recipes import _zero_shot_set

# What each card must claim at least (the chapters that use these models rely on it).
BOUNDS = {"clip-tiny": ("zero_shot_top1", ">=", 0.85), "siglip-tiny": ("zero_shot_top1", ">=", 0.80),
          "clip-tiny-pairs": ("replace_control_win", ">=", 0.85), "lm-tiny": ("val_perplexity", "<=", 3.0),
          "llava-tiny": ("vqa_all", ">=", 0.65), "llava-next-tiny": ("tiles_all", ">=", 0.70),
          # lm-tiny frozen: BLIP-2's image-only queries leave it near the blind prior (44.6 %); the instruction-aware
          # queries and Flamingo's cross-attention from the question's tokens do not
          "qformer-tiny": ("itc_zero_shot_top1", ">=", 0.3),  # chance is 1/48: stage 1 taught the queries to see
          "blip2-tiny": ("vqa_all", ">=", 0.43), "instructblip-tiny": ("vqa_all", ">=", 0.62),
          "flamingo-tiny": ("vqa_all", ">=", 0.57),
          # notebook 04 captions with them: most test scenes get every object named
          "blip-tiny": ("names_objects", ">=", 0.55), "coca-tiny": ("names_objects", ">=", 0.5),
          # notebook 03: the full MAE run ends well below the predict-the-mean baseline; FLAVA's contrastive half
          # passes chapter 02's replaced-word control
          "mae-tiny": ("recon_ratio", "<=", 0.6), "flava-tiny": ("itc_replace_win", ">=", 0.8),
          # notebook 04b: the tokenizer's reconstructions still read back right; guided early-fusion samples show
          # their prompt's colour and shape in a third of the prompts; the DiT's samples at least the colour
          "vqvae-tiny": ("read_both", ">=", 0.95), "ar-t2i-tiny": ("both_s3", ">=", 0.3),
          "dit-tiny": ("color_s1", ">=", 0.4),
          # notebook 07: the planted tint costs accuracy on conflicting backgrounds, the control's tint does not
          # associate; the déjà vu targets find the hidden object more often on their own captions
          "clip-spurious-tiny": ("gap", ">=", 0.25), "clip-spurious-control-tiny": ("tint_p", ">=", 0.05),
          "clip-dejavu-a-tiny": ("rate_gap", ">=", 0.02), "clip-dejavu-b-tiny": ("rate_gap", ">=", 0.02),
          "clip-dejavu-a-masked-tiny": ("rate_gap", "<=", 0.035),
          "grounder-tiny": ("referring_accuracy", ">=", 0.85),
          # notebook 08: it reads the objects of a clip (its blind control: 33 %), from nine frames or from one
          "video-llava-tiny": ("standard_9f_all", ">=", 0.6)}  # text randomization: a smaller gap than the target's


@pytest.mark.parametrize("name", MODELS)
def test_card_matches_its_file_and_its_recipe(name):
    c = card(name)
    path = ZOO_DIR / f"{name}.safetensors"
    assert path.stat().st_size == c["bytes"] and c["dtype"] == "float16"
    assert c["recipe"]["source"] == recipe_hash(name), (
        f"the recipe of {name} changed since it was built: rebuild it with `{c['command']}` (or `make zoo`)")
    assert c["recipe"]["steps"] is None, "the committed file must come from the full recipe"
    assert c["command"].startswith(f"python -m vlm_primer.zoo build {name}")
    assert not stale_upstream(name), (
        f"{sorted(stale_upstream(name))} were rebuilt after {name}, which starts from them: rebuild it with "
        f"`{c['command']}`")
    load(name)  # verifies the SHA-256


@pytest.mark.parametrize("name", MODELS)
def test_model_reproduces_its_card(name):
    c = card(name)
    key, op, bound = BOUNDS[name]
    measured = measure(name)
    assert measured.keys() == c["quality"].keys()
    for k, v in measured.items():
        assert v == pytest.approx(c["quality"][k], abs=2.5e-3, rel=1e-3), k
    got = measured[key]
    assert (got >= bound) if op == ">=" else (got <= bound), f"{name}: {key} = {got}, the card promises {op} {bound}"


def test_cards_name_the_zoo_models_they_start_from(tmp_path, monkeypatch):
    """A derived card records its upstream models' SHA-256; rebuilding one of them makes it stale (the recipe's
    hash alone would not notice: ``llava-next-tiny``'s recipe is unchanged when ``llava-tiny`` is retrained)."""
    assert card("llava-next-tiny")["upstream"] == {"llava-tiny": card("llava-tiny")["sha256"]}
    assert set(card("llava-tiny")["upstream"]) == {"clip-tiny-pairs", "lm-tiny"}
    assert card("lm-tiny")["upstream"] == {}
    order = list(MODELS)  # `zoo build all` (make zoo) builds in this order: every upstream model first
    assert all(order.index(up) < order.index(name) for name in MODELS for up in card(name)["upstream"])
    for name in MODELS:
        shutil.copy(ZOO_DIR / f"{name}.json", tmp_path)
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path)
    assert stale_upstream("llava-next-tiny") == {} and stale_upstream("video-llava-tiny") == {}
    rebuilt = dict(card("llava-tiny"), sha256="0" * 64)  # what a rebuild with other weights would write
    (tmp_path / "llava-tiny.json").write_text(json.dumps(rebuilt))
    assert stale_upstream("llava-next-tiny") == {"llava-tiny": (card("llava-next-tiny")["upstream"]["llava-tiny"],
                                                               "0" * 64)}
    assert stale_upstream("video-llava-tiny") == {}  # its own upstream, llava-next-tiny, was not rebuilt
    assert stale_upstream("lm-tiny") == {}


def test_recipes_run_and_cards_are_complete(tmp_path, monkeypatch):
    synced, real_fsync = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real_fsync(fd)))
    meta = build("lm-tiny", tmp_path, steps=3, progress=False)
    for written in ("lm-tiny.safetensors", "lm-tiny.json", "."):  # the files reach the disk before their renames
        assert (tmp_path / written).stat().st_ino in synced, written
    monkeypatch.undo()
    assert json.loads((tmp_path / "lm-tiny.json").read_text()) == meta
    assert meta["recipe"]["steps"] == 3 and "--steps 3" in meta["command"]
    assert isinstance(load("lm-tiny", tmp_path), torch.nn.Module)
    with pytest.raises(FileExistsError, match="overwrite"):
        build("lm-tiny", tmp_path, steps=3, progress=False)
    # a rebuild interrupted while it measures leaves the previous model working, and nothing half-written
    before = {f: (tmp_path / f).read_bytes() for f in ("lm-tiny.safetensors", "lm-tiny.json")}
    from vlm_primer.zoo import recipes as lm_recipes

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("simulated Ctrl-C while measuring")

    monkeypatch.setattr(lm_recipes, "measure", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build("lm-tiny", tmp_path, steps=3, progress=False, overwrite=True)
    monkeypatch.undo()
    assert {f: (tmp_path / f).read_bytes() for f in before} == before and not list(tmp_path.glob("*.tmp"))
    assert isinstance(load("lm-tiny", tmp_path), torch.nn.Module)
    meta = build("siglip-tiny", tmp_path, steps=2, progress=False)
    assert 0.0 <= meta["quality"]["zero_shot_top1"] <= 1.0
    meta = build("llava-tiny", tmp_path, steps=5, progress=False)
    assert meta["recipe"]["function"] == "vlm_primer.zoo.llava_recipes.llava_tiny"
    assert 0 <= meta["quality"]["vqa_all"] <= 1
    meta = build("llava-next-tiny", tmp_path, steps=2, progress=False)
    assert meta["model"] == "LlavaNext" and meta["recipe"]["steps"] == 2
    assert {"tiles_all", "squeezed_all", "tiles_shapeset_all", "squeezed_shapeset_all"} <= meta["quality"].keys()
    assert isinstance(load("llava-next-tiny", tmp_path).image_newline, torch.nn.Parameter)
    for name in ("blip2-tiny", "instructblip-tiny", "flamingo-tiny"):
        meta = build(name, tmp_path, steps=2, progress=False)
        assert meta["model"] == MODELS[name] and 0 <= meta["quality"]["vqa_all"] <= 1
    meta = build("qformer-tiny", tmp_path, steps=2, progress=False)
    assert meta["model"] == "Blip2Stage1" and 0 <= meta["quality"]["itc_zero_shot_top1"] <= 1
    assert 0 <= meta["quality"]["itg_caption_match"] <= 1
    for name in ("blip-tiny", "coca-tiny"):
        meta = build(name, tmp_path, steps=2, progress=False)
        assert meta["model"] == MODELS[name] and 0 <= meta["quality"]["cider_d"] <= 10
        with pytest.raises(ValueError, match="no transformers class"):
            export(name, tmp_path / f"hf-{name}")
    meta = build("mae-tiny", tmp_path, steps=2, progress=False)
    assert meta["model"] == "MAE" and {"recon_ratio", "probe_color", "probe_shape"} <= meta["quality"].keys()
    meta = build("flava-tiny", tmp_path, steps=2, progress=False)
    assert meta["model"] == "Flava" and 0 <= meta["quality"]["itm_binding_win"] <= 1
    with pytest.raises(ValueError, match="no transformers class"):
        export("flava-tiny", tmp_path / "hf-flava")
    with pytest.raises(ValueError, match="Q-Former alone"):
        export("qformer-tiny", tmp_path / "hf-q")
    meta = build("vqvae-tiny", tmp_path, steps=2, progress=False)     # the generators below use the real zoo's
    assert meta["model"] == "VQVAE" and meta["quality"]["recon_ratio"] > 0
    for name in ("ar-t2i-tiny", "dit-tiny"):
        meta = build(name, tmp_path, steps=2, progress=False)
        assert 0 <= meta["quality"]["both_s3"] <= 1 and meta["preprocess"]["image_size"] == 32
    with pytest.raises(ValueError, match="no transformers class"):
        export("dit-tiny", tmp_path / "hf-dit")
    with pytest.raises(ValueError, match="no transformers class"):
        export("flamingo-tiny", tmp_path / "hf")
    for name in ("clip-spurious-tiny", "clip-dejavu-a-masked-tiny"):
        meta = build(name, tmp_path, steps=2, progress=False)
        assert meta["model"] == "CLIP" and meta["recipe"]["function"].startswith("vlm_primer.zoo.evaluation_recipes")
    meta = build("grounder-tiny", tmp_path, steps=2, progress=False)
    assert meta["model"] == "Grounder" and 0 <= meta["quality"]["referring_accuracy"] <= 1
    assert meta["quality"]["largest_object_baseline"] == card("grounder-tiny")["quality"]["largest_object_baseline"]
    with pytest.raises(ValueError, match="no transformers class"):
        export("grounder-tiny", tmp_path / "hf-grounder")
    # each build recorded the zoo models its recipe loaded, the same ones the committed card names
    for path in sorted(tmp_path.glob("*.json")):
        built = json.loads(path.read_text())
        assert built["upstream"].keys() == card(built["name"])["upstream"].keys(), built["name"]
        assert all(sha == card(up)["sha256"] for up, sha in built["upstream"].items()), built["name"]


def test_llava_export_loads_in_transformers(tmp_path):
    from transformers import LlavaForConditionalGeneration

    from vlm_primer.backbones.data import prompt_ids

    ours = load("llava-tiny")
    export("llava-tiny", tmp_path / "hf")
    hf = LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    ids = torch.tensor([prompt_ids(Tokenizer.load(), "what color is the star?", ours.tokens_per_image)])
    pixels = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(ours(ids, pixels).logits, hf(input_ids=ids, pixel_values=pixels).logits, atol=1e-4)


def test_llava_next_export_loads_in_transformers(tmp_path):
    from transformers import LlavaNextForConditionalGeneration

    from vlm_primer.backbones import anyres_view
    from vlm_primer.backbones.data import prompt_ids
    from vlm_primer.backbones.stages import mosaic_set

    ours = load("llava-next-tiny")
    export("llava-next-tiny", tmp_path / "hf")
    hf = LlavaNextForConditionalGeneration.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    tiles, size = anyres_view(mosaic_set(1)[0]["image"], ours.cfg)
    ids = torch.tensor([prompt_ids(Tokenizer.load(), "what color is the star?", [ours.num_image_tokens(size)])])
    with torch.no_grad():
        want = hf(input_ids=ids, pixel_values=tiles[None], image_sizes=torch.tensor([size])).logits
        assert torch.allclose(ours(ids, [tiles], image_sizes=[size]).logits, want, atol=1e-4)


def test_video_llava_export_loads_in_transformers(tmp_path):
    from transformers import LlavaNextVideoForConditionalGeneration

    ours = load("video-llava-tiny")
    export("video-llava-tiny", tmp_path / "hf")
    hf = LlavaNextVideoForConditionalGeneration.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    ids = torch.tensor([[1] + [ours.cfg.video_token_id] * ours.tokens_per_video + [8, 9, 10]])
    videos = torch.rand(1, ours.cfg.num_frames, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = hf(input_ids=ids, pixel_values_videos=videos).logits
        assert torch.allclose(ours(ids, pixel_values_videos=videos).logits, want, atol=1e-4)


def test_damaged_or_unknown_models_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown zoo model 'gpt-9'"):
        load("gpt-9")
    for suffix in (".json", ".safetensors"):
        shutil.copy(ZOO_DIR / f"clip-tiny{suffix}", tmp_path / f"clip-tiny{suffix}")
    data = bytearray((tmp_path / "clip-tiny.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (tmp_path / "clip-tiny.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match the SHA-256 on its card.*zoo build clip-tiny"):
        load("clip-tiny", tmp_path)
    (tmp_path / "clip-tiny.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="zoo build clip-tiny --overwrite"):
        load("clip-tiny", tmp_path)
    good = json.loads((tmp_path / "clip-tiny.json").read_text())
    for damaged, what in (({k: v for k, v in good.items() if k != "sha256"}, "no \\['sha256'\\]"),
                          ([good], "not a JSON object"),
                          (dict(good, config="CLIP"), "its config or sha256 is of the wrong type")):
        (tmp_path / "clip-tiny.json").write_text(json.dumps(damaged))
        with pytest.raises(ValueError, match=f"is not a complete zoo card \\({what}.*zoo build clip-tiny --overwrite"):
            load("clip-tiny", tmp_path)


def test_export_refuses_from_the_kind_before_reading_weights(tmp_path):
    """Every kind either exports or is refused with its reason, and the refusal comes before the weights are read:
    the root here has no cards and no weights, so a load would fail with FileNotFoundError instead."""
    from vlm_primer.zoo import _NO_EXPORT

    assert set(MODELS.values()) - set(_NO_EXPORT) == {"CLIP", "SigLIP", "Llava", "LlavaNext", "LlavaNextVideo",
                                                      "MAE", "DecoderLM"}
    for name, kind in MODELS.items():
        if kind in _NO_EXPORT:
            with pytest.raises(ValueError, match=f"{name} has no transformers class to export to: "):
                export(name, tmp_path / "hf", root=tmp_path)
    with pytest.raises(ValueError, match="unknown zoo model 'gpt-9'"):
        export("gpt-9", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_zoo_cli_export_refusal_is_a_usage_error(tmp_path, capsys):
    from vlm_primer.zoo.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["export", "flava-tiny", str(tmp_path / "hf")])
    assert exit_.value.code == 2 and "flava-tiny has no transformers class" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["clip-tiny", "siglip-tiny"])
def test_contrastive_export_loads_in_transformers(name, tmp_path):
    from transformers import AutoModel

    ours = load(name)
    export(name, tmp_path / "hf")
    hf = AutoModel.from_pretrained(tmp_path / "hf", local_files_only=True, attn_implementation="eager").eval()
    tok = Tokenizer.load()
    images = _zero_shot_set(4)[0]
    enc = tok(["a red circle", "there is a small blue star", "a green square", "no yellow disks"], max_length=32)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        want = ours(images, ids, mask).logits_per_image
        got = hf(input_ids=ids, attention_mask=mask, pixel_values=images).logits_per_image
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    # a user of the export alone: its processor reads texts (with the <eos> the tower pools at) and 8-bit images
    # exactly as our tokenizer and the card's transform do
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tmp_path / "hf", local_files_only=True)
    texts = ["a red circle left of a blue square", "two shapes"]
    assert processor.tokenizer(texts, padding=True, return_tensors="pt")["input_ids"].tolist() == \
        tok(texts)["input_ids"].tolist()
    pixels = [(im * 255).round().to(torch.uint8) for im in _raw_scenes(2)]
    got = processor.image_processor(images=[p.permute(1, 2, 0).numpy() for p in pixels], return_tensors="pt")
    want = torch.stack([preprocess(name)(p.float() / 255) for p in pixels])
    assert torch.allclose(got["pixel_values"], want, atol=1e-5)
    with pytest.raises(FileExistsError):
        export(name, tmp_path / "hf")


def _raw_scenes(n: int) -> list[torch.Tensor]:
    import numpy as np

    from vlm_primer.world import WorldConfig, render, sample_scene

    cfg = WorldConfig(image_size=48, sizes=("large",))
    return [render(sample_scene(np.random.default_rng(i), cfg), 48) for i in range(n)]


def test_mae_export_loads_in_transformers(tmp_path):
    from transformers import ViTMAEForPreTraining

    ours = load("mae-tiny")
    export("mae-tiny", tmp_path / "hf")
    hf = ViTMAEForPreTraining.from_pretrained(tmp_path / "hf", local_files_only=True, attn_implementation="eager")
    images, noise = _zero_shot_set(4)[0], torch.rand(4, ours.cfg.encoder.num_patches)
    with torch.no_grad():
        want, got = ours(images, noise=noise), hf.eval()(pixel_values=images, noise=noise)
    assert torch.equal(got.mask, want.mask) and torch.allclose(got.logits, want.logits, atol=1e-4)


def test_lm_export_loads_in_transformers(tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    ours = load("lm-tiny")
    export("lm-tiny", tmp_path / "hf")
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True, attn_implementation="eager").eval()
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    tok = Tokenizer.load()
    text = "<|user|><image>how many circles are there?<|end|><|assistant|>"
    ids = torch.tensor([[tok.bos_id] + tok.encode(text, add_eos=False)])
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == ids[0, 1:].tolist()
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, ours(ids).logits, atol=1e-4)
    # the language model speaks the world's language: greedy decoding answers in a sentence
    out = tok.decode(ours.generate(ids, 12, eos_token_id=tok.end_id)[0, ids.shape[1]:])
    assert out.startswith("there"), out
