"""Chapter 06b's location tokens in a causal VLM: the grown vocabulary leaves the model unchanged on old tokens, a
training example targets exactly the two location tokens of its box and <|end|>, and the constrained decoding
reads back the box the model favours, always a valid one."""

from __future__ import annotations

import pytest
import torch

from vlm_primer import zoo
from vlm_primer.recipes import kosmos as K
from vlm_primer.recipes.grounding import box_to_location_tokens, location_tokens_to_box, referring_items
from vlm_primer.text import Tokenizer
from vlm_primer.zoo import grounding_recipes

TOK = Tokenizer.load()
P = 8


@pytest.fixture(scope="module")
def models():
    base = zoo.load("llava-tiny")
    return base, K.add_location_tokens(base, P)


@pytest.fixture(scope="module")
def items():
    return referring_items(6, grounding_recipes.world(), seed=3)


def test_growing_the_vocabulary_keeps_the_model(models, items):
    base, grown = models
    v = base.cfg.text.vocab_size
    assert grown.cfg.text.vocab_size == v + P * P and K.location_base(grown, P) == v
    for (k, a), (k2, b) in zip(base.state_dict().items(), grown.state_dict().items()):
        assert k == k2
        assert torch.equal(a, b if a.shape == b.shape else b[:v]), k
    batch = K.location_batches(items, TOK, grown, P, zoo.preprocess("llava-tiny"), 6, with_answer=False)[0]
    with torch.no_grad():
        old, new = base(**batch).logits, grown(**batch).logits
    torch.testing.assert_close(new[..., :v], old)  # every old token scored as before
    assert new.shape[-1] == v + P * P
    with pytest.raises(ValueError, match="no 8x8 location tokens"):
        K.location_base(base, P)
    with pytest.raises(TypeError, match="model must be a Llava"):
        K.add_location_tokens(torch.nn.Linear(2, 2), P)
    with pytest.raises(ValueError, match="num_bins"):
        K.add_location_tokens(base, 0)


def test_a_training_example_targets_the_box_tokens_and_end(models, items):
    _, grown = models
    it = items[0]
    ex = K.location_item(it, TOK, grown, P)
    targets = [t for t, m in zip(ex["input_ids"], ex["target"]) if m]
    base = K.location_base(grown, P)
    assert targets == [base + int(k) for k in box_to_location_tokens(it["box"], P)] + [TOK.end_id]
    assert ex["input_ids"][-3:] == targets  # the answer closes the conversation
    assert sum(t == 5 for t in ex["input_ids"]) == grown.tokens_per_image
    prompt = K.location_item(it, TOK, grown, P, with_answer=False)
    assert prompt["input_ids"] == ex["input_ids"][:-3] and not any(prompt["target"])
    assert TOK.decode(prompt["input_ids"]).endswith(K.LOCATION_PROMPT.format(it["text"]))


def test_predict_boxes_is_the_constrained_argmax_and_always_a_box(models, items):
    _, grown = models
    transform = zoo.preprocess("llava-tiny")
    batch = K.location_batches(items, TOK, grown, P, transform, 6, with_answer=False)[0]
    boxes, tokens = K.predict_boxes(grown, batch, P)
    assert boxes.shape == (6, 4) and tokens.shape == (6, 2)
    torch.testing.assert_close(boxes, torch.stack([location_tokens_to_box(t, P) for t in tokens]))
    base = K.location_base(grown, P)
    with torch.no_grad():  # the first token by hand: the best location token after each (unpadded) prompt
        for i, it in enumerate(items):
            one = K.location_batches([it], TOK, grown, P, transform, 1, with_answer=False)[0]
            first = grown(**one).logits[0, -1, base:].argmax()
            assert int(first) == int(tokens[i, 0])
    rows, cols = tokens // P, tokens % P
    assert (rows[:, 1] >= rows[:, 0]).all() and (cols[:, 1] >= cols[:, 0]).all()


def test_a_few_steps_teach_a_box(models, items):
    torch.manual_seed(0)
    _, grown = models
    model = K.add_location_tokens(zoo.load("llava-tiny"), P)
    model.set_stage(2)
    model.train()
    batch = K.location_batches(items[:4], TOK, model, P, zoo.preprocess("llava-tiny"), 4)[0]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(60):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::20]
    model.eval()
    prompts = K.location_batches(items[:4], TOK, model, P, zoo.preprocess("llava-tiny"), 4, with_answer=False)[0]
    _, tokens = K.predict_boxes(model, prompts, P)
    want = torch.stack([box_to_location_tokens(it["box"], P) for it in items[:4]])
    assert torch.equal(tokens, want)  # memorised: the boxes it was shown come back exactly
