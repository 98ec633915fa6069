"""Checks for the exercises of chapter 05b (Q-Former and cross-attention). Explained in notebook 05b, §Exercises."""

from __future__ import annotations

import torch

from vlm_primer.exercises import Wrong, close, exercise, whole


@exercise("05b.1", "The Q-Former's three attention masks")
def qformer_masks(fn) -> None:
    from vlm_primer.backbones import qformer_mask

    for nq, nt in ((4, 5), (2, 3), (3, 1)):
        for kind in ("unimodal", "bidirectional", "multimodal_causal"):
            got = torch.as_tensor(fn(kind, nq, nt))
            want = qformer_mask(kind, nq, torch.ones(1, nt))[0]
            if got.shape != want.shape:
                raise Wrong(f"{kind} with {nq} queries and {nt} text tokens: the mask is (L, L) with L = "
                            f"{nq + nt}, got {tuple(got.shape)}")
            got = got.bool()
            if torch.equal(got, want):
                continue
            if kind == "multimodal_causal" and got[:nq, nq:].any():
                raise Wrong("in ITG the queries must not see the text, or the caption leaks into what generates it")
            if kind == "multimodal_causal" and torch.equal(got, torch.ones_like(got).tril()):
                raise Wrong("ITG is not causal everywhere: the queries see each other in both directions")
            if kind == "unimodal" and got[nq:, :nq].any():
                raise Wrong("in ITC text and queries are two separate encoders: neither sees the other")
            raise Wrong(f"the {kind} mask is wrong for {nq} queries and {nt} text tokens")


@exercise("05b.2", "ITC: the best query's similarity")
def itc_scores(fn) -> None:
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(3, 4, 8, generator=g) * 3, torch.randn(5, 8, generator=g) * 2
    got = torch.as_tensor(fn(image.clone(), text.clone()))
    zi, zt = torch.nn.functional.normalize(image, dim=-1), torch.nn.functional.normalize(text, dim=-1)
    want = torch.einsum("iqd,td->iqt", zi, zt).amax(1)
    if got.shape == (5, 3):
        raise Wrong("rows are images, columns are texts: (B_i, B_t)")
    if got.shape == want.shape and torch.allclose(got, torch.einsum("iqd,td->iqt", zi, zt).mean(1), atol=1e-5):
        raise Wrong("BLIP-2 takes the best query, not the average over queries")
    if got.shape == want.shape and torch.allclose(got, torch.einsum("iqd,td->iqt", image, text).amax(1), atol=1e-4):
        raise Wrong("cosine similarity: normalise both embeddings first")
    close(got, want, "the ITC scores", rtol=1e-4, atol=1e-5)


@exercise("05b.3", "Where the hard negatives come from")
def negative_probs(fn) -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(5, 5, generator=g) * 2
    got = torch.as_tensor(fn(scores.clone())).double()
    want = torch.softmax(scores.double().masked_fill(torch.eye(5, dtype=torch.bool), float("-inf")), dim=1)
    if got.shape != (5, 5):
        raise Wrong(f"one row of probabilities per row of scores: (5, 5), got {tuple(got.shape)}")
    if got.diagonal().abs().max() > 1e-6:
        raise Wrong("a row's own pair is its positive: it must never be drawn as a negative")
    if torch.allclose(got, torch.softmax(scores.double(), dim=1) * (1 - torch.eye(5)), atol=1e-5):
        raise Wrong("after removing the pair, renormalise what is left")
    if not torch.allclose(got.sum(1), torch.ones(5, dtype=torch.float64), atol=1e-5):
        raise Wrong("each row is a distribution over the candidates: it sums to 1")
    close(got, want, "the probabilities", rtol=1e-4, atol=1e-6)


@exercise("05b.4", "Flamingo's media mask")
def latest_image(fn) -> None:
    from vlm_primer.backbones import media_mask

    I, E = 7, 3  # image and eos ids; other ids are text
    cases = [[5, 7, 8, 9, 3, 7, 8, 9], [5, 5, 7, 8, 7, 9, 9], [7, 3, 3, 8], [5, 6, 8], [7, 7, 8, 3, 7, 8]]
    for ids in cases:
        mask = media_mask(torch.tensor([ids]), I, 8, E)[0]
        want = [int(r.nonzero()[0]) if r.any() else -1 for r in mask]
        got = [int(x) for x in fn(list(ids), I, E)]
        if len(got) != len(ids):
            raise Wrong(f"one index per token: {len(ids)} tokens, got {len(got)} indices")
        if got == want:
            continue
        if all(w == -1 or g == w for g, w in zip(got, want)) and any(g != -1 and w == -1 for g, w in zip(got, want)):
            raise Wrong("after an <eos> that follows the latest image a token sees no image until the next <image>")
        if any(g == w + 1 for g, w in zip(got, want) if w >= 0):
            raise Wrong("count the images from 0, and the <image> token itself already sees its own image")
        raise Wrong(f"the indices are wrong for a sequence of {len(ids)} tokens")


@exercise("05b.5", "The size of a gated cross-attention layer")
def gated_layer_params(fn) -> str:
    from vlm_primer.backbones import FlamingoConfig, GatedCrossAttentionLayer

    def layer(dim, vision_dim, heads, dim_head, mlp_dim, alpha_type):
        cfg = FlamingoConfig.from_preset("tiny", alpha_type=alpha_type)
        cfg = cfg.replace(vision=cfg.vision.replace(dim=vision_dim),
                          text=cfg.text.replace(dim=dim, heads=heads, kv_heads=heads, dim_head=dim_head,
                                                mlp_dim=mlp_dim))
        with torch.device("meta"):
            return sum(p.numel() for p in GatedCrossAttentionLayer(cfg).parameters())

    for args in ((64, 64, 4, 16, 256, "float"), (64, 48, 4, 16, 128, "vector"), (96, 32, 2, 24, 200, "float")):
        got, want = whole(fn(*args), "the parameter count"), layer(*args)
        dim, vision_dim, heads, dim_head, mlp_dim, alpha_type = args
        if got == want:
            continue
        if got == want - mlp_dim * dim:
            raise Wrong("SwiGLU has three matrices: gate, up and down")
        if alpha_type == "vector" and got == want - 2 * dim + 2:
            raise Wrong("alpha_type='vector' has one gate per channel")
        if got == want - 2 * dim:
            raise Wrong("count the two RMSNorms' weights")
        raise Wrong(f"dim {dim}, vision {vision_dim}, {heads} heads of {dim_head}, MLP {mlp_dim}, {alpha_type} "
                    "gates: the count is off (keys and values read the vision width)")
    return f"one layer at IDEFICS-9B's shapes: {int(fn(4096, 1280, 32, 128, 11008, 'float')):,} parameters"
