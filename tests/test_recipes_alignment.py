"""Chapter 06b's alignment recipe: the DPO loss equal to trl's ``DPOTrainer`` (its own loss code, run on a stand-in
trainer), sequence log-probabilities equal to a hand computation on the zoo's ``llava-tiny``, log 2 and a live
gradient at the start, preference pairs true and false of their scenes (``holds`` and CHAIR), a few DPO steps that
lower the loss, and bad input."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from vlm_primer import zoo
from vlm_primer.evaluation.hallucination import chair
from vlm_primer.recipes import alignment as A
from vlm_primer.recipes.data import caption_truth
from vlm_primer.world import WorldConfig, holds


@pytest.fixture(scope="module")
def llava():
    return zoo.load("llava-tiny")


@pytest.fixture(scope="module")
def pairs():
    return A.preference_pairs(40, seed=3)


@pytest.fixture(scope="module")
def batch(llava, pairs):
    return A.dpo_collate(llava.tokens_per_image, transform=zoo.preprocess("llava-tiny"))(pairs[:4])


# --- trl's DPO loss, run on the same log-probabilities ----------------------------------------------------------

def trl_dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, label_smoothing, loss_type, lengths):
    """trl 1.16's ``DPOTrainer._compute_loss`` (where its DPO losses live: ``DPOTrainer.dpo_loss`` is gone) called
    on a stand-in ``self`` that holds only the attributes it reads, with reference log-probabilities passed as
    precomputed and a stand-in model whose per-token log-probabilities sum to the given ones over ``lengths``
    response tokens. Returns trl's mean loss and its logged mean rewards."""
    DPOTrainer = pytest.importorskip("trl.trainer.dpo_trainer", reason="trl (the test oracle) is not installed"
                                     ).DPOTrainer
    if not hasattr(DPOTrainer, "_compute_loss"):
        pytest.skip("the oracle calls trl >= 1.0's DPOTrainer._compute_loss (older trl has dpo_loss instead)")
    n = len(policy_chosen)
    width = int(lengths.max()) + 1
    completion = torch.zeros(2 * n, width, dtype=torch.long)
    for i, k in enumerate(lengths.tolist()):
        completion[i, 1:1 + k] = 1
    shift = completion[:, 1:].to(policy_chosen.dtype)
    # random per-token values on the response, rescaled to sum to each sequence's log-probability
    g = torch.Generator().manual_seed(0)
    parts = torch.rand(2 * n, width - 1, generator=g, dtype=policy_chosen.dtype) * shift + 1e-3 * shift
    seq = torch.cat([policy_chosen, policy_rejected])
    per_token = parts / parts.sum(1, keepdim=True) * seq[:, None]

    def model(**kwargs):
        assert kwargs["fused_lm_head"] and kwargs["labels"].shape == completion.shape
        zeros = torch.zeros_like(per_token)
        return SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

    metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    stand_in = SimpleNamespace(
        model=SimpleNamespace(training=True), ref_model=None, args=SimpleNamespace(),
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather=lambda t: t, gather_for_metrics=lambda t: t),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        f_alpha_divergence_coef=0.5, loss_types=[loss_type], loss_weights=[1.0], beta=beta,
        label_smoothing=label_smoothing, use_weighting=False, _metrics=metrics, _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.ones(2 * n, width, dtype=torch.long), "attention_mask": torch.ones(2 * n, width),
              "completion_mask": completion, "ref_chosen_logps": ref_chosen, "ref_rejected_logps": ref_rejected}
    loss = DPOTrainer._compute_loss(stand_in, model, inputs, return_outputs=False)
    return loss, metrics["train"]["rewards/chosen"][-1], metrics["train"]["rewards/rejected"][-1]


