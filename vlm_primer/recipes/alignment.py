"""Alignment with preferences (survey §3.5): DPO on the tiny LLaVA, with preference pairs written from the scene graph.

Chapter 06b (survey §3.5) explains it. After instruction tuning a VLM still says things that are not in the image;
preference optimisation shows it two answers to the same request, one preferred, and moves it towards the
preferred one without a reward model (DPO, Rafailov et al. 2023), staying close to a frozen reference (the model
it started from).

* **Preference pairs** (:func:`preference_pairs`): the scene graph as the facts (LLaVA-RLHF's *factually augmented*
  reward model, Sun et al. 2023, is given the image's facts), and rejected answers made by injecting a
  hallucination into a true one (as POVID, Zhou et al. 2024, builds its dispreferred answers). A request about an
  image; the *chosen* answer names every object of the scene
  ("a big red circle and a big blue square"), true by construction; the *rejected* answer is the same answer, same
  template and synonyms, with one edit that makes it false: an ``object`` replaced by one of a shape the image does
  not hold ("... and a big blue star"), or an ``attribute`` changed, the colour of one object to one no object of
  that shape has ("a big green circle and ..."). The kinds take turns. Truth is decided by
  :func:`~vlm_primer.world.holds` (chosen true, rejected false); chapter 07's CHAIR reads the same thing: an
  ``object`` edit is a hallucinated object, an ``attribute`` edit a hallucinated colour-object.
* **Sequence log-probabilities** (:func:`sequence_logprobs`): for a response ``y`` to a prompt ``x`` (the image
  included), ``log π(y | x) = Σ_t log π(y_t | x, y_<t)`` over the response tokens (``labels != -100``; position
  ``t`` of the logits predicts token ``t + 1``), from our LLaVA or any causal LM that returns logits.
* **The DPO loss** (:func:`dpo_loss`). With the implicit rewards ``r_c = β (log π(y_c|x) - log π_ref(y_c|x))`` and
  ``r_r = β (log π(y_r|x) - log π_ref(y_r|x))`` of the chosen and the rejected answer,

      sigmoid (DPO):  L = -log σ(r_c - r_r)
      with label smoothing ε (conservative DPO, labels flipped with probability ε):
                      L = -(1 - ε) log σ(r_c - r_r) - ε log σ(r_r - r_c)
      robust (Chowdhury et al. 2024):  L = [-(1 - ε) log σ(r_c - r_r) + ε log σ(r_r - r_c)] / (1 - 2ε)
      hinge (SLiC's, on the log-ratios as in RSO):   L = max(0, 1 - (r_c - r_r))
      ipo (Azar et al. 2023):  L = (h - 1 / (2β))², h = the two log-ratios per response token, chosen minus rejected

  equal to ``trl``'s ``DPOTrainer`` on the same log-probabilities (the tests run trl's own loss code). At the start,
  policy = reference, every reward is 0 and the sigmoid loss is ``log 2``.
* **A step** (:func:`dpo_collate`, :func:`dpo_step`, :func:`frozen_reference`): the pairs as two LLaVA batches
  (chosen and rejected, padded alike, answers the only targets: :func:`~vlm_primer.backbones.data.llava_collate`),
  the policy's log-probabilities with gradients, the frozen reference's without, the loss and, given an optimiser,
  the update.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from vlm_primer.backbones.llava import IMAGE_TOKEN_ID, expand_image_tokens
from vlm_primer.validate import check_int, value_checks_enabled
from vlm_primer.world.language import NP, Exists, holds, realize
from vlm_primer.world.scene import Scene, WorldConfig

__all__ = ["DPO_LOSSES", "IGNORE_INDEX", "PAIR_KINDS", "PREFERENCE_PROMPTS", "DPOModel", "DPOOutput", "dpo_collate",
           "dpo_loss", "dpo_step", "frozen_reference", "preference_pairs", "response_lengths", "sequence_logprobs"]

IGNORE_INDEX = -100
DPO_LOSSES = ("sigmoid", "robust", "hinge", "ipo")
PAIR_KINDS = ("object", "attribute")
PREFERENCE_PROMPTS = ("write a short caption for this image.", "describe the image.", "what is in this image?")


# --- log-probabilities -------------------------------------------------------------------------------------------

def _logits(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    if hasattr(output, "logits"):
        return output.logits
    raise TypeError(f"the model must return logits (a tensor, or an output with .logits), got {type(output).__name__}")


def _check_batch(batch: Any, name: str = "batch") -> torch.Tensor:
    if not isinstance(batch, dict):
        raise TypeError(f"{name} must be a dict of model inputs with labels (llava_collate's), got "
                        f"{type(batch).__name__}")
    if "input_ids" not in batch or "labels" not in batch:
        raise ValueError(f"{name} needs 'input_ids' and 'labels' (-100 off the response), got keys {sorted(batch)}")
    labels = batch["labels"]
    if not isinstance(labels, torch.Tensor) or labels.ndim != 2 or labels.dtype.is_floating_point:
        raise TypeError(f"{name}['labels'] must be an integer tensor (B, L)")
    ids = batch["input_ids"]
    if isinstance(ids, torch.Tensor) and ids.shape != labels.shape:
        raise ValueError(f"{name}: labels {tuple(labels.shape)} must have the shape of input_ids {tuple(ids.shape)}")
    if labels.shape[1] < 2:
        raise ValueError(f"{name}: sequences of {labels.shape[1]} token leave nothing to predict")
    empty = ((labels[:, 1:] != IGNORE_INDEX).sum(1) == 0).nonzero().flatten().tolist() if value_checks_enabled() else []
    if empty:
        raise ValueError(f"{name}: rows {empty} have no response token (every label after the first is "
                         f"{IGNORE_INDEX}): a preference needs an answer to score")
    return labels


def response_lengths(batch: dict[str, Any]) -> torch.Tensor:
    """The number of response tokens of each row of ``batch`` (labels other than -100 after the first position)."""
    return (_check_batch(batch)[:, 1:] != IGNORE_INDEX).sum(1)


def sequence_logprobs(model: Callable[..., Any], batch: dict[str, Any]) -> torch.Tensor:
    """``(B,)``: the log-probability of each row's response, the sum of ``log π(y_t | x, y_<t)`` over the tokens
    whose label is not -100 (position ``t`` of the logits predicts label ``t + 1``, as in the next-token loss).

    ``batch``: model inputs plus ``labels`` (``llava_collate``'s: ``input_ids``, ``attention_mask``, ``labels``,
    ``pixel_values``); everything but ``labels`` is passed to ``model``, which returns logits ``(B, L, V)`` (our
    LLaVA or ``DecoderLM``, a ``transformers`` causal LM, or a function). Gradients flow when the model has them."""
    labels = _check_batch(batch)
    logits = _logits(model(**{k: v for k, v in batch.items() if k != "labels"}))
    if logits.ndim != 3 or logits.shape[:2] != labels.shape:
        raise ValueError(f"the model's logits {tuple(logits.shape)} must be (B, L, V) with (B, L) = the labels' "
                         f"{tuple(labels.shape)}")
    logits = logits[:, :-1]
    if not logits.dtype.is_floating_point or logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    targets = labels[:, 1:].to(logits.device)
    mask = targets != IGNORE_INDEX
    picked = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return (picked * mask).sum(1)


# --- the loss ----------------------------------------------------------------------------------------------------

def _check_number(value: Any, name: str, low: float, high: float | None, *, closed_low: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    if (value < low if closed_low else value <= low) or (high is not None and value >= high):
        span = f"{'[' if closed_low else '('}{low}, {'inf)' if high is None else f'{high})'}"
        raise ValueError(f"{name} must lie in {span}, got {value!r}")
    return float(value)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1, label_smoothing: float = 0.0, *,
             loss_type: str = "sigmoid", chosen_lengths: torch.Tensor | None = None,
             rejected_lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss of each pair and the implicit rewards: ``(losses, chosen_rewards, rejected_rewards)``, each
    of the inputs' shape (one value per pair; the rewards detached, as metrics).

    The four inputs are sequence log-probabilities (:func:`sequence_logprobs`) of the chosen and rejected answers
    under the policy and the frozen reference. ``loss_type`` (:data:`DPO_LOSSES`, formulas in the module docstring):
    ``sigmoid`` (DPO; ``label_smoothing`` ε > 0 gives conservative DPO), ``robust`` (ε: the rate of flipped
    labels), ``hinge``, ``ipo`` (the log-ratios divided by ``chosen_lengths``/``rejected_lengths``, the response
    token counts, as trl does; omitted: not divided). ``beta`` > 0; ε in [0, 0.5). Equal to ``trl``'s
    ``DPOTrainer`` (whose ``sigmoid`` has no label smoothing from trl 1.0 on: its smoothed form is trl's ``aot`` on one
    pair)."""
    inputs = dict(policy_chosen=policy_chosen, policy_rejected=policy_rejected, ref_chosen=ref_chosen,
                  ref_rejected=ref_rejected)
    for name, t in inputs.items():
        if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor of log-probabilities, got "
                            f"{type(t).__name__ if not isinstance(t, torch.Tensor) else t.dtype}")
        if t.shape != policy_chosen.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but policy_chosen {tuple(policy_chosen.shape)}: "
                             "one log-probability per pair in each")
    if loss_type not in DPO_LOSSES:
        raise ValueError(f"loss_type must be one of {DPO_LOSSES}, got {loss_type!r}")
    beta = _check_number(beta, "beta", 0.0, None, closed_low=False)
    eps = _check_number(label_smoothing, "label_smoothing", 0.0, 0.5, closed_low=True)
    if eps and loss_type in ("hinge", "ipo"):
        raise ValueError(f"label_smoothing is for the sigmoid and robust losses, not {loss_type!r}")
    if loss_type != "ipo" and (chosen_lengths is not None or rejected_lengths is not None):
        raise ValueError("chosen_lengths/rejected_lengths normalise the ipo loss only")

    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    logits = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        losses = -(1 - eps) * F.logsigmoid(beta * logits) - eps * F.logsigmoid(-beta * logits)
    elif loss_type == "robust":
        losses = (-(1 - eps) * F.logsigmoid(beta * logits) + eps * F.logsigmoid(-beta * logits)) / (1 - 2 * eps)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * logits)
    else:
        counts = []
        for name, n in (("chosen_lengths", chosen_lengths), ("rejected_lengths", rejected_lengths)):
            if n is None:
                counts.append(torch.ones_like(policy_chosen))
                continue
            n = torch.as_tensor(n, device=policy_chosen.device)
            if n.shape != policy_chosen.shape:
                raise ValueError(f"{name} must hold one token count per pair, shape {tuple(policy_chosen.shape)}; "
                                 f"got {tuple(n.shape)}")
            counts.append(n.to(policy_chosen.dtype).clamp(min=1.0))
        losses = (chosen_ratio / counts[0] - rejected_ratio / counts[1] - 1 / (2 * beta)) ** 2
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


