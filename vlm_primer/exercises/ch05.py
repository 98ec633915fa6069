"""Checks for the exercises of chapter 05 (LLaVA). Explained in notebook 05, §Exercises."""

from __future__ import annotations

import collections

import torch

from vlm_primer.exercises import Wrong, close, exercise, number, whole


@exercise("05.1", "Splice image features into the text embeddings")
def splice(fn) -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([[2, 5, 5, 5, 9, 9], [2, 9, 5, 5, 5, 9]])
    embeds = torch.randn(2, 6, 4, generator=g)
    features = torch.randn(6, 4, generator=g)
    got = fn(embeds.clone(), ids, features, 5)
    if not isinstance(got, torch.Tensor) or got.shape != embeds.shape:
        raise Wrong(f"return the embeddings with the same shape {tuple(embeds.shape)}, got "
                    f"{getattr(got, 'shape', type(got).__name__)}")
    want = embeds.clone()
    want[ids == 5] = features
    if torch.allclose(got[0, 1:4], features[3:]) or torch.allclose(got[1, 2:5], features[:3]):
        raise Wrong("the features fill the placeholders in order, row by row: the first image's tokens go to row 0")
    if torch.allclose(got[ids != 5], embeds[ids != 5]) and not torch.allclose(got, want):
        raise Wrong("the text positions are right, the image positions are not: fill them with the rows of features "
                    "in reading order")
    close(got, want, "the spliced embeddings")


@exercise("05.2", "How many image tokens a LLaVA sees")
def image_tokens(fn) -> str:
    for size, patch in ((336, 14), (224, 14), (48, 6), (384, 16)):
        n = (size // patch) ** 2
        got_drop = whole(fn(size, patch, False), "the token count")
        got_keep = whole(fn(size, patch, True), "the token count")
        if got_drop == n + 1:
            raise Wrong("with keep_cls=False LLaVA drops the CLS token: only the patches remain")
        if got_drop != n or got_keep != n + 1:
            raise Wrong(f"{size} px in patches of {patch}: the count is off")
    return f"LLaVA-1.5 (336 px, patch 14): {int(fn(336, 14, False))} image tokens"


@exercise("05.3", "The size of LLaVA-1.5's connector")
def mlp_connector_params(fn) -> str:
    for v, t in ((64, 64), (1024, 4096), (768, 2048)):
        got, want = whole(fn(v, t), "the parameter count"), v * t + t + t * t + t
        if got == v * t + t * t:
            raise Wrong("both linear layers have a bias vector")
        if got == v * t + t:
            raise Wrong("that is LLaVA-1.0's linear projection: the MLP has a second layer, text_dim to text_dim")
        if got != want:
            raise Wrong(f"vision {v} -> text {t}: the count is off")
    return f"ViT-L into a 7B LM: {int(fn(1024, 4096)):,} parameters, against about 7 billion in the LM"


@exercise("05.4", "LLaVA-NeXT's image tokens")
def anyres_tokens(fn) -> None:
    from vlm_primer.backbones import LlavaNextConfig

    cfg = LlavaNextConfig.from_preset("base")
    g = cfg.vision.grid
    for size in ((336, 336), (672, 672), (480, 640), (1000, 300), (300, 1000)):
        rows, cols, _, _ = cfg.layout(size)
        got, want = whole(fn(g, rows, cols, size), "the token count"), cfg.num_image_tokens(size)
        if got == want:
            continue
        if got == g * g + rows * g * (cols * g + 1):
            raise Wrong(f"{size}: right for a square image, but here some rows or columns are padding: unpad first")
        if got == want - g * g:
            raise Wrong("the base view's tokens come first and count too")
        if got != want:
            raise Wrong(f"an image of {size} on a {rows} x {cols} grid: the count is off")


@exercise("05.5", "The judge's F1 between two multisets of facts")
def fact_f1(fn) -> None:
    C = collections.Counter
    a = C({("object", "red", "circle"): 2, ("number", "two"): 1})
    b = C({("object", "red", "circle"): 1, ("number", "two"): 1, ("place", "top"): 1})
    if abs(number(fn(C(), C()), "F1") - 1.0) > 1e-9:
        raise Wrong("two answers that state no fact agree: F1 = 1")
    if abs(number(fn(a, C()), "F1")) > 1e-9:
        raise Wrong("nothing in common: F1 = 0")
    got = number(fn(a, b), "F1")
    if abs(got - 0.8) < 1e-9:  # sets: precision 2/2, recall 2/3
        raise Wrong("a fact stated twice counts twice: count the multiset intersection (min of the counts)")
    p, r = 2 / 3, 2 / 3  # shared = min(2, 1) + 1 = 2 of 3 facts on each side
    if abs(got - 2 * p * r / (p + r)) > 1e-9:
        raise Wrong("precision = shared / facts of a, recall = shared / facts of b, F1 their harmonic mean")
    one, three = C({"x": 1}), C({"x": 1, "y": 1, "z": 1})  # precision 1, recall 1/3: F1 = 0.5
    if abs(number(fn(one, three), "F1") - 0.5) > 1e-9 or abs(number(fn(three, one), "F1") - 0.5) > 1e-9:
        raise Wrong("when precision and recall differ, F1 is their harmonic mean 2PR / (P + R)")


@exercise("05.6", "Pixel shuffle")
def pixel_shuffle(fn) -> None:
    from vlm_primer.backbones import pixel_shuffle as ours

    x = torch.arange(2 * 16 * 3, dtype=torch.float32).view(2, 16, 3)
    got = fn(x, 2)
    if not isinstance(got, torch.Tensor) or got.shape != (2, 4, 12):
        raise Wrong(f"(2, 16, 3) with factor 2 should give (2, 4, 12), got {getattr(got, 'shape', type(got))}")
    if torch.equal(got, x.reshape(2, 4, 12)):
        raise Wrong("that groups 4 consecutive patches of a row, not a 2 x 2 block of neighbours")
    close(got, ours(x, 2), "the shuffled tokens (the order within a token: block row, block column, channel)")
    x3 = torch.randn(1, 36, 5, generator=torch.Generator().manual_seed(1))
    close(fn(x3, 3), ours(x3, 3), "factor 3 on a 6 x 6 grid")
