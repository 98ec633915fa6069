"""Chapter 04b's generative classifiers, the scene reader that judges generated images, and the CLI recipes."""

from __future__ import annotations

import pytest
import torch

from vlm_primer.evaluation.scene_reader import read_largest, read_objects, reading_accuracy
from vlm_primer.generative.classifiers import (autoregressive_scores, diffusion_pair_scores, diffusion_scores,
                                               posterior, stratified_timesteps)
from vlm_primer.generative.diffusion import add_noise
from vlm_primer.generative.dit import DiT, DiTConfig
from vlm_primer.generative.early_fusion import EarlyFusion, EarlyFusionConfig
from vlm_primer.generative.t2i_recipes import shapes_t2i, to_unit_range
from vlm_primer.text import Tokenizer
from vlm_primer.world import Obj, Scene, render


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights everywhere (the DiT's adaLN-Zero would otherwise predict exactly zero for every class)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _prompts(texts: list[str]):
    enc = Tokenizer.load()(texts, max_length=16, add_bos=True)
    return enc["input_ids"], enc["attention_mask"]


def _dit():
    return _perturbed(DiT(DiTConfig.from_preset("tiny", dim=32, depth=1, heads=2)))


def test_autoregressive_scores_are_each_pairs_log_likelihood():
    model = _perturbed(EarlyFusion(EarlyFusionConfig.from_preset("tiny", decoder=dict(dim=32, depth=1, heads=2))))
    codes = torch.randint(0, 128, (3, 64))
    ids, mask = _prompts(["a red circle", "a large blue square", "there is a star"])
    scores = autoregressive_scores(model, codes, ids, mask, batch_size=4)   # chunks cut across images
    assert scores.shape == (3, 3)
    for b in range(3):
        for c in range(3):
            one = model.image_log_likelihood(ids[c:c + 1], mask[c:c + 1], codes[b:b + 1])
            torch.testing.assert_close(scores[b, c], one[0], rtol=1e-5, atol=1e-4)


def test_diffusion_scores_use_the_same_draws_for_every_class():
    model = _dit()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    ids, mask = _prompts(["a red circle", "a red circle", "a blue square"])
    scores = diffusion_scores(model, images, ids, mask, samples=3, seed=5, batch_size=4)
    assert scores.shape == (2, 3)
    torch.testing.assert_close(scores[:, 0], scores[:, 1])        # equal prompts, equal noise: equal scores
    assert (scores[:, 0] - scores[:, 2]).abs().min() > 0           # and the prompt matters
    # by hand: the same stratified draws, one image and one class at a time
    g = torch.Generator().manual_seed(5)
    t = torch.stack([stratified_timesteps(3, 1000, g) for _ in range(2)])
    noise = torch.randn(2, 3, 3, 32, 32, generator=g)
    ctx, cmask = model.encode_text(ids, mask)
    for b in range(2):
        for c in range(3):
            err = 0.0
            for s in range(3):
                x_t = add_noise(model.schedule, images[b:b + 1], noise[b, s:s + 1], t[b, s:s + 1])
                eps = model.eps(x_t, t[b, s:s + 1], ctx[c:c + 1], cmask[c:c + 1])
                err = err + (eps - noise[b, s:s + 1]).pow(2).mean() / 3
            torch.testing.assert_close(scores[b, c], -err, rtol=1e-5, atol=1e-6)
    # the pair version is the diagonal: image b against caption b on the same draws
    pairs = diffusion_pair_scores(model, images, ids[[0, 2]], mask[[0, 2]], samples=3, seed=5)
    torch.testing.assert_close(pairs, torch.stack([scores[0, 0], scores[1, 2]]), rtol=1e-5, atol=1e-6)


def test_stratified_timesteps_cover_the_range():
    t = stratified_timesteps(10, 1000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.shape == (10,)
    assert torch.equal(t // 100, torch.arange(10))                 # one draw in each stratum
    with pytest.raises(ValueError, match="samples"):
        stratified_timesteps(0, 1000)
    with pytest.raises(ValueError, match="samples"):
        stratified_timesteps(1001, 1000)


def test_posterior_is_bayes_rule():
    scores = torch.tensor([[0.0, -1.0, -2.0]])
    torch.testing.assert_close(posterior(scores), scores.softmax(-1))
    prior = torch.tensor([0.2, 0.3, 0.5])
    want = scores.exp() * prior / (scores.exp() * prior).sum()
    torch.testing.assert_close(posterior(scores, prior), want)
    with pytest.raises(ValueError, match="prior"):
        posterior(scores, torch.tensor([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="scores"):
        posterior(scores[0])


def test_classifier_bad_input_names_the_argument():
    model = _dit()
    ids, mask = _prompts(["a red circle"])
    with pytest.raises(ValueError, match="images"):
        diffusion_scores(model, torch.rand(1, 3, 16, 16), ids, mask)
    with pytest.raises(ValueError, match="samples"):
        diffusion_scores(model, torch.rand(1, 3, 32, 32), ids, mask, samples=0)
    with pytest.raises(ValueError, match="prompt_mask"):
        diffusion_scores(model, torch.rand(1, 3, 32, 32), ids, mask[:, :3])
    with pytest.raises(ValueError, match="pair up"):
        diffusion_pair_scores(model, torch.rand(2, 3, 32, 32), ids, mask)


# --------------------------------------------------------------------------- the scene reader


def test_reader_reads_real_renders_back():
    ds = shapes_t2i("test", 96, num_objects=1)
    items = [ds[i] for i in range(96)]
    images = to_unit_range(torch.stack([it["image"] for it in items]))
    targets = [(it["scene"].objects[0].color, it["scene"].objects[0].shape) for it in items]
    assert reading_accuracy(images, targets, sizes=("large",)) == {"color": 1.0, "shape": 1.0, "both": 1.0}
    # and it can fail: the same images judged against shifted targets
    wrong = targets[1:] + targets[:1]
    assert reading_accuracy(images, wrong, sizes=("large",))["both"] < 0.3


def test_reader_finds_two_objects_and_nothing_in_an_empty_scene():
    scene = Scene((Obj("star", "red", "large", 0.25, 0.3), Obj("circle", "cyan", "small", 0.75, 0.7)))
    found = read_objects(render(scene, 48))
    assert [(o.color, o.shape) for o in found] == [("red", "star"), ("cyan", "circle")]
    assert abs(found[0].x - 0.25) < 0.05 and abs(found[0].y - 0.3) < 0.05
    assert read_largest(render(Scene(()), 32)[None]) == [None]


def test_reader_bad_input():
    with pytest.raises(ValueError, match="channels"):
        read_objects(torch.rand(1, 32, 32))
    with pytest.raises(ValueError, match="one"):
        read_objects(torch.rand(2, 3, 32, 32))
    with pytest.raises(TypeError, match="images"):
        read_largest([[0.0]])
    with pytest.raises(ValueError, match="same length"):
        reading_accuracy(torch.rand(2, 3, 32, 32), [("red", "circle")])


# --------------------------------------------------------------------------- the CLI recipes


@pytest.mark.parametrize("recipe", ["vqvae", "diffusion", "diffusion:vqvae=zoo", "ar_t2i"])
def test_recipes_train_a_few_steps(recipe):
    from vlm_primer.train import main

    recipe, _, option = recipe.partition(":")
    history = main([recipe, "--preset", "tiny", "--steps", "2", "--batch-size", "4", "--no-progress", "--device",
                    "cpu", "--set", "train_size=16", *(["--set", option] if option else [])])
    assert history[-1]["step"] == 2 and torch.isfinite(torch.tensor(history[-1]["loss"]))


def test_recipe_options_are_checked():
    from vlm_primer.generative.t2i_recipes import ar_t2i_recipe, diffusion_recipe
    from vlm_primer.training.recipes import RecipeArgs

    with pytest.raises(ValueError, match="unknown --set option"):
        diffusion_recipe(RecipeArgs(options={"tokenizer": "zoo"}))
    for recipe in (ar_t2i_recipe, diffusion_recipe):
        with pytest.raises(ValueError, match="vqvae=PATH"):
            recipe(RecipeArgs(preset="small", options={"vqvae": "zoo"}))