# --- preference pairs from the scene graph ------------------------------------------------------------------------

def _edits(scene: Scene, nps: tuple[NP, ...], kind: str, config: WorldConfig) -> list[tuple[int, NP]]:
    """Every single-NP edit of ``kind`` that names something the scene does not hold."""
    present = {(o.color, o.shape) for o in scene.objects}
    shapes = {o.shape for o in scene.objects}
    out = []
    for i, np_ in enumerate(nps):
        if kind == "object":  # an object of a shape the image does not hold, colour and size kept
            out += [(i, NP(s, np_.color, np_.size)) for s in config.shapes if s not in shapes]
        else:  # the colour changed to one no object of that shape has
            out += [(i, NP(np_.shape, c, np_.size)) for c in config.colors if (c, np_.shape) not in present]
    return out


def preference_pairs(n: int, config: WorldConfig | None = None, seed: int = 0, *, split: str = "train",
                     num_objects: int | tuple[int, int] = (1, 2), kinds: Sequence[str] = PAIR_KINDS,
                     prompts: Sequence[str] = PREFERENCE_PROMPTS) -> list[dict[str, Any]]:
    """``n`` preference pairs on scenes ``0..n-1`` of ``split`` (``config``: the tiny LLaVA's world by default,
    48 px, large objects; ``num_objects`` per scene; ``seed``), the ``kinds`` (:data:`PAIR_KINDS`) taking turns.

    Each pair: ``image`` ``(3, H, W)`` in [0, 1], ``scene``, ``prompt`` (one of ``prompts``, without ``<image>``),
    ``chosen`` (every object named, true of the scene), ``rejected`` (the same words with one edit of ``kind``,
    false of the scene), ``kind``, ``chosen_meaning`` and ``rejected_meaning`` (the :mod:`~vlm_primer.world.language`
    meanings, for :func:`~vlm_primer.world.holds`) and ``index``."""
    from vlm_primer.world import SceneDataset, render

    check_int(n, "n", hint="the number of pairs")
    if isinstance(kinds, str) or not kinds or any(k not in PAIR_KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty list drawn from {PAIR_KINDS}, got {kinds!r}")
    if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError(f"prompts must be a non-empty list of non-empty strings, got {prompts!r}")
    cfg = config if config is not None else WorldConfig(image_size=48, sizes=("large",))
    scenes = SceneDataset(split, n, cfg, seed, num_objects)
    out = []
    for i in range(n):
        scene, rng = scenes.scene(i)
        kind = kinds[i % len(kinds)]
        nps = tuple(NP(o.shape, o.color, o.size) for o in scene.objects)
        chosen = Exists(nps)
        edits = []
        for j, new in _edits(scene, nps, kind, cfg):
            m = Exists(nps[:j] + (new,) + nps[j + 1:])
            if not holds(m, scene, cfg.margin):
                edits.append(m)
        if not edits:
            raise ValueError(f"scene {i} admits no {kind!r} edit in this world ({len(cfg.shapes)} shapes, "
                             f"{len(cfg.colors)} colours): widen the vocabulary or drop the kind")
        rejected = edits[int(rng.integers(len(edits)))]
        prompt = prompts[int(rng.integers(len(prompts)))]
        template, style = int(rng.integers(4)), int(rng.integers(2**31))
        out.append({"image": render(scene, cfg.image_size), "scene": scene, "prompt": prompt,
                    "chosen": realize(chosen, style, template), "rejected": realize(rejected, style, template),
                    "kind": kind, "chosen_meaning": chosen, "rejected_meaning": rejected, "index": i})
    return out


# --- batches and steps --------------------------------------------------------------------------------------------

def dpo_collate(image_tokens: int, *, tokenizer: Any = None, transform: Callable[[torch.Tensor], torch.Tensor] | None
                = None, image_id: int = IMAGE_TOKEN_ID, pad_id: int = 0
                ) -> Callable[[list[dict[str, Any]]], dict[str, dict[str, torch.Tensor]]]:
    """A collate function: pairs (:func:`preference_pairs`' items: ``image``, ``prompt``, ``chosen``, ``rejected``)
    -> ``{"chosen": batch, "rejected": batch}``, two :func:`~vlm_primer.backbones.data.llava_collate` batches padded
    to the same width (so they can run as one). Each row is the chat ``<|user|><image>prompt<|end|><|assistant|>
    answer<|end|>`` with ``<image>`` expanded into ``image_tokens`` placeholders (the model's ``tokens_per_image``);
    the answer and its ``<|end|>`` are the only labels. ``transform``: the vision tower's (``zoo.preprocess``)."""
    from vlm_primer.backbones.data import image_turn, llava_collate
    from vlm_primer.text import Tokenizer, encode_chat

    check_int(image_tokens, "image_tokens", hint="the model's tokens_per_image")
    tok = tokenizer or Tokenizer.load()
    pad = llava_collate(pad_id)

    def item(pair: dict[str, Any], answer: str) -> dict[str, Any]:
        ids, target = encode_chat(tok, image_turn(pair["prompt"], answer), add_bos=True)
        ids, target = expand_image_tokens(ids, image_id, image_tokens, target)
        image = pair["image"] if transform is None else transform(pair["image"])
        return {"input_ids": ids, "target": target, "image": image}

    def collate(pairs: list[dict[str, Any]]) -> dict[str, dict[str, torch.Tensor]]:
        if isinstance(pairs, dict) or not isinstance(pairs, Sequence) or len(pairs) == 0:
            raise ValueError("pairs must be a non-empty list of preference pairs")
        for i, p in enumerate(pairs):
            if not isinstance(p, dict) or not {"image", "prompt", "chosen", "rejected"} <= set(p):
                raise TypeError(f"pairs[{i}] must be a dict with image, prompt, chosen and rejected")
            if not all(isinstance(p[k], str) and p[k] for k in ("prompt", "chosen", "rejected")):
                raise TypeError(f"pairs[{i}]: prompt, chosen and rejected must be non-empty strings")
        both = pad([item(p, p["chosen"]) for p in pairs] + [item(p, p["rejected"]) for p in pairs])
        k = len(pairs)
        return {"chosen": {name: v[:k] for name, v in both.items()},
                "rejected": {name: v[k:] for name, v in both.items()}}

    return collate


def frozen_reference(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` in eval mode with no trainable parameter: DPO's reference ``π_ref``."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return copy.deepcopy(model).eval().requires_grad_(False)


def _pair_logps(model: Callable[..., Any], chosen: dict[str, Any], rejected: dict[str, Any]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of the chosen and the rejected rows: one forward when the two batches line up."""
    keys = set(chosen)
    if keys == set(rejected) and all(isinstance(chosen[k], torch.Tensor) and isinstance(rejected[k], torch.Tensor)
                                     and chosen[k].shape[1:] == rejected[k].shape[1:] for k in keys):
        logps = sequence_logprobs(model, {k: torch.cat([chosen[k], rejected[k]]) for k in keys})
        return logps[:len(chosen["labels"])], logps[len(chosen["labels"]):]
    return sequence_logprobs(model, chosen), sequence_logprobs(model, rejected)


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def dpo_step(policy: torch.nn.Module, reference: torch.nn.Module, batch: dict[str, dict[str, torch.Tensor]],
             beta: float = 0.1, *, label_smoothing: float = 0.0, loss_type: str = "sigmoid",
             optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """One DPO step on ``batch`` (:func:`dpo_collate`'s ``{"chosen", "rejected"}``): the policy's sequence
    log-probabilities with gradients, the reference's without (``torch.no_grad``; make it with
    :func:`frozen_reference`), and :func:`dpo_loss` (``beta``, ``label_smoothing``, ``loss_type``; ipo is divided by
    the response lengths). With ``optimizer``: zero the gradients, backpropagate the mean loss and step.

    Returns ``loss`` (the mean over pairs, with its graph unless the optimiser already used it), ``losses``,
    ``chosen_rewards``, ``rejected_rewards`` (per pair, detached), ``reward_accuracy`` (the share of pairs whose
    chosen reward is higher) and ``margin`` (the mean reward gap), both 0-dim tensors (``float()`` reads them; on a
    GPU, a synchronisation), and the policy's ``chosen_logps`` and ``rejected_logps`` (detached)."""
    if not isinstance(policy, torch.nn.Module) or not isinstance(reference, torch.nn.Module):
        raise TypeError("policy and reference must be torch.nn.Modules (the reference: frozen_reference(policy))")
    if reference is policy:
        raise ValueError("reference is the policy itself: DPO needs a frozen copy (frozen_reference(policy)), "
                         "which the updates do not move")
    if not isinstance(batch, dict) or set(batch) != {"chosen", "rejected"}:
        raise ValueError("batch must be dpo_collate's {'chosen': batch, 'rejected': batch}")
    device = next(policy.parameters()).device
    chosen, rejected = _to(batch["chosen"], device), _to(batch["rejected"], device)
    nc, nr = len(_check_batch(chosen, "batch['chosen']")), len(_check_batch(rejected, "batch['rejected']"))
    if nc != nr:
        raise ValueError(f"batch holds {nc} chosen and {nr} rejected answers: one of each per pair")
    lengths = {}
    if loss_type == "ipo":
        lengths = dict(chosen_lengths=response_lengths(chosen), rejected_lengths=response_lengths(rejected))
    pc, pr = _pair_logps(policy, chosen, rejected)
    with torch.no_grad():
        rc, rr = _pair_logps(reference, chosen, rejected)
    losses, chosen_rewards, rejected_rewards = dpo_loss(pc, pr, rc, rr, beta, label_smoothing, loss_type=loss_type,
                                                        **lengths)
    loss = losses.mean()
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return {"loss": loss, "losses": losses.detach(), "chosen_rewards": chosen_rewards,
            "rejected_rewards": rejected_rewards,
            "reward_accuracy": (chosen_rewards > rejected_rewards).float().mean(),
            "margin": (chosen_rewards - rejected_rewards).mean(),
            "chosen_logps": pc.detach(), "rejected_logps": pr.detach()}


@dataclasses.dataclass
class DPOOutput:
    loss: torch.Tensor
    reward_accuracy: torch.Tensor  # 0-dim, detached
    margin: torch.Tensor


class DPOModel(torch.nn.Module):
    """A policy and its frozen reference as one module whose ``forward(chosen, rejected)`` (:func:`dpo_collate`'s
    batch) returns the DPO loss: what the :class:`~vlm_primer.training.Trainer` trains in
    ``python -m vlm_primer.train dpo``. Only the policy's trainable parameters get gradients; the reference stays
    in eval mode whatever ``train()`` is called with. Chapter 06b (survey §3.5) explains it."""

    def __init__(self, policy: torch.nn.Module, beta: float = 0.1, *, loss_type: str = "sigmoid",
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not isinstance(policy, torch.nn.Module):
            raise TypeError(f"policy must be a torch.nn.Module, got {type(policy).__name__}")
        if loss_type not in DPO_LOSSES:
            raise ValueError(f"loss_type must be one of {DPO_LOSSES}, got {loss_type!r}")
        self.beta = _check_number(beta, "beta", 0.0, None, closed_low=False)
        self.label_smoothing = _check_number(label_smoothing, "label_smoothing", 0.0, 0.5, closed_low=True)
        self.loss_type = loss_type
        self.policy = policy
        self.reference = frozen_reference(policy)

    def train(self, mode: bool = True) -> "DPOModel":
        super().train(mode)
        self.reference.eval()
        return self

    def forward(self, chosen: dict[str, torch.Tensor], rejected: dict[str, torch.Tensor]) -> DPOOutput:
        out = dpo_step(self.policy, self.reference, {"chosen": chosen, "rejected": rejected}, self.beta,
                       label_smoothing=self.label_smoothing, loss_type=self.loss_type)
        return DPOOutput(out["loss"], out["reward_accuracy"], out["margin"])
