"""Decoding: greedy search, beam search and nucleus sampling for any model that gives next-token logits.

A model hands the loops a **step function** (:class:`Stepper`): ``step(new_ids)`` takes the tokens added since
its last call (the whole prompt at the first call, one token per row after that) and returns the logits of the
next token ``(B, V)``, keeping its own KV caches; ``step.reorder(index)`` keeps the cache rows that a beam
search continues. The loops know nothing else about the model, so BLIP's captioner, CoCa and the decoder LM
decode the same way. Explained in notebook 04, §Decoding.

* **greedy**: the most likely token at every step;
* **beam search**: the ``num_beams`` most likely sequences so far, each extended by every token, the best
  ``num_beams`` kept; a sequence that emits ``<eos>`` is finished with score ``sum log p / length**length_penalty``.
  The bookkeeping follows ``transformers``' ``generate()`` (its vectorised beam search, ``early_stopping=False``),
  so on the same weights the two return the same captions (``tests/test_parity_blip.py``);
* **nucleus sampling** (Holtzman et al. 2020): sample from the smallest set of tokens whose probability adds up
  to ``top_p``, after dividing the logits by ``temperature`` (and an optional ``top_k`` cut), in the order
  ``transformers`` applies them.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from vlm_primer.validate import check_finite, check_int

__all__ = ["DECODING", "Stepper", "beam_search", "decode", "filter_logits", "pick_next", "sample_tokens"]

DECODING = ("greedy", "beam", "nucleus")
_NEG = -1.0e9  # the score of a slot that must not be chosen (as in transformers)


class Stepper(Protocol):
    def __call__(self, new_ids: torch.Tensor) -> torch.Tensor: ...

    def reorder(self, index: torch.Tensor) -> None: ...


def _check_sampling(temperature: float, top_k: int | None, top_p: float) -> None:
    check_finite(temperature, "temperature")
    check_finite(top_p, "top_p")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
    if top_k is not None:
        check_int(top_k, "top_k", hint="or None")


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float = 1.0) -> torch.Tensor:
    """Float logits ``(B, V)`` divided by ``temperature`` with every token outside the ``top_k`` and outside the
    nucleus of mass ``top_p`` set to ``-inf`` (the most likely token always stays)."""
    _check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        raise ValueError("temperature 0 is greedy search: there is nothing to sample")
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=False)
        outside = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p  # the unlikely tail, ascending
        outside[:, -1] = False
        logits = logits.masked_fill(outside.scatter(1, order, outside), float("-inf"))
    return logits


def pick_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None, top_p: float = 1.0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids ``(B,)`` from logits ``(B, V)``: the argmax at ``temperature == 0``, else a sample from
    :func:`filter_logits`."""
    _check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits, temperature, top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _check_prompt(prompt: torch.Tensor, max_new_tokens: int) -> None:
    if not isinstance(prompt, torch.Tensor) or prompt.ndim != 2 or prompt.dtype.is_floating_point \
            or prompt.shape[0] == 0 or prompt.shape[1] == 0:
        raise ValueError(f"prompt must be integer ids (B, L) with B, L >= 1, got "
                         f"{tuple(prompt.shape) if isinstance(prompt, torch.Tensor) else type(prompt).__name__}")
    check_int(max_new_tokens, "max_new_tokens")


