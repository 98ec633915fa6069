"""Checks for the exercises of chapter 04 (generative VLMs: CoCa and BLIP). Explained in notebook 04, §Exercises."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlm_primer.exercises import Wrong, close, exercise


@exercise("04.1", "Label smoothing in the LM loss")
def smoothed_ce(fn) -> None:
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(6, 11, generator=g) * 2, torch.randint(0, 11, (6,), generator=g)
    for eps in (0.0, 0.1, 0.3):
        got = torch.as_tensor(fn(logits.clone(), target.clone(), eps)).double()
        want = F.cross_entropy(logits.double(), target, label_smoothing=eps)
        if got.ndim != 0:
            raise Wrong("the loss is one number: the mean over the rows")
        if eps and torch.allclose(got, F.cross_entropy(logits.double(), target), atol=1e-6):
            raise Wrong("with eps > 0 the target is no longer one-hot: it keeps 1 - eps and spreads eps")
        close(got, want, f"the smoothed loss at eps = {eps}", rtol=1e-5, atol=1e-6)


@exercise("04.2", "The nucleus")
def nucleus_keep(fn) -> None:
    cases = [([0.5, 0.3, 0.15, 0.05], 0.75, [1, 1, 0, 0]), ([0.5, 0.3, 0.15, 0.05], 0.81, [1, 1, 1, 0]),
             ([0.1, 0.6, 0.3], 0.5, [0, 1, 0]), ([0.25, 0.25, 0.25, 0.25], 1.0, [1, 1, 1, 1])]
    for probs, p, want in cases:
        got = [bool(x) for x in torch.as_tensor(fn(torch.tensor(probs), p)).tolist()]
        if got == [bool(x) for x in want]:
            continue
        if sum(got) == sum(want) - 1:
            raise Wrong(f"probs {probs}, p = {p}: keep tokens until their mass reaches p, the one that crosses it "
                        "included")
        if got[:sum(want)] == [True] * sum(want):
            raise Wrong("the nucleus is the most likely tokens, not the first ones: sort by probability")
        raise Wrong(f"probs {probs}, p = {p}: wrong set of tokens kept")


@exercise("04.3", "One beam-search step")
def beam_step(fn) -> None:
    scores = torch.tensor([-1.0, -1.5])
    logp = torch.log(torch.tensor([[0.1, 0.6, 0.3], [0.7, 0.2, 0.1]]))
    got = [tuple(int(v) for v in pair) for pair in fn(scores.clone(), logp.clone(), 2)]
    want = [(0, 1), (1, 0)]  # -1 + log .6 = -1.51, -1.5 + log .7 = -1.86, -1 + log .3 = -2.20
    if got == want:
        got3 = [tuple(int(v) for v in pair) for pair in fn(scores.clone(), logp.clone(), 3)]
        if got3 == [(0, 1), (1, 0), (0, 2)]:
            return
        raise Wrong("with 3 beams the third best continuation is beam 0's token 2")
    if got == [(1, 0), (0, 1)]:  # (token, beam) pairs, or a ranking without the running scores: 3 beams tell
        if [tuple(int(v) for v in pair) for pair in fn(scores.clone(), logp.clone(), 3)] == [(1, 0), (0, 1), (2, 0)]:
            raise Wrong("return (beam, token) pairs: yours are (token, beam)")
        raise Wrong("add each beam's running score before ranking: beam 1 is already behind")
    if got == [(0, 1), (0, 2)]:
        raise Wrong("rank the continuations of every beam together, not of the best beam alone")
    raise Wrong(f"expected (beam, token) pairs of the 2 best totals, got {got}")


@exercise("04.4", "Soft ITC targets")
def soft_targets(fn) -> None:
    g = torch.Generator().manual_seed(2)
    sim = torch.randn(4, 4, generator=g) * 3
    for alpha in (0.4, 0.0, 1.0):
        got = torch.as_tensor(fn(sim.clone(), alpha)).double()
        want = alpha * sim.double().softmax(1) + (1 - alpha) * torch.eye(4, dtype=torch.double)
        if got.shape != (4, 4):
            raise Wrong(f"one row of targets per image: (4, 4), got {tuple(got.shape)}")
        if not torch.allclose(got.sum(1), torch.ones(4, dtype=torch.double), atol=1e-6):
            raise Wrong("each row is a distribution over the batch's captions: it sums to 1")
        if alpha == 0.4 and torch.allclose(got, 0.6 * sim.double().softmax(1) + 0.4 * torch.eye(4), atol=1e-6):
            raise Wrong("alpha weighs the momentum model's softmax, 1 - alpha the one-hot pairing")
        close(got, want, f"the targets at alpha = {alpha}", rtol=1e-5, atol=1e-6)


@exercise("04.5", "Attentional pooling")
def attentional_pool(fn) -> None:
    g = torch.Generator().manual_seed(3)
    tokens, queries = torch.randn(2, 7, 8, generator=g), torch.randn(3, 8, generator=g)
    wq, wk, wv = (torch.randn(8, 8, generator=g) / 3 for _ in range(3))
    got = torch.as_tensor(fn(tokens.clone(), queries.clone(), wq, wk, wv))
    q, k, v = queries @ wq.T, tokens @ wk.T, tokens @ wv.T
    want = torch.softmax(torch.einsum("qd,bnd->bqn", q, k) / 8 ** 0.5, -1) @ v
    if got.shape != (2, 3, 8):
        raise Wrong(f"one output per query and image: (B, Q, D) = (2, 3, 8), got {tuple(got.shape)}")
    if torch.allclose(got, torch.softmax(torch.einsum("qd,bnd->bqn", q, k), -1) @ v, atol=1e-5):
        raise Wrong("scale the dot products by 1 / sqrt(d) before the softmax")
    if torch.allclose(got, torch.softmax(torch.einsum("qd,bnd->bqn", q, k) / 8 ** 0.5, -2) @ v, atol=1e-5):
        raise Wrong("each query's weights sum to 1 over the image tokens: softmax over the tokens")
    close(got, want, "the pooled tokens", rtol=1e-4, atol=1e-5)