def _logps(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = -torch.rand(4, n, generator=g, dtype=torch.float64) * 30 - 1
    lengths = torch.randint(1, 12, (2 * n,), generator=g)
    return x[0], x[1], x[2], x[3], lengths


@pytest.mark.parametrize("loss_type,beta,eps", [("sigmoid", 0.1, 0.0), ("sigmoid", 0.5, 0.0), ("sigmoid", 2.0, 0.0),
                                                ("robust", 0.1, 0.0), ("robust", 0.1, 0.1), ("robust", 0.7, 0.3),
                                                ("hinge", 0.1, 0.0), ("hinge", 1.0, 0.0),
                                                ("ipo", 0.1, 0.0), ("ipo", 0.5, 0.0)])
def test_dpo_loss_equals_trl(loss_type, beta, eps):
    pc, pr, rc, rr, lengths = _logps(8, seed=int(beta * 10) + int(eps * 100))
    lens = dict(chosen_lengths=lengths[:8], rejected_lengths=lengths[8:]) if loss_type == "ipo" else {}
    losses, chosen, rejected = A.dpo_loss(pc, pr, rc, rr, beta, eps, loss_type=loss_type, **lens)
    assert losses.shape == chosen.shape == rejected.shape == (8,)
    want, want_chosen, want_rejected = trl_dpo(pc, pr, rc, rr, beta, eps, loss_type, lengths)
    assert losses.mean().item() == pytest.approx(want.item(), abs=1e-6)
    assert chosen.mean().item() == pytest.approx(want_chosen, abs=1e-6)
    assert rejected.mean().item() == pytest.approx(want_rejected, abs=1e-6)
    assert torch.allclose(chosen, beta * (pc - rc)) and torch.allclose(rejected, beta * (pr - rr))
    for i in range(0, 8, 3):  # pair by pair too
        one = trl_dpo(pc[i:i + 1], pr[i:i + 1], rc[i:i + 1], rr[i:i + 1], beta, eps, loss_type, lengths[[i, 8 + i]])
        assert losses[i].item() == pytest.approx(one[0].item(), abs=1e-6)


@pytest.mark.parametrize("beta,eps", [(0.1, 0.05), (0.1, 0.2), (0.5, 0.1), (2.0, 0.4)])
def test_label_smoothing_is_conservative_dpo_as_trl_computes_it(beta, eps):
    """trl 1.16's ``sigmoid`` has no label smoothing; its cDPO form lives in ``aot``, which on one pair (nothing
    to sort) is -(1 - ε) log σ(βΔ) - ε log σ(-βΔ)."""
    pc, pr, rc, rr, lengths = _logps(6, seed=11)
    losses, _, _ = A.dpo_loss(pc, pr, rc, rr, beta, eps)
    for i in range(6):
        want = trl_dpo(pc[i:i + 1], pr[i:i + 1], rc[i:i + 1], rr[i:i + 1], beta, eps, "aot", lengths[[i, 6 + i]])[0]
        assert losses[i].item() == pytest.approx(want.item(), abs=1e-6)
    # and it is the smoothed sigmoid loss: the plain one at eps=0, symmetric at eps=0.5's limit
    d = beta * ((pc - rc) - (pr - rr))
    assert torch.allclose(losses, -(1 - eps) * torch.nn.functional.logsigmoid(d)
                          - eps * torch.nn.functional.logsigmoid(-d))


def test_dpo_loss_at_equal_policy_and_reference_is_log2():
    x = torch.randn(5, dtype=torch.float64)
    y = torch.randn(5, dtype=torch.float64)
    losses, c, r = A.dpo_loss(x, y, x.clone(), y.clone(), beta=0.3)
    assert torch.allclose(losses, torch.full_like(losses, math.log(2))) and not c.any() and not r.any()


# --- sequence log-probabilities ----------------------------------------------------------------------------------

def test_sequence_logprobs_equal_a_hand_computation(llava, batch):
    chosen = batch["chosen"]
    got = A.sequence_logprobs(llava, chosen)
    with torch.no_grad():
        logits = llava(chosen["input_ids"], chosen["pixel_values"], attention_mask=chosen["attention_mask"]).logits
    logp = torch.log_softmax(logits.double(), dim=-1)
    labels = chosen["labels"]
    for b in range(len(labels)):
        positions = [t for t in range(1, labels.shape[1]) if labels[b, t] != -100]
        assert positions, "every row has an answer"
        want = sum(logp[b, t - 1, labels[b, t]].item() for t in positions)
        assert got[b].item() == pytest.approx(want, abs=1e-4)
        assert (A.response_lengths(chosen)[b]) == len(positions)
    # padding changes nothing: a row alone gives the same number
    alone = {k: v[1:2] for k, v in chosen.items()}
    n = int(alone["attention_mask"].sum())
    alone = {k: (v[:, :n] if k != "pixel_values" else v) for k, v in alone.items()}
    assert A.sequence_logprobs(llava, alone).item() == pytest.approx(got[1].item(), abs=1e-4)
    assert got.requires_grad  # the policy's log-probabilities carry gradients


def test_sequence_logprobs_of_any_causal_lm():
    logits = torch.randn(2, 5, 7, dtype=torch.float64)
    labels = torch.tensor([[-100, 1, 2, -100, -100], [-100, -100, -100, 4, 6]])
    got = A.sequence_logprobs(lambda input_ids, **_: {"logits": logits}, {"input_ids": labels.clamp(min=0),
                                                                          "labels": labels})
    lp = torch.log_softmax(logits, -1)
    assert torch.allclose(got, torch.stack([lp[0, 0, 1] + lp[0, 1, 2], lp[1, 2, 4] + lp[1, 3, 6]]))


# --- the step ---------------------------------------------------------------------------------------------------

def test_dpo_at_init_is_log2_with_a_live_gradient(llava, batch):
    policy = A.frozen_reference(llava).train().requires_grad_(True)  # a trainable copy
    reference = A.frozen_reference(llava)
    assert not any(p.requires_grad for p in reference.parameters())
    out = A.dpo_step(policy, reference, batch, beta=0.1)
    assert out["loss"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert not out["chosen_rewards"].any() and not out["rejected_rewards"].any() and out["reward_accuracy"] == 0.0
    out["loss"].backward()
    grad = sum(float(p.grad.norm()) for p in policy.parameters() if p.grad is not None)
    assert grad > 0 and all(p.grad is None for p in reference.parameters())
    # σ'(0) β/2 per pair: the gradient of the loss is -β/2 (∇ log π(y_c) - ∇ log π(y_r)) averaged over pairs


def test_a_few_dpo_steps_lower_the_loss_on_the_training_pairs(llava, batch):
    torch.manual_seed(0)
    policy = A.frozen_reference(llava).train().requires_grad_(True)
    policy.set_stage(2)
    reference = A.frozen_reference(llava)
    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-3)
    first = A.dpo_step(policy, reference, batch, optimizer=opt)
    for _ in range(2):
        A.dpo_step(policy, reference, batch, optimizer=opt)
    with torch.no_grad():
        after = A.dpo_step(policy, reference, batch)
    assert after["loss"].item() < first["loss"].item() - 0.05
    assert after["margin"] > 0 and after["reward_accuracy"] >= 0.75
    # the reference did not move
    assert A.dpo_step(A.frozen_reference(llava).train(), reference, batch)["loss"].item() == pytest.approx(
        math.log(2), abs=1e-6)


def test_ipo_step_divides_by_response_lengths(llava, batch):
    policy = A.frozen_reference(llava)
    reference = A.frozen_reference(llava)
    out = A.dpo_step(policy, reference, batch, beta=0.5, loss_type="ipo")
    assert out["loss"].item() == pytest.approx((1 / (2 * 0.5)) ** 2, abs=1e-5)  # h = 0 at the start


# --- preference pairs ---------------------------------------------------------------------------------------------

def test_pairs_chosen_true_rejected_false_kinds_balanced(pairs):
    kinds = [p["kind"] for p in pairs]
    assert kinds.count("object") == kinds.count("attribute") == 20
    scenes = [p["scene"] for p in pairs]
    for p in pairs:
        assert holds(p["chosen_meaning"], p["scene"]) and not holds(p["rejected_meaning"], p["scene"])
        assert p["chosen"] != p["rejected"] and p["prompt"] in A.PREFERENCE_PROMPTS
        assert p["image"].shape == (3, 48, 48) and 0 <= p["image"].min() and p["image"].max() <= 1
        # the same template and synonyms: the texts differ only around the edit
        a, b = p["chosen"].split(), p["rejected"].split()
        assert len(a) == len(b) and sum(x != y for x, y in zip(a, b)) <= 2
    # chapter 07's CHAIR reads the same: chosen names every object and nothing absent ...
    assert all(caption_truth([p["chosen"] for p in pairs], scenes))
    # ... an object edit is a hallucinated object, an attribute edit a hallucinated colour-object only
    plain = chair([p["rejected"] for p in pairs], scenes)["per_caption"]
    colour = chair([p["rejected"] for p in pairs], scenes, with_color=True)["per_caption"]
    for p, row, crow in zip(pairs, plain, colour):
        assert len(crow["hallucinated"]) == 1
        assert bool(row["hallucinated"]) == (p["kind"] == "object")


def test_pairs_are_deterministic_and_follow_the_world():
    a, b = A.preference_pairs(6, seed=1), A.preference_pairs(6, seed=1)
    assert [(p["chosen"], p["rejected"]) for p in a] == [(p["chosen"], p["rejected"]) for p in b]
    assert [p["chosen"] for p in A.preference_pairs(6, seed=2)] != [p["chosen"] for p in a]
    world = WorldConfig(image_size=32, colors=("red", "blue", "green"), shapes=("circle", "square", "star"))
    only = A.preference_pairs(5, world, kinds=("attribute",), num_objects=1)
    assert all(p["kind"] == "attribute" and p["image"].shape == (3, 32, 32) for p in only)
    assert all(p["rejected_meaning"].nps[0].color in ("red", "blue", "green") for p in only)


def test_collate_labels_only_the_answers(batch, pairs):
    chosen, rejected = batch["chosen"], batch["rejected"]
    assert chosen["input_ids"].shape == rejected["input_ids"].shape
    assert torch.equal(chosen["pixel_values"], rejected["pixel_values"])
    from vlm_primer.text import Tokenizer

    tok = Tokenizer.load()
    for i in range(4):
        ans = chosen["labels"][i][chosen["labels"][i] != -100].tolist()
        assert tok.decode(ans).strip().startswith(pairs[i]["chosen"])
        ans = rejected["labels"][i][rejected["labels"][i] != -100].tolist()
        assert tok.decode(ans).strip().startswith(pairs[i]["rejected"])
        assert not (chosen["labels"][i][chosen["input_ids"][i] == 5] != -100).any()


# --- bad input ----------------------------------------------------------------------------------------------------

def test_bad_input(llava, batch, pairs):
    x = torch.zeros(3)
    with pytest.raises(TypeError, match="policy_chosen"):
        A.dpo_loss([0.0, 1.0], x, x, x)
    with pytest.raises(ValueError, match="shape"):
        A.dpo_loss(x, torch.zeros(2), x, x)
    with pytest.raises(ValueError, match="beta"):
        A.dpo_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        A.dpo_loss(x, x, x, x, label_smoothing=0.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        A.dpo_loss(x, x, x, x, label_smoothing=0.1, loss_type="hinge")
    with pytest.raises(ValueError, match="loss_type"):
        A.dpo_loss(x, x, x, x, loss_type="kto")
    with pytest.raises(ValueError, match="ipo"):
        A.dpo_loss(x, x, x, x, chosen_lengths=torch.ones(3))
    with pytest.raises(ValueError, match="n must be"):
        A.preference_pairs(0)
    with pytest.raises(ValueError, match="kinds"):
        A.preference_pairs(2, kinds=("relation",))
    with pytest.raises(ValueError, match="no 'object' edit"):
        A.preference_pairs(2, WorldConfig(shapes=("circle",)), kinds=("object",))
    with pytest.raises(ValueError, match="image_tokens"):
        A.dpo_collate(0)
    collate = A.dpo_collate(llava.tokens_per_image)
    with pytest.raises(ValueError, match="non-empty"):
        collate([])
    with pytest.raises(TypeError, match="pairs\\[0\\]"):
        collate([{"image": pairs[0]["image"], "prompt": "hi"}])
    with pytest.raises(ValueError, match="labels"):
        A.sequence_logprobs(llava, {"input_ids": batch["chosen"]["input_ids"]})
    no_answer = dict(batch["chosen"], labels=torch.full_like(batch["chosen"]["labels"], -100))
    with pytest.raises(ValueError, match="no response token"):
        A.sequence_logprobs(llava, no_answer)
    with pytest.raises(ValueError, match="frozen copy"):
        A.dpo_step(llava, llava, batch)
    with pytest.raises(ValueError, match="dpo_collate"):
        A.dpo_step(llava, A.frozen_reference(llava), batch["chosen"])
    with pytest.raises(TypeError, match="frozen_reference"):
        A.dpo_step(llava, None, batch)
