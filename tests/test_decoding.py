"""Decoding (:mod:`vlm_primer.nn.decoding`): nucleus filtering keeps exactly the nucleus, beam search with one beam
is greedy search and finds the best sequence on a model whose answer we know, the cross-attention cache is
computed once, and bad arguments are refused by name."""

from __future__ import annotations

import pytest
import torch

from vlm_primer.nn import Attention, KVCache
from vlm_primer.nn.decoding import beam_search, decode, filter_logits, pick_next, sample_tokens


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(filter_logits(probs.log(), top_p=0.75))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 >= 0.75, 0.5 alone is not
    assert torch.isfinite(filter_logits(probs.log(), top_p=0.8)).sum() == 2
    assert torch.isfinite(filter_logits(probs.log(), top_p=0.81)).sum() == 3
    assert torch.isfinite(filter_logits(probs.log(), top_p=0.01)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_logits(probs.log(), top_k=3)).sum() == 3
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([pick_next(probs.log().expand(200, 4), 1.0, top_p=0.75, generator=g) for _ in range(5)])
    assert set(draws.unique().tolist()) == {0, 1}


class Table:
    """A 'model' whose next-token log-probabilities depend only on the last token: a Markov chain we can solve."""

    def __init__(self, logp: torch.Tensor, batch: int) -> None:
        self.logp, self.calls, self.rows = logp, 0, torch.arange(batch)

    def __call__(self, new_ids):
        self.calls += 1
        return self.logp[new_ids[:, -1]]

    def reorder(self, index):
        self.rows = self.rows[index]


def _chain():
    # token 0 = <eos>; from the start token 1, greedy takes 2 (p .6) then is stuck with poor continuations,
    # while 3 (p .4) leads to <eos> with p 1: the best finished sequence is [3, 0] (0.4 > 0.6 * 0.45)
    p = torch.full((5, 5), 1e-6)
    p[1, 2], p[1, 3] = 0.6, 0.4
    p[2, 4], p[2, 0] = 0.55, 0.45
    p[4, 4], p[4, 0] = 0.55, 0.45
    p[3, 0] = 1.0
    return (p / p.sum(1, keepdim=True)).log()


def test_beam_search_finds_the_sequence_greedy_misses():
    logp = _chain()
    prompt = torch.tensor([[1]])
    greedy = sample_tokens(Table(logp, 1), prompt, 6, eos_token_id=0)
    assert greedy[0, 1:].tolist() == [2, 4, 4, 4, 4, 4]
    best = beam_search(Table(logp, 2), prompt, 6, num_beams=2, eos_token_id=0, length_penalty=0.0)
    assert best[0, 1:].tolist() == [3, 0]
    one = beam_search(Table(logp, 1), prompt, 6, num_beams=1, eos_token_id=0, length_penalty=0.0)
    assert one.tolist() == sample_tokens(Table(logp, 1), prompt, 6, eos_token_id=0)[:, :one.shape[1]].tolist()


def test_finished_rows_are_padded_and_decoding_stops():
    logp = _chain()
    step = Table(logp, 2)
    out = sample_tokens(step, torch.tensor([[3], [1]]), 10, eos_token_id=0, pad_token_id=4)
    assert out[0, 1:].tolist() == [0] + [4] * 9  # row 0 ends at once, then pads while row 1 runs
    step = Table(logp, 2)
    out = sample_tokens(step, torch.tensor([[3], [3]]), 10, eos_token_id=0)
    assert out.shape == (2, 2) and step.calls == 1  # every row done: no more steps


def test_cross_attention_keys_are_computed_once_and_reused():
    torch.manual_seed(0)
    attn = Attention(16, 4, kv_dim=8)
    x, ctx = torch.randn(2, 3, 16), torch.randn(2, 5, 8)
    cache = KVCache()
    first = attn(x[:, :1], context=ctx, kv_cache=cache)
    k = cache.k
    second = attn(x[:, 1:2], context=torch.zeros_like(ctx), kv_cache=cache)  # the cached context wins
    assert cache.k is k
    torch.testing.assert_close(second, attn(x[:, 1:2], context=ctx))
    torch.testing.assert_close(first, attn(x[:, :1], context=ctx))
    cache.reorder(torch.tensor([1, 0]))
    torch.testing.assert_close(cache.k, k[[1, 0]])


@pytest.mark.parametrize("kw, match", [
    (dict(strategy="sampling"), "strategy"), (dict(strategy="nucleus", top_p=0.0), "top_p"),
    (dict(strategy="nucleus", temperature=-1.0), "temperature"), (dict(strategy="nucleus", top_k=0), "top_k"),
    (dict(strategy="beam", num_beams=0), "num_beams"), (dict(max_new_tokens=0), "max_new_tokens"),
])
def test_bad_decoding_arguments_are_named(kw, match):
    kw = {"max_new_tokens": 3, **kw}
    with pytest.raises(ValueError, match=match):
        decode(Table(_chain(), 1), torch.tensor([[1]]), eos_token_id=0, **kw)
    with pytest.raises(ValueError, match="prompt"):
        decode(Table(_chain(), 1), torch.tensor([1.0]), 3, eos_token_id=0)