@torch.no_grad()
def sample_tokens(step: Stepper, prompt: torch.Tensor, max_new_tokens: int, *, eos_token_id: int | None,
                  pad_token_id: int = 0, temperature: float = 0.0, top_k: int | None = None, top_p: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Greedy search (``temperature=0``) or sampling, one token per row and step: ``prompt`` ``(B, L)`` followed
    by the new tokens. A row that emitted ``eos_token_id`` is padded with ``pad_token_id`` until every row is done."""
    _check_prompt(prompt, max_new_tokens)
    _check_sampling(temperature, top_k, top_p)
    ids, new = prompt, prompt
    done = torch.zeros(len(prompt), dtype=torch.bool, device=prompt.device)
    for _ in range(max_new_tokens):
        token = pick_next(step(new), temperature, top_k, top_p, generator)
        if eos_token_id is not None:
            token = token.masked_fill(done, pad_token_id)
            done = done | (token == eos_token_id)
        new = token[:, None]
        ids = torch.cat([ids, new], dim=1)
        if eos_token_id is not None and bool(done.all()):
            break
    return ids


def _gather(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of ``t`` ``(B, N, ...)`` picked per batch item by ``index`` ``(B, M)``."""
    return t.gather(1, index.view(*index.shape, *([1] * (t.ndim - 2))).expand(*index.shape, *t.shape[2:]))


@torch.no_grad()
def beam_search(step: Stepper, prompt: torch.Tensor, max_new_tokens: int, *, num_beams: int,
                eos_token_id: int | None, pad_token_id: int = 0, length_penalty: float = 1.0) -> torch.Tensor:
    """The best of ``num_beams`` beams for each row of ``prompt`` ``(B, L)``: the prompt and the new tokens,
    padded with ``pad_token_id`` after ``<eos>`` (to the longest result). ``step`` must run on ``B * num_beams``
    rows, each prompt repeated ``num_beams`` times in a row (``repeat_interleave``)."""
    _check_prompt(prompt, max_new_tokens)
    check_int(num_beams, "num_beams")
    check_finite(length_penalty, "length_penalty")
    batch, prompt_len = prompt.shape
    k, device = num_beams, prompt.device
    keep = 2 * k  # enough candidates that k go on even if k of them just ended with <eos>
    total = prompt_len + max_new_tokens
    running = torch.full((batch, k, total), pad_token_id, dtype=torch.long, device=device)
    running[:, :, :prompt_len] = prompt[:, None]
    finished = running.clone()
    scores = torch.zeros(batch, k, device=device)
    scores[:, 1:] = _NEG  # all beams start equal: extend only the first one at the first step
    finished_scores = torch.full((batch, k), _NEG, device=device)
    is_finished = torch.zeros(batch, k, dtype=torch.bool, device=device)
    improvable = torch.ones(batch, 1, dtype=torch.bool, device=device)
    is_top_k = torch.arange(keep, device=device) < k
    new = prompt.repeat_interleave(k, dim=0)
    for t in range(max_new_tokens):
        cur = prompt_len + t
        logp = F.log_softmax(step(new).float(), dim=-1)
        vocab = logp.shape[-1]
        logp = (logp.view(batch, k, vocab) + scores[:, :, None]).view(batch, k * vocab)
        cand_scores, cand = torch.topk(logp, keep)  # the best continuations over all beams, best first
        parent, token = cand // vocab, cand % vocab
        cands = _gather(running, parent)
        cands[:, :, cur] = token
        ends = torch.full_like(token, t == max_new_tokens - 1, dtype=torch.bool)
        if eos_token_id is not None:
            ends = ends | (token == eos_token_id)
        # the k best candidates that did not end go on
        alive_scores = cand_scores + ends.float() * _NEG
        best = torch.topk(alive_scores, k).indices
        running, scores, parents = _gather(cands, best), _gather(alive_scores, best), _gather(parent, best)
        # the candidates among the first k that ended join the finished ones if they beat them
        just_ended = ends & is_top_k
        normalised = cand_scores / ((t + 1) ** length_penalty)
        normalised = normalised + (~improvable).float() * _NEG + (~just_ended).float() * _NEG
        merged = torch.topk(torch.cat([finished_scores, normalised], dim=1), k).indices
        finished = _gather(torch.cat([finished, cands], dim=1), merged)
        finished_scores = _gather(torch.cat([finished_scores, normalised], dim=1), merged)
        is_finished = _gather(torch.cat([is_finished, just_ended], dim=1), merged)
        step.reorder((parents + torch.arange(batch, device=device)[:, None] * k).flatten())
        new = running[:, :, cur].reshape(-1, 1)
        # stop a row once its best running beam cannot beat its worst finished one
        worst = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True).values, _NEG)
        improvable = improvable & (scores[:, :1] / ((t + 1) ** length_penalty) > worst).any(-1, keepdim=True)
        if not bool(improvable.any()) or bool(ends.all()):
            break
    best = finished[:, 0]
    length = prompt_len + max_new_tokens
    if eos_token_id is not None:
        gen = best[:, prompt_len:]
        hit = gen == eos_token_id
        ends_at = torch.where(hit.any(1), hit.int().argmax(1) + 1, gen.shape[1])
        best[:, prompt_len:] = gen.masked_fill(torch.arange(gen.shape[1], device=device) >= ends_at[:, None],
                                               pad_token_id)
        length = prompt_len + int(ends_at.max())
    return best[:, :length]


def decode(step: Stepper, prompt: torch.Tensor, max_new_tokens: int, strategy: str = "greedy", *,
           eos_token_id: int | None, pad_token_id: int = 0, num_beams: int = 3, length_penalty: float = 1.0,
           temperature: float = 1.0, top_k: int | None = None, top_p: float = 0.9,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """One entry point for the three strategies of :data:`DECODING`; ``beam`` needs a ``step`` built for
    ``B * num_beams`` rows, the others for ``B``."""
    if strategy == "greedy":
        return sample_tokens(step, prompt, max_new_tokens, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    if strategy == "beam":
        return beam_search(step, prompt, max_new_tokens, num_beams=num_beams, eos_token_id=eos_token_id,
                           pad_token_id=pad_token_id, length_penalty=length_penalty)
    if strategy == "nucleus":
        return sample_tokens(step, prompt, max_new_tokens, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                             temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
    raise ValueError(f"strategy must be one of {DECODING}, got {strategy!r}")
