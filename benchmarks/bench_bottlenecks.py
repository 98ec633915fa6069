"""Chapter 05b's comparisons across seeds: the learned bottlenecks at an equal budget, and BLIP-2 without stage 1.

    python benchmarks/bench_bottlenecks.py --seeds 0 1 2 --jobs 2

A quality benchmark, not a speed one (the step time it records is a by-product). Every arm reads the zoo's
``clip-tiny-pairs`` tower and talks through ``lm-tiny``, **both frozen**, and trains for the same number of steps of
32 VQA conversations (the zoo recipes' 1,500); BLIP-2 and InstructBLIP first spend the same 600 steps of stage 1
(ITC, ITM and ITG on captions) that ``blip2-tiny`` does:

* ``LLaVA MLP``: chapter 05's connector, 64 image tokens;
* ``Q-Former``, ``perceiver``, ``Qwen resampler``: the learned-query connectors of :class:`~vlm_primer.backbones.Llava`
  with 16 queries each, reading the same patch features as the MLP (no stage 1);
* ``BLIP-2`` and ``BLIP-2, no stage 1`` (BLIP-2's Figure 5: what the representation-learning stage buys);
* ``InstructBLIP``: BLIP-2's stage 1, then the same steps with the question read by the Q-Former;
* ``InstructBLIP, question hidden``: its control, the same model, parameters and steps, but the Q-Former reads only
  the instruction's first token (``<bos>``) in training and at test: what the question itself buys;
* ``Flamingo``: perceiver and gated cross-attention (the text keeps one ``<image>`` marker per image);
* ``Flamingo, no dense layers``: its control, without the gated feed-forward layers Flamingo adds inside the LM
  (they act on every token, image or not): what the cross-attention alone buys.

Each run records the exact-match accuracy on the zoo cards' 1,200 held-out questions, its trainable parameters, the
positions each image takes in the LM's input and the tokens it offers the LM, and the median step time. It writes
``benchmarks/results/bottlenecks.json`` (read by notebook 05b); ``--steps N`` makes a smoke run, printed, not saved.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from common import seed_parser, write_seed_runs

OUT = Path(__file__).resolve().parent / "results" / "bottlenecks.json"
ARMS = ("LLaVA MLP", "Q-Former", "perceiver", "Qwen resampler", "BLIP-2", "BLIP-2, no stage 1", "InstructBLIP",
        "InstructBLIP, question hidden", "Flamingo", "Flamingo, no dense layers")
QUERIES = 16
CONNECTORS = {"LLaVA MLP": "mlp", "Q-Former": "qformer", "perceiver": "perceiver", "Qwen resampler": "resampler"}


def question_hidden(model):
    """The InstructBLIP control: the same model, but its Q-Former reads only each instruction's first token
    (``<bos>``), in training and at test, so the queries no longer know the question."""
    from vlm_primer.backbones import InstructBlip

    class QuestionHidden(InstructBlip):
        def image_features(self, pixel_values, qformer_input_ids=None, qformer_attention_mask=None):
            if qformer_input_ids is None:
                raise ValueError("pass qformer_input_ids (their first token is read)")
            bos = qformer_input_ids[:, :1]
            return super().image_features(pixel_values, bos, torch.ones_like(bos))

    model.__class__ = QuestionHidden
    return model


def without_dense_layers(model):
    """The Flamingo control: every gated layer keeps its cross-attention and loses its gated feed-forward
    branch (its MLP, norm and gate are removed, so it adds exactly nothing and trains nothing)."""
    from torch import nn

    class Nothing(nn.Module):
        def forward(self, x):
            return torch.zeros_like(x)

    for layer in model.gated_layers:
        shape = layer.alpha_mlp.shape
        del layer.alpha_mlp
        layer.register_buffer("alpha_mlp", torch.zeros(shape))
        layer.ln_mlp, layer.mlp = nn.Identity(), Nothing()
    return model


def build(arm: str, seed: int, stage1_steps: int):
    """The arm's model (tower and LM from the zoo, both frozen), after stage 1 where the arm has one; the
    ``Flamingo`` arm is built and trained by the zoo recipe's own function, its control built here the same way."""
    from vlm_primer import zoo
    from vlm_primer.backbones import (Blip2, Flamingo, FlamingoConfig, InstructBlip, InstructBlipConfig, Llava,
                                      QFormerConfig)
    from vlm_primer.utils import seed_everything
    from vlm_primer.zoo import bottleneck_recipes as R

    tower, lm = zoo.load("clip-tiny-pairs").vision, zoo.load("lm-tiny")
    seed_everything(seed)
    if arm == "Flamingo, no dense layers":  # as R.train_flamingo builds it, then the dense branches removed
        new_layers = {k: v for k, v in FlamingoConfig.PRESETS["tiny"].items() if k not in ("vision", "text")}
        return without_dense_layers(Flamingo.from_parts(tower, lm, context_length=256, **new_layers))
    if arm in CONNECTORS:
        extra = {} if CONNECTORS[arm] == "mlp" else {"num_queries": QUERIES}
        return Llava.from_parts(tower, lm, context_length=256, connector=CONNECTORS[arm], **extra)
    # as R.train_blip2 builds blip2-tiny: seed 0 of the BLIP-2 arm is the zoo model
    model = Blip2.from_parts(tower, lm, context_length=256,
                             qformer=QFormerConfig.from_preset("tiny", vocab_size=lm.cfg.vocab_size))
    if arm != "BLIP-2, no stage 1":
        R.train_blip2_stage1(model, stage1_steps, seed=seed)
    if arm.startswith("InstructBLIP"):
        instruct = InstructBlip(InstructBlipConfig(**model.cfg.to_dict()))
        instruct.load_state_dict(model.state_dict())
        return question_hidden(instruct) if arm == "InstructBLIP, question hidden" else instruct
    return model


