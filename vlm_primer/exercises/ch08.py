"""Checks for the exercises of chapter 08 (video: evenly spaced frames, the single-frame ceiling, frame tokens with
temporal positions, MERLOT's pairwise order targets, token merging, the frames that fit a context). Explained in
notebook 08, §Exercises."""

from __future__ import annotations

import torch

from vlm_primer.exercises import Wrong, close, exercise, number, whole


@exercise("08.1", "Evenly spaced frames")
def frame_indices(fn) -> None:
    cases = {(9, 1): [4], (9, 2): [0, 8], (9, 3): [0, 4, 8], (9, 5): [0, 2, 4, 6, 8], (8, 3): [0, 4, 7],
             (16, 4): [0, 5, 10, 15], (5, 5): [0, 1, 2, 3, 4]}
    for (n, k), want in cases.items():
        got = [int(i) for i in fn(n, k)]
        if len(got) != k:
            raise Wrong(f"{k} frames were asked for, got {len(got)} indices")
        if got == want:
            continue
        if k == 1:
            raise Wrong("one frame is the middle one: the frame a clip of odd length shares with its reversal")
        if got[0] != 0 or got[-1] != n - 1:
            raise Wrong("spread the frames over the whole clip: the first and the last frame are both sampled")
        raise Wrong(f"the indices for {k} of {n} frames are not evenly spaced (round each position to the nearest "
                    "frame)")


@exercise("08.2", "The single-frame ceiling")
def single_frame_ceiling(fn) -> None:
    cases = ((["left", "up"], ["right", "up"], 0.75), (["a", "b", "c"], ["a", "b", "c"], 1.0),
             (["left"], ["right"], 0.5), (["x", "y", "x", "x"], ["z", "y", "w", "x"], 0.75))
    for answers, reversed_answers, want in cases:
        got = number(fn(answers, reversed_answers), "the ceiling")
        if abs(got - 0.5) < 1e-9 and want == 1.0:
            raise Wrong("when a clip and its reversal have the same answer, one frame can get both right")
        if abs(got - want) > 1e-9:
            raise Wrong("per pair: both right when the two answers agree, at most one of two when they differ; "
                        "average over the pairs")


@exercise("08.3", "Frame tokens with temporal positions")
def add_frame_positions(fn) -> None:
    g = torch.Generator().manual_seed(0)
    tokens, emb = torch.randn(2, 3, 4, 5, generator=g), torch.randn(8, 5, generator=g)
    got = fn(tokens, emb)
    want = (tokens + emb[:3, None, :]).reshape(2, 12, 5)
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        raise Wrong(f"(B, T, Q, D) frame tokens become one (B, T * Q, D) sequence, got "
                    f"{getattr(got, 'shape', type(got).__name__)}")
    if torch.allclose(got, tokens.reshape(2, 12, 5)):
        raise Wrong("add each frame's temporal embedding before concatenating")
    if torch.allclose(got, (tokens + emb[None, None, :4, :]).reshape(2, 12, 5)):
        raise Wrong("the embedding is indexed by the frame, not by the query: every token of frame t gets emb[t]")
    close(got, want, "frame t's tokens plus emb[t], frames in order")


@exercise("08.4", "MERLOT's pairwise order targets")
def order_targets(fn) -> None:
    # slot s holds original frame perm[s]; only the shuffled slots are compared, pairs (s, u) with s < u
    perm, shuffled = [0, 3, 2, 1, 4], [False, True, True, True, False]
    want = [((1, 2), 0), ((1, 3), 0), ((2, 3), 0)]
    got = [((int(s), int(u)), int(y)) for (s, u), y in fn(perm, shuffled)]
    if got == [((1, 2), 1), ((1, 3), 1), ((2, 3), 1)]:
        raise Wrong("the label says whether the frame in the first slot came first *originally* (compare perm)")
    if len(got) != 3:
        raise Wrong("compare every pair of shuffled slots once, s < u, and no unshuffled slot")
    if got != want:
        raise Wrong("label 1 when perm[s] < perm[u]; list the pairs in order")
    got = [int(y) for _, y in fn([2, 0, 1], [True, True, True])]
    if got != [0, 0, 1]:
        raise Wrong("label 1 when perm[s] < perm[u]; list the pairs in order")


@exercise("08.5", "MiniGPT4-Video's token merging")
def merge_tokens(fn) -> None:
    x = torch.arange(2 * 8 * 3, dtype=torch.float32).reshape(2, 8, 3)
    got = fn(x, 4)
    want = x.reshape(2, 2, 12)
    if not isinstance(got, torch.Tensor) or got.shape != (2, 2, 12):
        raise Wrong(f"(B, N, D) with m = 4 becomes (B, N / 4, 4 * D), got {getattr(got, 'shape', type(got))}")
    if torch.allclose(got, x.reshape(2, 4, 2, 3).transpose(1, 2).reshape(2, 2, 12)):
        raise Wrong("merge *adjacent* tokens: tokens 0-3 form the first group, not every second token")
    if torch.allclose(got, x.reshape(2, 2, 4, 3).transpose(2, 3).reshape(2, 2, 12)):
        raise Wrong("concatenate whole tokens: the first D channels are token 0's, then token 1's")
    close(got, want, "merged tokens")


@exercise("08.6", "The frames that fit a context")
def frames_that_fit(fn) -> None:
    cases = (((4096, 100, 256, 1), 15), ((4096, 100, 256, 4), 62), ((256, 40, 16, 1), 13), ((100, 120, 16, 1), 0))
    wrong = None
    for (context, text, per_frame, merge), want in cases:
        got = whole(fn(context, text, per_frame, merge), "the number of frames")
        if got == want:
            continue
        rounded, no_text = round(max(0, context - text) / (per_frame / merge)), context // (per_frame // merge)
        if got == no_text and got != rounded:
            raise Wrong("the prompt and the answer need their tokens too: subtract text_tokens first")
        if got == rounded and got != no_text:
            raise Wrong("only whole frames fit: round down, not to the nearest")
        if got < 0:
            raise Wrong("no room for even one frame is zero frames")
        wrong = wrong or "each frame costs tokens_per_frame / merge tokens; how many whole frames fit in what is left?"
    if wrong:
        raise Wrong(wrong)