def run(job: tuple[str, int, int | None]) -> dict:
    import torch

    torch.set_num_threads(1)
    from vlm_primer.backbones.data import InstructionChatDataset
    from vlm_primer.backbones.stages import TINY_OBJECTS, TINY_WORLD, train_stage
    from vlm_primer.world import WorldConfig
    from vlm_primer.zoo import bottleneck_recipes as R
    from vlm_primer.zoo import preprocess

    arm, seed, steps = job
    stage2, stage1 = steps or R.STAGE2_STEPS, steps or R.STAGE1_STEPS
    transform = preprocess("clip-tiny-pairs")
    start = time.perf_counter()
    if arm == "Flamingo":
        model = R.train_flamingo(stage2, seed=seed)
        history = None
    else:
        model = build(arm, seed, stage1)
        if arm.startswith("InstructBLIP"):
            data = InstructionChatDataset("vqa", size=R.TRAIN_SIZE, seed=seed + 1, image_tokens=model.tokens_per_image,
                                          transform=transform, config=WorldConfig(**TINY_WORLD),
                                          num_objects=TINY_OBJECTS, image_id=model.cfg.image_token_id)
        else:
            data = R._vqa(model, transform, seed)
        history = train_stage(model, 2, data, stage2, lr=R.LR, train_language=False, seed=seed)
    seconds = time.perf_counter() - start
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    offered = getattr(model.cfg, "visual_tokens", None) or model.tokens_per_image
    out = {"arm": arm, "seed": seed, "accuracy": R.measure(arm, model), "trainable_params": trainable,
           "input_positions_per_image": model.tokens_per_image, "visual_tokens_per_image": offered,
           "seconds": round(seconds, 1), "final_loss": None if history is None else round(history[-1]["loss"], 4)}
    print(f"  {arm:>20} seed {seed}: {out['accuracy']['vqa_all']:.3f} ({trainable:,} trainable, "
          f"{offered} visual tokens) in {out['seconds']} s", flush=True)
    return out


def main() -> None:
    ap = seed_parser(__doc__)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--steps", type=int, default=None, help="a smoke run of this many steps (printed, not saved)")
    args = ap.parse_args()
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(run, [(a, s, args.steps) for s in args.seeds for a in args.arms]))
    if args.steps is not None:
        return
    from vlm_primer.zoo import bottleneck_recipes as R

    write_seed_runs(OUT, "bench_bottlenecks.py", args.seeds, args.jobs, start, runs,
                    steps={"stage1": R.STAGE1_STEPS, "stage2": R.STAGE2_STEPS, "batch": 32}, queries=QUERIES)


if __name__ == "__main__":
    main()
