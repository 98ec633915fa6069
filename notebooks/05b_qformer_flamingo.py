# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (vlm-primer)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05b · Pretrained backbones II: Q-Former and cross-attention (BLIP-2, InstructBLIP, Frozen, MiniGPT-4, Flamingo, Qwen-VL)
#
# Chapter 05 joined a frozen vision tower to a language model with a small MLP and let the LM read every
# patch of the image as a token. This chapter is about the other way: a **learned bottleneck**. A fixed
# set of learned queries reads the frozen image features by cross-attention and hands the frozen LM a
# short summary: BLIP-2's {term}`Q-Former` {cite:p}`li2023blip2`, Flamingo's {term}`perceiver resampler`
# with {term}`gated cross-attention` inside the LM {cite:p}`alayrac2022flamingo`, and Qwen-VL's one-layer
# resampler {cite:p}`bai2023qwenvl`. Frozen {cite:p}`tsimpoukelli2021frozen` and MiniGPT-4
# {cite:p}`zhu2023minigpt4` are the simplest points on the same line (survey §2.5
# {cite:p}`bordes2024introduction`). Everything here is built from the zoo's frozen `clip-tiny-pairs` tower and
# the frozen `lm-tiny`, so the models differ only in the bottleneck and how it is trained.
#
# **After this chapter you can**
#
# * place linear, MLP, Q-Former, perceiver, Qwen-VL resampler and gated cross-attention on one family tree,
#   and count each one's parameters and the visual tokens it costs the LM;
# * draw the Q-Former's three attention masks (ITC, ITM, ITG) and say why each objective needs its own;
# * run BLIP-2's stage 1 and stage 2, and read the result against a blind prior and a blank-image control;
# * say what InstructBLIP changes (the question reaches the queries) and measure what it buys;
# * show that Flamingo's gates at 0 leave the frozen LM exactly unchanged, and read its media mask;
# * test few-shot prompting with interleaved images, and show with a control what the training data must hold;
# * compare the bottlenecks at an equal budget across seeds, read the trade-off table honestly, and use two control
#   arms to tell what the question buys from what extra parameters buy.

# %%
import json
import math
import tempfile
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from einops import rearrange
from IPython.display import display

from vlm_primer import get_scale, get_seed, seed_everything, zoo
from vlm_primer.backbones import (Blip2, Blip2Stage1, Flamingo, FlamingoConfig, GatedCrossAttentionLayer, LlavaConfig,
                                  QFormer, QFormerConfig, build_connector, media_mask, qformer_mask)
from vlm_primer.backbones.blip2 import itg_captions
from vlm_primer.backbones.data import caption_pairs_collate
from vlm_primer.backbones.fewshot import few_shot_ids, few_shot_vqa
from vlm_primer.backbones.inference import generate_replies
from vlm_primer.backbones.resamplers import PerceiverResampler, QwenResampler
from vlm_primer.backbones.stages import TINY_OBJECTS, TINY_WORLD, train_stage, vqa_eval, vqa_set
from vlm_primer.evaluation import seed_verdict
from vlm_primer.evaluation.judge import answer_facts
from vlm_primer.text import Tokenizer
from vlm_primer.training import ResumableLoader
from vlm_primer.world import ShapesCaptionDataset, WorldConfig, accuracy_by_type, blind_prior, boxes
from vlm_primer.zoo import bottleneck_recipes

seed_everything(0)
SCALE = get_scale()
SEED = get_seed()  # the seed of the live runs (VLM_PRIMER_SEED); the zoo models are seed 0
T_START = time.time()
tok = Tokenizer.load()
tower, lm = zoo.load("clip-tiny-pairs").vision, zoo.load("lm-tiny")
transform = zoo.preprocess("clip-tiny-pairs")
print(f"VLM_PRIMER_SCALE = {SCALE!r}; frozen parts: tower {sum(p.numel() for p in tower.parameters()):,} "
      f"and LM {sum(p.numel() for p in lm.parameters()):,} parameters")

# %% [markdown]
# ## The connector family tree
#
# Every model of this chapter is *tower → something → LM*; they differ in what the something is, how many
# tokens it hands on, and where those enter the LM. The architecture guide among the book's sources lists
# the connectors side by side; here they are as one tree:
#
# * **token-wise maps** keep one LM token per image patch: LLaVA-1.0's **linear** layer, LLaVA-1.5's
#   **MLP** (chapter 05); Frozen's visual prefix is a linear map too (of a pooled feature, to 2 tokens);
# * **learned-query bottlenecks** turn any number of patches into a fixed number of tokens by
#   cross-attention: BLIP-2's **Q-Former** (a BERT whose queries cross-attend to the image every other
#   layer), Flamingo's **perceiver resampler** (latents attend to $[\text{features}; \text{latents}]$),
#   Qwen-VL's **one cross-attention layer** with 2-D positions;
# * **where the tokens go**: LLaVA, BLIP-2, MiniGPT-4 and Qwen-VL put them *into the input sequence* (the
#   LM reads them as a soft prompt); Flamingo leaves the input as text and inserts **gated cross-attention**
#   layers *between the LM's blocks*, so each image costs one `<image>` marker in the sequence.
#
# The parameter counts below are computed from the modules: at `tiny` on the real zoo parts, and at the papers'
# shapes on PyTorch's `meta` device (shapes without memory, so a 7B-wide layer costs nothing to count).

# %%
def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


blip2, instructblip, flamingo = (zoo.load(n) for n in ("blip2-tiny", "instructblip-tiny", "flamingo-tiny"))
queries_side = count(blip2.qformer) - sum(p.numel() for p in blip2.qformer.text_parameters())
patches = tower.cfg.num_patches                    # LLaVA's maps hand on one token per patch
qwen_tiny = build_connector("resampler", 64, 64, num_queries=16)
tiny_tree = {  # name: (trainable parameters, visual tokens per image, LM input positions per image)
    "linear (LLaVA-1.0, Frozen)": (count(build_connector("linear", 64, 64)), patches, patches),
    "MLP (LLaVA-1.5)": (count(build_connector("mlp", 64, 64)), patches, patches),
    "Q-Former + linear (BLIP-2)": (queries_side + count(blip2.language_projection), blip2.tokens_per_image,
                                   blip2.tokens_per_image),
    "perceiver + gated x-attn (Flamingo)": (count(flamingo.perceiver) + sum(map(count, flamingo.gated_layers)),
                                            flamingo.cfg.visual_tokens, flamingo.tokens_per_image),
    "one-layer resampler (Qwen-VL)": (count(qwen_tiny), len(qwen_tiny.bottleneck.query),
                                      len(qwen_tiny.bottleneck.query)),
}
paper_llava, paper_qformer = LlavaConfig.from_preset("base"), QFormerConfig.from_preset("base")
with torch.device("meta"):  # the papers' shapes, counted without allocating
    paper_flamingo = FlamingoConfig.from_preset("base")
    paper_qwen = QwenResampler(1664, 4096, 256)
    paper_tree = {
        "linear (LLaVA-1.0, Frozen)": (count(build_connector("linear", 1024, 4096)), paper_llava.tokens_per_image,
                                       paper_llava.tokens_per_image),
        "MLP (LLaVA-1.5)": (count(build_connector("mlp", 1024, 4096)), paper_llava.tokens_per_image,
                            paper_llava.tokens_per_image),
        "Q-Former + linear (BLIP-2)": (count(QFormer(paper_qformer))  # into OPT-2.7B's 2,560
                                       + count(torch.nn.Linear(768, 2560)), paper_qformer.num_queries,
                                       paper_qformer.num_queries),
        "perceiver + gated x-attn (Flamingo)": (
            count(PerceiverResampler(1280, 6, 64, 16, 96))
            + paper_flamingo.text.depth // paper_flamingo.cross_every * count(GatedCrossAttentionLayer(paper_flamingo)),
            paper_flamingo.visual_tokens, flamingo.tokens_per_image),  # one <image> marker, whatever the shapes
        "one-layer resampler (Qwen-VL)": (count(paper_qwen), len(paper_qwen.query), len(paper_qwen.query)),
    }
print(f"{'':>35} | {'at tiny':^22} | {'at the papers shapes':^22}\n{'connector':>35} | "
      + " | ".join([f"{'params':>10} {'tok.':>5} {'pos.':>5}"] * 2))
for name in tiny_tree:
    (tp, tt, tpos), (pp, pt, ppos) = tiny_tree[name], paper_tree[name]
    print(f"{name:>35} | {tp:>10,} {tt:>5} {tpos:>5} | {pp / 1e6:>8.1f} M {pt:>5} {ppos:>5}")
fig, ax = plt.subplots(figsize=(9, 3.6))
for k, (name, (pp, pt, ppos)) in enumerate(paper_tree.items()):
    ax.scatter(pp, ppos, s=60, color=f"C{k}", label=name)
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("trainable parameters of the bridge (papers' shapes)")
ax.set_ylabel("LM input positions per image")
ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
ax.set_title("the connector family tree: what each bridge costs in parameters and in the LM's sequence", fontsize=9)
plt.tight_layout()
plt.show()
qformer_paper = paper_tree["Q-Former + linear (BLIP-2)"][0] - (768 * 2560 + 2560)
qwen_paper = paper_tree["one-layer resampler (Qwen-VL)"][0]
qwen_layer = qwen_paper - count(paper_qwen.ln_post) - count(paper_qwen.proj)  # the cross-attention layer alone
print(f"BLIP-2's Q-Former at BERT-base shapes: {qformer_paper / 1e6:.0f} M parameters, "
      f"{qformer_paper / 188e6 - 1:+.1%} from the paper's 188 M (the table's row adds the 768 -> 2,560 projection)\n"
      f"Qwen-VL's resampler: {qwen_layer / 1e9:.3f} B (the paper's table: 0.08 B), {qwen_paper / 1e9:.3f} B with "
      f"the final LayerNorm and projection the released code applies after it")
assert abs(qformer_paper / 188e6 - 1) < 0.02 and round(qformer_paper / 1e6) == 186, "186 M: 188 M within 2 %"
assert round(qwen_layer / 1e9, 2) == 0.08 and round(qwen_paper / 1e9, 2) == 0.09, "0.08 B, and 0.09 B in all"
positions = {name: (tokens, pos) for name, (_, tokens, pos) in paper_tree.items()}
assert (positions["MLP (LLaVA-1.5)"], positions["Q-Former + linear (BLIP-2)"],
        positions["one-layer resampler (Qwen-VL)"], positions["perceiver + gated x-attn (Flamingo)"]) \
    == ((576, 576), (32, 32), (256, 256), (64, 1)), \
    "the tokens and positions the text below quotes, read from the configs and modules"

# %% [markdown]
# (tok.: visual tokens per image; pos.: positions each image takes in the LM's input.) The bottlenecks
# cost **more parameters** than LLaVA's MLP but **far fewer LM
# positions**: BLIP-2 hands the LM 32 tokens where LLaVA-1.5 hands it 576, and Flamingo only one marker per
# image (its 64 visual tokens are read by cross-attention, not carried in the sequence). That is the
# trade: the LM's cost per image falls, and something has to learn what to keep. The Q-Former at
# BERT-base shapes has 186 M parameters, within 2 % of the 188 M BLIP-2 reports (asserted; the table's 188.0 M
# row also counts the linear projection into the LM); our Qwen-VL resampler, laid out as in Qwen-VL's released
# code, has the paper's 0.08 B in its cross-attention layer and 0.09 B with the final LayerNorm and 4,096 × 4,096
# projection that the code applies after it (the row above counts both; asserted).
#
# ## The Q-Former
#
# BLIP-2's Q-Former is a BERT-sized transformer over the sequence $[\,q_1 \dots q_{32};\ w_1 \dots w_T\,]$:
# 32 learned **queries** (768-wide, 24.6 K parameters, the only genuinely new input) followed by text.
# Every layer self-attends over the whole sequence; every other layer also lets the **query positions
# only** cross-attend to the frozen image features $Z = f_v(x) \in \mathbb{R}^{257 \times 1408}$; queries
# and text have separate feed-forward weights. So the queries can read the image, the text cannot, and
# all traffic between image and text passes through the queries.
#
# Who sees whom in the self-attention is the whole design. Stage 1 trains three objectives on the same
# (image, caption) pair, each under its own mask:
#
# * **ITC** (image–text contrastive) uses the **uni-modal** mask: queries see queries, text sees text. The
#   queries' outputs $z_1 \dots z_{32}$ and the text's first token $t$ are two independent embeddings;
#   the score is the best query's cosine, $s(x, y) = \max_i \cos(z_i, t)$, and InfoNCE (chapter 02) does
#   the rest;
# * **ITM** (image–text matching) uses the **bi-directional** mask: everything sees everything, and a
#   2-way head on the mean query output decides match / no match, on hard negatives drawn from the ITC
#   scores;
# * **ITG** (image-grounded text generation) uses the **multimodal causal** mask: queries see queries (not
#   the text, or the caption would leak into them), text sees all queries and the text before it. The
#   caption must be generated from what the queries extracted.
#
# Drawn from the package's `qformer_mask` for 4 queries and a 5-token caption (the last position padding),
# each with the paper's rule checked entry by entry:

# %%
NQ, TEXT = 4, torch.tensor([[1, 1, 1, 1, 0]])  # 4 queries; a caption of 4 tokens and one pad
masks = {kind: qformer_mask(kind, NQ, TEXT)[0] for kind in ("unimodal", "bidirectional", "multimodal_causal")}
titles = {"unimodal": "ITC: uni-modal", "bidirectional": "ITM: bi-directional",
          "multimodal_causal": "ITG: multimodal causal"}
labels_ = [f"q{i}" for i in range(NQ)] + [f"w{i}" for i in range(4)] + ["pad"]
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
for ax, (kind, m) in zip(axes, masks.items()):
    ax.imshow(m, cmap="Blues", vmin=0, vmax=1.3)
    ax.set_xticks(range(len(labels_)), labels_, fontsize=7)
    ax.set_yticks(range(len(labels_)), labels_, fontsize=7)
    ax.axhline(NQ - 0.5, color="C3", lw=1)
    ax.axvline(NQ - 0.5, color="C3", lw=1)
    ax.set_xlabel("may attend to (key)")
    ax.set_title(titles[kind], fontsize=10)
axes[0].set_ylabel("position (query)")
fig.suptitle("the Q-Former's three self-attention masks (blue: allowed); queries left/top of the red lines")
plt.tight_layout()
plt.show()

is_q = torch.arange(NQ + 5) < NQ
real = torch.cat([torch.ones(NQ, dtype=torch.bool), TEXT[0].bool()])
for i in range(NQ + 5):
    for j in range(NQ + 5):
        rule = {"unimodal": is_q[i] == is_q[j],                                   # no crossing between the two
                "bidirectional": True,                                            # everything sees everything
                "multimodal_causal": bool(is_q[j]) or (not is_q[i] and j <= i)}   # queries alone; text: queries + past
        for kind, allowed in rule.items():
            assert bool(masks[kind][i, j]) == (bool(allowed) and bool(real[j])), (kind, i, j)
print("each mask is the paper's rule at every entry; nobody ever attends to padding")

# %% [markdown]
# ## Stage 1: teaching the queries to read the image
#
# BLIP-2's first stage trains the Q-Former alone against the frozen image encoder on image–caption pairs,
# with the three losses summed (`Blip2Stage1`). Its point is to make the queries extract the visual
# information the text needs *before* any LLM is attached. A short live run from fresh queries, logging each
# loss:

# %%
STAGE1_LIVE = {"tiny": 120, "small": 600, "base": 600}[SCALE]
seed_everything(SEED)
live = Blip2.from_parts(tower, lm, context_length=256, qformer=QFormerConfig.from_preset("tiny", vocab_size=814))
stage1 = Blip2Stage1(live.qformer, vision_tower=live.vision_tower)
captions = ShapesCaptionDataset("train", 20_000, WorldConfig(**TINY_WORLD), seed=SEED, num_objects=TINY_OBJECTS,
                                statements=False, num_paraphrases=1, transform=transform)
print("captions like:", [captions[i]["caption"] for i in range(3)])
loader = iter(ResumableLoader(captions, 32, collate_fn=caption_pairs_collate(), shuffle=True, seed=SEED))
optimizer = torch.optim.AdamW([p for p in stage1.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.05)
stage1_log = []
t0 = time.time()
for step in range(STAGE1_LIVE):
    out = stage1(**next(loader))
    optimizer.zero_grad()
    out["loss"].backward()
    optimizer.step()
    stage1_log.append({k: float(out[k]) for k in ("itc", "itm", "itg")})
fig, axes = plt.subplots(1, 3, figsize=(12, 2.8))
chance = {"itc": math.log(32), "itm": -(math.log(1 / 3) / 3 + 2 * math.log(2 / 3) / 3), "itg": None}
for ax, key in zip(axes, ("itc", "itm", "itg")):
    ax.plot([r[key] for r in stage1_log])
    if chance[key]:
        ax.axhline(chance[key], color="grey", ls="--", label="knowing nothing")
        ax.legend(fontsize=7)
    ax.set_xlabel("step")
    ax.set_title(key.upper(), fontsize=10)
fig.suptitle(f"stage 1 live: the three losses over {STAGE1_LIVE} steps of 32 captions")
plt.tight_layout()
plt.show()
first, last = (np.mean([r["itg"] for r in stage1_log[s]]) for s in (slice(0, 10), slice(-10, None)))
print(f"{STAGE1_LIVE} steps in {time.time() - t0:.0f} s; ITG {first:.2f} -> {last:.2f}; "
      f"ITC {stage1_log[-1]['itc']:.2f} (ln 32 = {math.log(32):.2f}); ITM {stage1_log[-1]['itm']:.3f}")
assert last < first / 3, "ITG should fall fast: the queries and text learn the captions' language"

# %% [markdown]
# The generative loss falls at once; ITC and ITM sit at the level of knowing nothing (ITC at $\ln 32$,
# the loss of a uniform guess among 32 captions; ITM at the entropy of one match in three) for all the steps of
# this live run (the last values printed), so a short run shows little of them; the longer run below finds the
# signal. The zoo's
# `qformer-tiny` trained the same three losses for 600 steps (with a warm-up and a decaying learning rate; its
# card records the command), and is exactly the Q-Former `blip2-tiny` starts its stage 2 from. Its ITC scores
# alone make a zero-shot classifier (the 48 colour-shape
# names, chapter 02's prompt ensemble, the best query's cosine), which tells whether the queries learned to
# read the image. The **control** is the same test on fresh queries, which must sit at chance:

# %%
qformer_zoo = zoo.load("qformer-tiny")
fresh = Blip2.from_parts(tower, lm, context_length=256,
                         qformer=QFormerConfig.from_preset("tiny", vocab_size=814)).qformer
itc_acc = {"fresh queries (control)": bottleneck_recipes.itc_zero_shot(fresh),
           f"live run ({STAGE1_LIVE} steps)": bottleneck_recipes.itc_zero_shot(live.qformer),
           "qformer-tiny (600 steps)": bottleneck_recipes.itc_zero_shot(qformer_zoo.qformer),
           "blip2-tiny's Q-Former, after stage 2": bottleneck_recipes.itc_zero_shot(blip2.qformer)}
print(f"qformer-tiny: `{zoo.card('qformer-tiny')['command']}`")
for name, acc in itc_acc.items():
    print(f"{name:>38}: zero-shot top-1 {acc:6.1%}   (chance {1 / 48:.1%})")
assert itc_acc["fresh queries (control)"] < 0.08 and itc_acc["qformer-tiny (600 steps)"] >= 0.3
assert itc_acc["blip2-tiny's Q-Former, after stage 2"] < 0.15

# %% [markdown]
# ITG makes the same point in words. The stage-1 model generates a caption from its queries alone
# (`itg_captions`: greedy decoding under the multimodal causal mask), and the judge's fact reader of chapter 05
# checks whether it names the scene's object, colour and shape. The **control** gives the same model a blank
# image: a captioner that ignores the picture can only be right by luck (1 in 48 here):

# %%
singles = ShapesCaptionDataset("test", 240, WorldConfig(**TINY_WORLD), num_objects=1, statements=False)
single_items = [singles[i] for i in range(len(singles))]  # images in [0, 1], to show; the tower reads them normalised
with torch.no_grad():
    single_feats = tower.eval()(torch.stack([transform(it["image"]) for it in single_items])).last_hidden_state
    blank_feats = tower(torch.zeros(len(single_items), 3, 48, 48)).last_hidden_state


def captions_of(model, image_feats) -> list[str]:
    ids = itg_captions(model, image_feats, tok.bos_id, tok.eos_id).tolist()
    return [tok.decode(row[:row.index(tok.eos_id)] if tok.eos_id in row else row) for row in ids]


def names_object(captions) -> float:
    return float(np.mean([("object", *it["label"].split()) in answer_facts(c)
                          for it, c in zip(single_items, captions)]))


caption_runs = {f"live run ({STAGE1_LIVE} steps)": captions_of(stage1, single_feats),
                "qformer-tiny, blank image (control)": captions_of(qformer_zoo, blank_feats),
                "qformer-tiny (600 steps)": captions_of(qformer_zoo, single_feats)}
caption_match = {name: names_object(c) for name, c in caption_runs.items()}
for name, c in caption_runs.items():
    print(f"{name:>36}: names the object in {caption_match[name]:6.1%}; {len(set(c))} different captions")
fig, axes = plt.subplots(1, 5, figsize=(12, 2.6))
for k, ax in enumerate(axes):
    ax.imshow(single_items[k]["image"].permute(1, 2, 0))
    ax.set_title(caption_runs["qformer-tiny (600 steps)"][k].replace(" a ", "\na ", 1), fontsize=8)
    ax.set_axis_off()
fig.suptitle("qformer-tiny's ITG captions of held-out scenes (from its 8 queries alone)", fontsize=9)
plt.tight_layout()
plt.show()
assert caption_match["qformer-tiny, blank image (control)"] < 0.05 and len(set(caption_runs[
    "qformer-tiny, blank image (control)"])) == 1, "a blank image gets one caption, right only by luck"
assert caption_match["qformer-tiny (600 steps)"] > caption_match["qformer-tiny, blank image (control)"]
assert len(set(caption_runs["qformer-tiny (600 steps)"])) < 20, "under 20 distinct captions for 240 scenes"

# %% [markdown]
# An honest weak result. The captions are fluent (the ITG loss fell fastest of the three) and depend on the
# image only a little: fewer than 20 distinct captions (counted above) cover all 240 scenes, and they name the object
# only a little more often than the blank-image control, which writes one caption for everything. In 600 steps
# our 2-layer Q-Former learned the *language* of captions much faster than what in each picture to say; the
# grounding it did learn shows in ITC (above) and in what stage 2 makes of it (below). BLIP-2's captions come
# from its stage 2, where a large LLM writes from the queries, after a stage 1 on 129 M images.
#
# ## Stage 2: the queries become a soft prompt
#
# Stage 2 attaches the frozen LLM. The queries' outputs go through one linear layer into the LM's
# embedding width and are spliced into the input where `<image>` stood: a **soft visual prompt** of 32
# tokens in BLIP-2 (8 here), whatever the image's size. The tower and the LM stay frozen; the Q-Former
# (its query side) and the projection learn, on the next-token loss of the text after the prompt:
#
# $$\mathcal{L} = -\sum_t \log p_{\text{LM}}\big(y_t \mid W\,Q_\theta(Z),\ y_{<t}\big).$$
#
# BLIP-2's stage 2 trains on captions and leaves questions to the frozen LLM, asked zero-shot through a
# prompt: OPT, a plain pretrained decoder, or FlanT5, an instruction-tuned one. `lm-tiny` has never answered a
# question in one word, so ours trains stage 2 on short VQA answers (`vlm_primer.zoo.bottleneck_recipes`' docstring
# gives the reason: one soft prompt for captions and answers alike scored 33.8 % against 45.9 %, one run each, so
# a hint rather than a verdict). A short live run from `qformer-tiny`:

# %%
STAGE2_LIVE = {"tiny": 150, "small": 1500, "base": 1500}[SCALE]
live.qformer.load_state_dict(qformer_zoo.qformer.state_dict())
from vlm_primer.backbones.stages import stage_data  # noqa: E402

t0 = time.time()
n_trainable = live.set_stage(2)
hist2 = train_stage(live, 2, stage_data("vqa", live, transform, seed=SEED), STAGE2_LIVE, lr=1e-3,
                    train_language=False, seed=SEED, progress=True)
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.plot([h["step"] for h in hist2], [h["loss"] for h in hist2])
ax.set_xlabel("step")
ax.set_ylabel("answer-token loss")
ax.set_title(f"stage 2 live: {n_trainable:,} trainable parameters, tower and LM frozen", fontsize=10)
plt.show()
print(f"{STAGE2_LIVE} steps in {time.time() - t0:.0f} s; trainable: the queries' side of the Q-Former and the "
      f"projection ({n_trainable:,} of {count(live):,} parameters)")
assert hist2[-1]["loss"] < hist2[0]["loss"] / 2

# %% [markdown]
# ### What BLIP-2 learned, against two controls
#
# `blip2-tiny` ran the same two stages for 600 + 1,500 steps. As in chapter 05, its VQA accuracy on 1,200
# held-out questions is read beside the {term}`blind baseline` (the most frequent training answer for each
# question text) and beside the model itself with a **blank image**:

# %%
test_qs = vqa_set(1200)
train_qs = vqa_set(3000, split="train")
prior = blind_prior([train_qs.question(i) for i in range(len(train_qs))])
questions = [test_qs.question(i) for i in range(len(test_qs))]
blind = accuracy_by_type(questions, [prior.predict(q) for q in questions])
blank_images = torch.zeros(len(test_qs), 3, 48, 48)  # normalised zeros: the mean image


def blank_accuracy(model) -> dict[str, float]:
    return accuracy_by_type(questions, generate_replies(model, [q.question for q in questions], blank_images,
                                                        max_new_tokens=4, batch_size=100))


acc = {"blind prior": blind, "blip2-tiny, blank image": blank_accuracy(blip2),
       f"live run (qformer-tiny + {STAGE2_LIVE} steps)": vqa_eval(live, transform, test_qs)["accuracy"],
       "blip2-tiny": vqa_eval(blip2, transform, test_qs)["accuracy"]}
types = [t for t in acc["blip2-tiny"] if t != "all"] + ["all"]
print(f"{'type':>11}" + "".join(f"{name.split(' (')[0]:>24}" for name in acc))
for t in types:
    print(f"{t:>11}" + "".join(f"{a[t]:>24.1%}" for a in acc.values()))
fig, ax = plt.subplots(figsize=(11, 3))
for k, (name, a) in enumerate(acc.items()):
    ax.bar(np.arange(len(types)) + (k - 1.5) * 0.2, [a[t] for t in types], 0.2, label=name)
ax.set_xticks(range(len(types)), types)
ax.set_ylabel("exact-match accuracy")
ax.set_title("BLIP-2 (frozen tower, frozen lm-tiny) on 1,200 held-out questions", fontsize=10)
ax.legend(fontsize=8, ncol=4)
plt.show()
b2 = acc["blip2-tiny"]
assert b2["all"] >= acc["blip2-tiny, blank image"]["all"] + 0.1, "the image must matter"
assert b2["color"] >= blind["color"] + 0.15 and b2["shape"] >= blind["shape"] + 0.05
assert abs(b2["all"] - blind["all"]) < 0.05, "overall, BLIP-2 here sits near the blind prior"

# %% [markdown]
# Read by type, the model uses the image: colour is far above the blind prior and shape somewhat above it (both
# printed), and a blank image drops the overall score by more than 10 points. (The live run's few steps are not
# enough: at `tiny` it scores about what `blip2-tiny` does with a blank image.) Overall it sits near the blind prior (within 5
# points, asserted), because it gives back on `attribute` and `count` what the prior gets from the question's
# words alone: eight soft tokens into a **frozen** LM that never saw a question answered in one word must
# carry both the picture and the answer format, and they carry the picture better than the format. A frozen
# LM is BLIP-2's point; at our scale it is also its limit (chapter 05's frozen-LM ablation fell below the
# blind prior for the same reason).
#
# ### Does stage 1 matter? BLIP-2's Figure 5, measured
#
# BLIP-2's Figure 5 trains stage 2 with and without stage 1: "without representation learning, both types
# of LLMs give substantially lower performance on zero-shot VQA", and OPT suffers catastrophic forgetting as
# training goes on {cite:p}`li2023blip2`. The same ablation here, at an equal stage-2 budget and three seeds,
# is too long for the notebook; `benchmarks/bench_bottlenecks.py` ran it (with the other comparisons of this
# chapter), and its results file is read here:

# %%
BENCH_FILE = zoo.ZOO_DIR.parents[1] / "benchmarks" / "results" / "bottlenecks.json"
bench = json.loads(BENCH_FILE.read_text())
print(f"{BENCH_FILE.name}: `{bench['command']}`\n  ({bench['date']}; {bench['machine']}; {bench['minutes']} min; "
      f"{bench['steps']['stage1']} stage-1 + {bench['steps']['stage2']} stage-2 steps of {bench['steps']['batch']})")
arms = list(dict.fromkeys(r["arm"] for r in bench["runs"]))
acc_of = {arm: [r["accuracy"]["vqa_all"] for r in bench["runs"] if r["arm"] == arm] for arm in arms}
run_of = {r["arm"]: r for r in bench["runs"]}
assert all(len(v) >= 3 for v in acc_of.values()), "every arm needs at least three seeds"
assert ((bench["steps"]["stage1"], bench["steps"]["stage2"], bench["steps"]["batch"])
        == (bottleneck_recipes.STAGE1_STEPS, bottleneck_recipes.STAGE2_STEPS, 32) == (600, 1500, 32)), \
    "the budget the text quotes, the zoo recipes'"
stage1_verdict = seed_verdict(acc_of["BLIP-2"], acc_of["BLIP-2, no stage 1"])
for arm in ("BLIP-2", "BLIP-2, no stage 1"):
    print(f"{arm:>20}: seeds {', '.join(f'{a:.1%}' for a in acc_of[arm])}")
print(f"with stage 1 vs without: {np.mean(acc_of['BLIP-2']) - np.mean(acc_of['BLIP-2, no stage 1']):+.1%} in the "
      f"mean, {stage1_verdict}")
assert stage1_verdict == "within the seed spread"

# %% [markdown]
# **No finding.** With and without stage 1 the three seeds overlap; the mean difference is smaller than the
# spread. This does not contradict the paper: its stage 1 ran on 129 M images, and the Q-Former it produced
# was a strong retrieval model; ours is a 2-layer Q-Former after 600 steps, and stage 2 (1,500 steps of
# VQA, which trains the same queries) can learn what stage 1 taught. The effect may need a scale the toy
# does not have; it is not visible here, and we say so.

# %% [markdown]
# ## InstructBLIP: let the question reach the queries
#
# BLIP-2's queries read the image before they know the question: the same 32 tokens serve every question
# about a picture. InstructBLIP {cite:p}`dai2023instructblip` feeds the **instruction into the Q-Former** as
# text beside the queries (bi-directional mask, so the queries see it), and only the queries go on to the LM.
# The queries become *instruction-aware*: asked about colour, they can extract colour. `instructblip-tiny` is
# `blip2-tiny`'s weights instruction-tuned for 1,500 more steps with the question read by the Q-Former too:

# %%
ib = vqa_eval(instructblip, transform, test_qs)["accuracy"]
print(f"{'type':>11}{'blind prior':>14}{'blip2-tiny':>14}{'instructblip':>14}")
for t in types:
    print(f"{t:>11}{blind[t]:>14.1%}{b2[t]:>14.1%}{ib[t]:>14.1%}")
ib_verdict = seed_verdict(acc_of["InstructBLIP"], acc_of["BLIP-2"])
print(f"bottlenecks.json, equal stage-2 budget, 3 seeds: InstructBLIP {min(acc_of['InstructBLIP']):.1%}–"
      f"{max(acc_of['InstructBLIP']):.1%} vs BLIP-2 {min(acc_of['BLIP-2']):.1%}–{max(acc_of['BLIP-2']):.1%}: "
      f"{ib_verdict}")
assert ib["all"] >= b2["all"] + 0.1 and ib_verdict == "higher"

# %% [markdown]
# A finding that holds at every seed: the same 8 queries, reading the question, answer far better. The
# benchmark's comparison is at an equal budget: its InstructBLIP arm runs the same 600 stage-1 steps as the
# BLIP-2 arm, then the same 1,500 stage-2 steps with the question read by the Q-Former (its `trainable_params`
# count includes the Q-Former's text embeddings, which now learn). The zoo pair in the table above is not
# equal: `instructblip-tiny` continues `blip2-tiny`'s weights for 1,500 more steps, twice BLIP-2's stage-2
# budget, so its gap over `blip2-tiny` mixes what the question buys with what the extra steps buy; the
# benchmark's verdict is the fair one. In the paper the gain comes with instruction tuning on 13 datasets, and
# its ablation removes the instruction from the Q-Former and loses accuracy on every held-out benchmark. Here the
# InstructBLIP arm also trains more parameters (the Q-Former's text embeddings), so the gap alone does not say
# that the question is the cause. The benchmark has the control that does: the same model, parameters and steps
# with the question hidden from the Q-Former (it reads only `<bos>`), read in §One comparison at equal budget below.
#
# ## What the queries look at
#
# Each query's cross-attention weights over the image tokens say where it looks (`QFormer.query_attention`,
# the first cross-attention layer, averaged over heads). Below, `blip2-tiny`'s queries on a held-out scene;
# pick a query and a scene. The image tokens are the tower's CLS token and an 8 × 8 grid of 6-pixel patches:

# %%
scenes = vqa_set(40, seed=3)
pix = torch.stack([transform(scenes[i]["image"]) for i in range(len(scenes))])
with torch.no_grad():
    feats = blip2.vision_tower(pix).last_hidden_state
    att = blip2.qformer.query_attention(feats, 0)                      # (scenes, queries, 1 + 64)
    att_fresh = fresh.query_attention(feats, 0)


def show_query(scene: int = 0, query: int = 7) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    axes[0].imshow(scenes[scene]["image"].permute(1, 2, 0))
    axes[0].set_title(f"test scene {scene}: {scenes[scene]['question']}", fontsize=8)
    heat = att[scene, query, 1:].reshape(8, 8)
    axes[1].imshow(scenes[scene]["image"].permute(1, 2, 0))
    axes[1].imshow(heat, cmap="magma", alpha=0.7, extent=(0, 48, 48, 0))
    axes[1].set_title(f"query {query}: {heat.sum():.0%} on patches, {att[scene, query, 0]:.0%} on CLS", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle("where one query of blip2-tiny looks (cross-attention, layer 0)", fontsize=9)
    plt.show()


display(widgets.interactive(show_query, scene=widgets.IntSlider(0, 0, len(scenes) - 1),
                            query=widgets.IntSlider(7, 0, att.shape[1] - 1)))

# %% [markdown]
# Do the queries look at the objects? For each scene, mark the patches an object's box touches and measure
# the share of each query's patch attention that falls there. Attention spread evenly would put on the
# objects exactly the share of patches they cover; the **control** is the fresh Q-Former, whose queries have
# not learned to look anywhere:

# %%
def on_objects(weights: torch.Tensor) -> tuple[np.ndarray, float]:
    """Per query, the mean share of patch attention on object patches; and the mean share of object patches."""
    shares, cover = [], []
    for k in range(len(scenes)):
        occupied = torch.zeros(8, 8, dtype=torch.bool)
        for x0, y0, x1, y1 in boxes(scenes.scene(k)[0], 48).tolist():
            occupied[int(y0 // 6):math.ceil(y1 / 6), int(x0 // 6):math.ceil(x1 / 6)] = True
        w = weights[k, :, 1:] / weights[k, :, 1:].sum(-1, keepdim=True)
        shares.append(w[:, occupied.flatten()].sum(-1).numpy())
        cover.append(occupied.float().mean().item())
    return np.mean(shares, axis=0), float(np.mean(cover))


share, coverage = on_objects(att)
share_fresh, _ = on_objects(att_fresh)
fig, ax = plt.subplots(figsize=(7, 2.6))
ax.bar(np.arange(len(share)) - 0.2, share, 0.4, label="blip2-tiny")
ax.bar(np.arange(len(share)) + 0.2, share_fresh, 0.4, label="fresh queries (control)")
ax.axhline(coverage, color="grey", ls="--", label="share of patches on objects")
ax.set_xlabel("query")
ax.set_ylabel("attention on objects")
ax.set_title("share of each query's patch attention that lands on an object", fontsize=10)
ax.legend(fontsize=7)
plt.show()
print(f"objects cover {coverage:.0%} of the patches; fresh queries put {share_fresh.mean():.0%} there, "
      f"blip2-tiny's {', '.join(f'{s:.0%}' for s in share)}")
assert abs(share_fresh.mean() - coverage) < 0.1, "the control: untrained queries look everywhere alike"
assert (share > 2 * coverage).sum() >= len(share) // 2, "half of the trained queries concentrate on the objects"
assert (share > 0.85).sum() >= 2, "two of them look almost only at the objects"
assert all(s < coverage for s in share if s <= 2 * coverage), "the others look at the objects less than fairly"

# %% [markdown]
# Half of the trained queries put more than twice their fair share of attention on the objects, two of them
# almost all of it; the other half put less than their fair share there (all asserted). Fresh queries spread
# theirs as the patches fall (the control). Queries can also look at the CLS token, which already summarises
# the image; the slider shows how much each does. Nobody told the queries where objects are: stage 1
# and stage 2 only asked them to help describe and answer.
#
# ## Flamingo: the image enters from the side
#
# Flamingo {cite:p}`alayrac2022flamingo` keeps the frozen LM's input as plain text, with an `<image>`
# marker where each picture was, and lets the text look at the images from *inside* the LM. Two new parts:
#
# * a **perceiver resampler** turns each image's features $Z$ into $R$ visual tokens (64 in the paper):
#   learned latents $L$ attend, in each of a few blocks, to the keys and values $[Z; L]$ (the features and
#   the latents themselves), $L \leftarrow L + \mathrm{Attn}(L, [Z; L]) ,\ L \leftarrow L + \mathrm{FFW}(L)$;
# * **gated cross-attention dense** layers, inserted before the frozen LM blocks (every 4th in IDEFICS,
#   every 2nd here), where text tokens $x$ attend to the visual tokens $V$:
#
# $$x \leftarrow x + \tanh(\alpha_{\text{xattn}})\,\mathrm{XAttn}\big(\mathrm{LN}(x), V\big), \qquad
#   x \leftarrow x + \tanh(\alpha_{\text{dense}})\,\mathrm{FFW}\big(\mathrm{LN}(x)\big).$$
#
# The gates $\alpha$ start at **0**, so at initialisation $\tanh(0) = 0$ and the model *is* the frozen LM:
# training starts from the LM's own behaviour and opens the gates only as far as the images help. Written out
# by hand with non-zero gates, checked against the package's `GatedCrossAttentionLayer`:

# %%
layer = GatedCrossAttentionLayer(flamingo.cfg).eval()
with torch.no_grad():
    layer.alpha_xattn.fill_(0.7)
    layer.alpha_mlp.fill_(-0.4)
x, visual = torch.randn(2, 5, 64), torch.randn(2, 8, 64)
sees = torch.ones(2, 5, 8, dtype=torch.bool)


def gated_by_hand(layer, x, visual):
    a, heads = layer.xattn, layer.xattn.heads
    q = rearrange(a.q(layer.ln_xattn(x)), "b n (h d) -> b h n d", h=heads)    # text asks
    k, v = (rearrange(proj(visual), "b m (h d) -> b h m d", h=heads) for proj in (a.k, a.v))  # images answer
    attended = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v
    x = x + torch.tanh(layer.alpha_xattn) * a.out(rearrange(attended, "b h n d -> b n (h d)"))
    return x + torch.tanh(layer.alpha_mlp) * layer.mlp(layer.ln_mlp(x))


with torch.no_grad():
    torch.testing.assert_close(gated_by_hand(layer, x, visual), layer(x, visual, sees))
print("the gated layer by hand equals GatedCrossAttentionLayer")

# %% [markdown]
# Now the claim that matters: a fresh Flamingo around the zoo's tower and `lm-tiny`, images and all, gives
# **exactly** the frozen LM's logits — not close, equal bit for bit — because every gate is at 0:

# %%
seed_everything(SEED)
new_layers = {k: v for k, v in FlamingoConfig.PRESETS["tiny"].items() if k not in ("vision", "text")}
fresh_flamingo = Flamingo.from_parts(tower, lm, context_length=256, **new_layers).eval()
prompt = torch.tensor([few_shot_ids(tok, [], test_qs[0]["question"])])
image = transform(test_qs[0]["image"])[None, None]                        # (batch, images, 3, H, W)
with torch.no_grad():
    with_image = fresh_flamingo(prompt, image).logits
    lm_alone = lm.eval()(prompt).logits
    gates = [(torch.tanh(g.alpha_xattn).abs().max().item(), torch.tanh(g.alpha_mlp).abs().max().item())
             for g in flamingo.gated_layers]
print(f"fresh Flamingo vs lm-tiny: max |logit difference| = {(with_image - lm_alone).abs().max().item()}")
print("flamingo-tiny after training, |tanh(alpha)| per gated layer (x-attn, dense):",
      ", ".join(f"({a:.2f}, {b:.2f})" for a, b in gates))
assert torch.equal(with_image, lm_alone), "with its gates at 0, Flamingo must be the frozen LM exactly"
assert all(a > 0.01 for a, _ in gates), "training must have opened the cross-attention gates"

# %% [markdown]
# Training opened the gates, only part of the way (between 0.03 and 0.12, printed above), which is enough: the cross-attention's
# output is free to grow behind its gate, and the image now flows in. Where it flows is the **media mask**. Flamingo
# trains on interleaved web pages — text, an image, more text, another image — and lets each text token
# attend only to the visual tokens of the **latest image before it** (none before the first image); in
# IDEFICS's implementation, which ours follows, an end-of-text `<eos>` also cuts a token off until the
# next image. That is what makes a few-shot prompt work: each example's answer looks at its own picture, and
# the final question at the final picture. The mask of a 2-shot prompt, from the package's `media_mask`:

# %%
shots = [(test_qs[1]["question"], test_qs[1]["answer"]), (test_qs[2]["question"], test_qs[2]["answer"])]
two_shot = few_shot_ids(tok, shots, test_qs[3]["question"])
mm = media_mask(torch.tensor([two_shot]), tok.image_id, 3, tok.eos_id)[0]      # (tokens, images)
names = [tok.id_to_token(i) for i in two_shot]
fig, ax = plt.subplots(figsize=(13, 2.2))
ax.imshow(mm.T.float(), cmap="Greens", aspect="auto", vmin=0, vmax=1.3)
ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
ax.set_yticks(range(3), ["image 1", "image 2", "image 3"], fontsize=8)
ax.set_title("media mask of a 2-shot prompt: which image each token may attend to (green)", fontsize=9)
plt.show()
image_at = [int(row.nonzero()[0]) if row.any() else -1 for row in mm]
first = two_shot.index(tok.image_id)
assert all(i == -1 for i in image_at[:first]), "nothing sees an image before the first one"
assert all(row.sum() <= 1 for row in mm), "a token looks at one image at most"
assert image_at[-1] == 2, "the question's last token looks at the last image"

# %% [markdown]
# `flamingo-tiny` trained its perceiver (8 latents) and two gated layers for 1,500 steps on the same VQA data
# as `blip2-tiny`'s stage 2, tower and LM frozen. Against the same two controls:

# %%
fl = vqa_eval(flamingo, transform, test_qs)["accuracy"]
fl_blank = blank_accuracy(flamingo)
print(f"{'type':>11}{'blind prior':>14}{'blank image':>14}{'flamingo-tiny':>15}")
for t in types:
    print(f"{t:>11}{blind[t]:>14.1%}{fl_blank[t]:>14.1%}{fl[t]:>15.1%}")
assert fl["all"] >= blind["all"] + 0.1 and fl["all"] >= fl_blank["all"] + 0.15

# %% [markdown]
# Well above both controls, and far above BLIP-2's soft prompt into the same frozen LM. Both read the image
# through 8 visual tokens, but they differ in who asks and in what trains: BLIP-2's queries must summarise the
# image before anyone knows the question, while Flamingo's cross-attention is asked by the question's own tokens,
# in every gated layer — and Flamingo also trains gated feed-forward layers inside the LM (its dense gate opened
# the most), which help the answer format whatever the image. This comparison does not separate the two causes;
# the benchmark's control, the same Flamingo without its dense layers, does (§One comparison at equal budget).
#
# ## Flamingo in context: few-shot prompting with interleaved images
#
# Flamingo's headline is {term}`in-context learning`: a prompt of a few solved examples, each with its own image,
# then the question. Flamingo-80B on VQAv2 goes from 56.3 % zero-shot to 63.1 % with 4 examples and 67.6 %
# with 32 {cite:p}`alayrac2022flamingo` (Table 1), having been trained on 43 M interleaved web pages
# (M3W) as well as image–text pairs. Our `flamingo-tiny` is asked the same way
# (`few_shot_vqa`: $k$ examples from the training split, each closed by `<eos>` so that the media mask keeps
# it on its own picture), with 0, 1, 2 and 4 examples; the examples are drawn at random, so each $k$ is run
# with three draws:

# %%
FEW_SHOT_N = 200
few_qs, support = vqa_set(FEW_SHOT_N, seed=5), vqa_set(2000, split="train")
few_shot = {0: [few_shot_vqa(flamingo, transform, few_qs, support, 0)["accuracy"]["all"]] * 3}
for k in (1, 2, 4):
    few_shot[k] = [few_shot_vqa(flamingo, transform, few_qs, support, k, seed=s)["accuracy"]["all"] for s in range(3)]
fig, ax = plt.subplots(figsize=(6, 3))
ks = list(few_shot)
ax.errorbar(ks, [np.mean(few_shot[k]) for k in ks], yerr=[np.ptp(few_shot[k]) / 2 for k in ks], marker="o",
            capsize=3, label="flamingo-tiny (3 draws of examples)")
ax.axhline(blind["all"], color="grey", ls="--", label="blind prior")
ax.set_xticks(ks)
ax.set_xlabel("examples in the prompt (k)")
ax.set_ylabel(f"VQA accuracy ({FEW_SHOT_N} questions)")
ax.set_title("few-shot prompting a Flamingo that never saw an interleaved sequence", fontsize=9)
ax.legend(fontsize=8)
plt.show()
for k in ks:
    print(f"k = {k}: {', '.join(f'{a:.1%}' for a in few_shot[k])}")
shot_verdicts = {k: seed_verdict(few_shot[k], few_shot[0]) for k in (1, 2, 4)}
print("against 0 examples:", shot_verdicts)
assert all(v == "lower" for v in shot_verdicts.values()), "examples should hurt a model trained on single images"

# %% [markdown]
# **Examples hurt, at every draw.** `flamingo-tiny` was trained on one image and one question per sequence.
# It has never seen a second image in a sequence, an `<eos>` in the middle of one, or an answer whose form it
# should copy, so a longer prompt is an unfamiliar input. Is the failure the architecture's or the data's? The
# control is to change only the data: `benchmarks/bench_fewshot.py` trains the same Flamingo for the same
# steps on **interleaved** sequences (each question after 0–4 solved examples with their own pictures, laid out
# exactly as the prompts above, `InterleavedVQADataset`), beside the single-image recipe, three seeds each:

# %%
FEW_FILE = zoo.ZOO_DIR.parents[1] / "benchmarks" / "results" / "fewshot.json"
few = json.loads(FEW_FILE.read_text())
print(f"{FEW_FILE.name}: `{few['command']}`\n  ({few['date']}; {few['machine']}; {few['minutes']} min; "
      f"{few['steps']} steps of {few['batch']}; {few['questions']} questions, one draw of examples)")
few_acc = {arm: {k: [r["accuracy"][str(k)] for r in few["runs"] if r["arm"] == arm] for k in few["shots"]}
           for arm in ("single image", "interleaved")}
assert all(len(v) >= 3 for arm in few_acc.values() for v in arm.values()), "three seeds per arm"
fig, ax = plt.subplots(figsize=(6.5, 3))
for arm, by_k in few_acc.items():
    ax.errorbar(few["shots"], [np.mean(by_k[k]) for k in few["shots"]], marker="o", capsize=3, label=arm,
                yerr=[[np.mean(by_k[k]) - min(by_k[k]) for k in few["shots"]],
                      [max(by_k[k]) - np.mean(by_k[k]) for k in few["shots"]]])
ax.axhline(blind["all"], color="grey", ls="--", label="blind prior")
ax.set_xticks(few["shots"])
ax.set_xlabel("examples in the prompt (k)")
ax.set_ylabel("VQA accuracy (mean, seed range)")
ax.set_title("Flamingo trained on single images vs on interleaved sequences (3 seeds each)", fontsize=9)
ax.legend(fontsize=8)
plt.show()
few_verdicts = {}
for arm, by_k in few_acc.items():
    for k in few["shots"][1:]:
        few_verdicts[arm, k] = seed_verdict(by_k[k], by_k[0])
        print(f"{arm:>12}, k = {k} vs k = 0: {np.mean(by_k[k]) - np.mean(by_k[0]):+6.1%} in the mean, "
              f"{few_verdicts[arm, k]}")
for k in few["shots"]:
    few_verdicts["interleaved vs single", k] = seed_verdict(few_acc["interleaved"][k], few_acc["single image"][k])
print("interleaved vs single image, at each k:", {k: few_verdicts["interleaved vs single", k] for k in few["shots"]})
assert all(few_verdicts["single image", k] == "lower" for k in few["shots"][1:])
assert all(few_verdicts["interleaved", k] != "lower" for k in few["shots"][1:]), "interleaving removes the harm"
assert all(few_verdicts["interleaved vs single", k] == "higher" for k in few["shots"])

# %% [markdown]
# What the control shows, and what it cannot:
#
# * **The harm was the data's.** Trained on interleaved sequences, the same architecture reads a prompt of
#   examples without losing accuracy: no number of examples is below zero examples at every seed (asserted),
#   where the single-image model loses at every seed and every $k$.
# * **Examples do not help either.** Every Shapes World question is one the model was trained to answer;
#   the examples carry nothing it does not know, so there is nothing to learn in context. Flamingo's gains
#   come from benchmarks it was not tuned on, where the examples show the expected kind and form of answer.
#   The toy cannot test that claim; it shows the mechanism and what the data must contain for it to work.
# * The interleaved arm is also better with no examples at all. That is not a finding about interleaving:
#   each of its sequences carries one to five answered questions, so at an equal number of steps it saw about
#   three times as many answers. The comparison is at equal steps, not equal data.
# ## One comparison at equal budget
#
# The architecture guide sets the connectors side by side; here they are trained side by side. In
# `bench_bottlenecks.py` every arm reads the same frozen tower, talks through the same frozen `lm-tiny`,
# and trains for the same 1,500 steps of 32 VQA conversations (BLIP-2 and InstructBLIP after the same 600
# steps of stage 1), at three seeds. The connector arms put LLaVA's MLP or a query bottleneck with 16
# queries into the LLaVA layout; BLIP-2, InstructBLIP and Flamingo are the full models of this chapter. Two
# arms are controls: InstructBLIP with the question hidden from its Q-Former, and Flamingo without its dense layers.

# %%
order = ["LLaVA MLP", "Qwen resampler", "perceiver", "Q-Former", "BLIP-2", "BLIP-2, no stage 1", "InstructBLIP",
         "InstructBLIP, question hidden", "Flamingo", "Flamingo, no dense layers"]
assert set(order) == set(arms)
print(f"{'arm':>29} {'trainable':>10} {'visual tok.':>11} {'LM pos.':>8} {'accuracy (3 seeds)':>20} {'s/run':>6}")
for arm in order:
    r, a = run_of[arm], acc_of[arm]
    seconds = np.mean([x["seconds"] for x in bench["runs"] if x["arm"] == arm])
    print(f"{arm:>29} {r['trainable_params']:>10,} {r['visual_tokens_per_image']:>11} "
          f"{r['input_positions_per_image']:>8} {min(a):>9.1%}–{max(a):.1%} {seconds:>6.0f}")
fig, ax = plt.subplots(figsize=(9, 3.8))
for k, arm in enumerate(order):
    r = run_of[arm]
    ax.scatter([r["trainable_params"]] * 3, acc_of[arm], s=12 + 2 * r["input_positions_per_image"], color=f"C{k}",
               alpha=0.7, label=f"{arm} ({r['input_positions_per_image']} LM pos.)")
ax.axhline(blind["all"], color="grey", ls="--", label="blind prior")
ax.set_xscale("log")
ax.set_xlabel("trainable parameters")
ax.set_ylabel("VQA accuracy, 1,200 questions")
ax.set_title("equal steps, frozen tower and LM: accuracy vs parameters (dot size: LM positions per image)",
             fontsize=9)
ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
plt.tight_layout()
plt.show()
steered = ("InstructBLIP", "Flamingo")          # the two arms whose read-out the question steers
controls = {"InstructBLIP": "InstructBLIP, question hidden", "Flamingo": "Flamingo, no dense layers"}
others = [arm for arm in order if arm not in steered]  # the controls included
pairs = [("Q-Former", "LLaVA MLP"), ("perceiver", "LLaVA MLP"), ("Qwen resampler", "LLaVA MLP"),
         ("Q-Former", "perceiver"), ("Q-Former", "Qwen resampler"), ("perceiver", "Qwen resampler"),
         ("Flamingo", "InstructBLIP")] + [(a, b) for a in steered for b in others]
verdicts = {}
for a, b in pairs:
    verdicts[a, b] = seed_verdict(acc_of[a], acc_of[b])
    print(f"{a:>15} vs {b:<29}: {np.mean(acc_of[a]) - np.mean(acc_of[b]):+6.1%} in the mean, {verdicts[a, b]}")
seed_acc = {arm: {r["seed"]: r["accuracy"]["vqa_all"] for r in bench["runs"] if r["arm"] == arm} for arm in arms}
lift = {arm: [seed_acc[arm][s] - seed_acc["BLIP-2"][s] for s in sorted(seed_acc["BLIP-2"])] for arm in steered}
print("over BLIP-2, seed for seed: "
      + "; ".join(f"{arm} {', '.join(f'{g:+.1%}' for g in lift[arm])}" for arm in steered))
span = max(r["trainable_params"] for r in bench["runs"]) / min(r["trainable_params"] for r in bench["runs"])
print(f"trainable parameters span a factor of {span:.1f} across the arms")
assert all(verdicts[a, "LLaVA MLP"] == "higher" for a in ("Q-Former", "perceiver", "Qwen resampler"))
assert verdicts["Q-Former", "perceiver"] == verdicts["Flamingo", "InstructBLIP"] == "within the seed spread"
assert verdicts["Q-Former", "Qwen resampler"] == verdicts["perceiver", "Qwen resampler"] == "higher"
assert all(verdicts[a, b] == "higher" for a in steered for b in others), "the question-steered arms lead"
assert all(8 <= round(100 * g) <= 15 for g in lift["InstructBLIP"] + lift["Flamingo"]), "8 to 15 points a seed"
assert round(span) == 30, "the arms' trainable parameters span a factor of about 30"
assert [round(run_of[a]["trainable_params"] / 1000) for a in ("Qwen resampler", "perceiver", "Q-Former")] \
    == [26, 104, 122], "the parameter counts the text quotes"
assert max(acc_of["LLaVA MLP"]) < blind["all"], "the MLP into a frozen LM stays below the blind prior"

# %% [markdown]
# How to read the table (every verdict above is computed from the seeds and asserted):
#
# * With the LM **frozen**, LLaVA's MLP is the weakest arm, below even the blind prior: 8 K parameters that
#   can only re-map each patch cannot teach a frozen LM the answer format. Every learned-query connector beats
#   it at every seed, with 16 tokens instead of 64. This is the regime BLIP-2 and Flamingo were designed for;
#   chapter 05's LLaVA trains the LM in stage 2, where the MLP does well.
# * Q-Former and perceiver as connectors are **within the seed spread** of each other; the one-layer Qwen-VL
#   resampler is below both at every seed (one cross-attention layer against two blocks, 26 K parameters
#   against 104 K and 122 K). Parameters are not equal across arms — they span a factor of 30 — so this
#   compares designs as they come at the same width, not at the same size.
# * The two arms whose visual read-out is **steered by the question**, InstructBLIP (the question in the
#   Q-Former) and Flamingo (the question's tokens cross-attend in the LM), lead: each beats every other arm at
#   every seed, the two controls included, they are within the seed spread of each other, and over BLIP-2 they
#   gain 8 to 15 points, seed for seed. Flamingo does it with one LM position per image. Whether the question is
#   the cause, or the parameters these arms add, is for the two controls below.
# * Step times are in the table (seconds per run, stage 1 included for BLIP-2 and InstructBLIP); the
#   training-step time and memory of our BLIP-2 and Flamingo against `transformers`' are in
#   `benchmarks/bench_blip2_flamingo.py` (README).
# * Qwen-VL's paper does not ablate its resampler against the others; BLIP-2 compares with Flamingo at
#   scale: 8.7 points better zero-shot on VQAv2 with 54 times fewer trainable parameters
#   {cite:p}`li2023blip2`. Our Flamingo beats our BLIP-2 at equal steps; the toy says nothing about theirs,
#   where the LLMs, data and budgets all differ.
#
# **The controls.** Each removes one thing from a leading arm at the same budget and seeds. InstructBLIP with the
# question hidden keeps every parameter (its Q-Former reads `<bos>` alone, in training and at test); Flamingo
# without dense layers keeps its perceiver and gated cross-attention and loses the gated feed-forward layers it adds
# inside the LM, which act on every token whether an image is there or not:

# %%
control_verdicts, over_control = {}, {}
for arm in steered:
    for a, b in ((arm, controls[arm]), (controls[arm], "BLIP-2")):
        control_verdicts[a, b] = seed_verdict(acc_of[a], acc_of[b])
        print(f"{a} vs {b}: {np.mean(acc_of[a]) - np.mean(acc_of[b]):+.1%} in the mean, {control_verdicts[a, b]}")
    over_control[arm] = [seed_acc[arm][s] - seed_acc[controls[arm]][s] for s in sorted(seed_acc[arm])]
    print(f"  {arm} over its control, seed for seed: {', '.join(f'{g:+.1%}' for g in over_control[arm])}")
    counts = run_of[arm]["trainable_params"], run_of[controls[arm]]["trainable_params"]
    print(f"  trainable parameters: {counts[0]:,} and {counts[1]:,} in the control\n")
assert run_of["InstructBLIP"]["trainable_params"] == run_of["InstructBLIP, question hidden"]["trainable_params"]
assert control_verdicts["InstructBLIP", "InstructBLIP, question hidden"] == "higher"
assert control_verdicts["InstructBLIP, question hidden", "BLIP-2"] == "within the seed spread"
assert control_verdicts["Flamingo", "Flamingo, no dense layers"] == "higher"
assert control_verdicts["Flamingo, no dense layers", "BLIP-2"] == "higher"
assert all(11 <= round(100 * g) <= 13 for g in over_control["InstructBLIP"]), "about 12 points a seed"
assert all(6 <= round(100 * g) <= 7 for g in over_control["Flamingo"]), "6 to 7 points a seed"

# %% [markdown]
# Either control could have come out level with its full arm; they tell different stories:
#
# * **InstructBLIP's lead is the question.** Hidden from the Q-Former, with every parameter still there and still
#   training, the arm falls back to BLIP-2 (within the seed spread, the same mean) and trails the real InstructBLIP
#   at every seed by about 12 points. The text embeddings it adds buy nothing by themselves; the words do. This is
#   the paper's ablation (instruction removed from the Q-Former) at toy scale, and it points the same way.
# * **Flamingo's lead is split.** Without its dense layers it loses 6 to 7 points at every seed — the extra LM
#   capacity, trained on the answers, is part of the lead — yet it stays above BLIP-2 at every seed: the
#   cross-attention asked by the question's tokens carries the rest. What the toy cannot say is how the split
#   looks at scale: here the dense layers learn a small answer vocabulary from the same VQA data, which a
#   billion-parameter LM already knows.

# %% [markdown]
# ## Frozen and MiniGPT-4: two configurations of the same parts
#
# The survey's §2.5 opens with two models that need no new module, only a choice of what to train:
#
# * **Frozen** {cite:p}`tsimpoukelli2021frozen` trains the **vision encoder** (an NF-ResNet-50, from scratch)
#   and a linear map to a *visual prefix* of 2 tokens, against a **frozen** 7B LM, on Conceptual Captions;
#   the gradient flows through the frozen LM into the encoder. Here: LLaVA's layout with a linear connector,
#   tower trained, LM frozen (our prefix keeps 64 patch tokens instead of a pooled feature mapped to 2).
# * **MiniGPT-4** {cite:p}`zhu2023minigpt4` takes BLIP-2's ViT and Q-Former **frozen** and trains a **single
#   linear layer** into Vicuna: about 5 M image–text pairs, then 3,500 curated detailed descriptions. Here:
#   `blip2-tiny` with `set_stage(2, train_qformer=False)`.
#
# What each recipe of the two chapters trains, counted from the models:

# %%
from vlm_primer.backbones import Llava  # noqa: E402
from vlm_primer.backbones.data import llava_collate  # noqa: E402

llava_linear = Llava.from_parts(tower, lm, context_length=256, connector="linear")
minigpt4 = zoo.load("blip2-tiny")
recipes = {
    "LLaVA stage 1 (connector)": lambda: zoo.load("llava-tiny").set_stage(1),
    "LLaVA stage 2 (connector + LM)": lambda: zoo.load("llava-tiny").set_stage(2),
    "Frozen (tower + linear, LM frozen)": lambda: llava_linear.set_stage(2, train_vision=True, train_language=False),
    "BLIP-2 stage 2 (queries + projection)": lambda: zoo.load("blip2-tiny").set_stage(2),
    "MiniGPT-4 (projection only)": lambda: minigpt4.set_stage(2, train_qformer=False),
    "InstructBLIP (Q-Former + projection)": lambda: zoo.load("instructblip-tiny").set_stage(2),
    "Flamingo (perceiver + gated layers)": lambda: zoo.load("flamingo-tiny").set_stage(),
}
trainable = {name: make() for name, make in recipes.items()}
for name, n in trainable.items():
    print(f"{name:>40}: {n:>8,} trainable parameters")
batch = llava_collate(tok.pad_id)([stage_data("vqa", minigpt4, transform, size=8)[i] for i in range(8)])
minigpt4(**batch).loss.backward()
learned = {name.split(".")[0] for name, p in minigpt4.named_parameters() if p.grad is not None}
print("MiniGPT-4: gradients reach", learned)
assert learned == {"language_projection"} and trainable["MiniGPT-4 (projection only)"] == 64 * 64 + 64
assert trainable["Frozen (tower + linear, LM frozen)"] == count(tower) + 64 * 64 + 64

# %% [markdown]
# The two span the line: MiniGPT-4 trains 4 K parameters here (a 768 → 5,120 layer, 3.9 M, in the paper),
# relying on a Q-Former someone else aligned; Frozen trains a whole vision encoder to speak to an LM that
# will not move. Everything in this chapter and the last sits between them, and differs in which part is
# allowed to learn what the others already know.
#
# ## Parity
#
# Our Q-Former, BLIP-2, InstructBLIP and Flamingo are the architectures of `transformers`' `Blip2QFormerModel`,
# `Blip2ForImageTextRetrieval`, `Blip2ForConditionalGeneration`, `InstructBlipForConditionalGeneration` and
# `IdeficsForVisionText2Text` (the open Flamingo reproduction of {cite:t}`laurencon2023obelics`), weight for
# weight: the tests convert tiny random models both ways, with every parameter perturbed — BLIP-2's query
# tokens and Flamingo's zero gates included — and compare logits, losses, ITC/ITM outputs, media masks and
# greedy `generate()`. The same check on the zoo's stage-1 Q-Former, converted into a
# `Blip2ForImageTextRetrieval` and compared on the ITC and ITM outputs:

# %%
from vlm_primer.interop.blip2 import qformer_to_hf  # noqa: E402

hf_qformer = qformer_to_hf(qformer_zoo.qformer).eval()  # its (EVA-layout) vision model is fresh: both read its features
enc = tok(["a picture of a large red circle", "a big blue star"], max_length=16, add_bos=True)
size = hf_qformer.config.vision_config.image_size
pixels = torch.randn(2, 3, size, size)
with torch.no_grad():
    z = hf_qformer.vision_model(pixel_values=pixels)[0]
    q = qformer_zoo.qformer
    ours_itm = q.itm_head(q(z, enc["input_ids"], enc["attention_mask"])[:, :8]).mean(1)
    hf_itm = hf_qformer(pixel_values=pixels, input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                        use_image_text_matching_head=True).logits_per_image
gap = (ours_itm - hf_itm).abs().max().item()
print(f"{type(hf_qformer).__name__}: ITM logits, max |difference| = {gap:.2e}")
assert gap < 1e-4

# %% [markdown]
# With the hub, a real checkpoint with a Llama-family LM loads into our classes through the same converters
# (not run here: it downloads about 16 GB):
#
# ```python
# from transformers import InstructBlipForConditionalGeneration
# from vlm_primer.interop.blip2 import blip2_from_hf
# model = blip2_from_hf(InstructBlipForConditionalGeneration.from_pretrained("Salesforce/instructblip-vicuna-7b"))
# ```
#
# What does not fit is named, not guessed: BLIP-2 with OPT or FlanT5 (our LM is Llama-style), and the released
# IDEFICS checkpoints, whose extra vocabulary (decoupled embeddings for two added tokens) our Flamingo does
# not have; `flamingo_from_hf` refuses them with that reason, and converts IDEFICS models without it both ways
# (the tests).
#
# ## Scaling up: the GPU path
#
# The same recipes run at the papers' shapes from the project's entry point. `--preset base` is BLIP-2's
# Q-Former (BERT-base shapes, 32 queries) on an EVA ViT-g/14-shaped tower with a Llama-2-7B-shaped LM, and
# IDEFICS-9B's shapes for Flamingo (CLIP ViT-H/14, 64 latents, a gated layer before every 4th of 32 blocks);
# random weights unless `--set init=` loads converted ones:
#
# ```bash
# # BLIP-2 stage 1: the Q-Former's ITC, ITM and ITG on captions (8 GPUs, bf16)
# torchrun --nproc_per_node 8 -m vlm_primer.train blip2 --preset base --stage 1 --precision bf16 \
#     --ckpt-dir runs/blip2-s1
# # stage 2: queries -> frozen LM, from stage 1's Q-Former (add --set train_qformer=0 for MiniGPT-4's recipe)
# torchrun --nproc_per_node 8 -m vlm_primer.train blip2 --preset base --stage 2 --precision bf16 \
#     --set qformer_init=runs/blip2-s1 --ckpt-dir runs/blip2-s2 --resume auto
# # Flamingo: perceiver and gated cross-attention, tower and LM frozen
# torchrun --nproc_per_node 8 -m vlm_primer.train flamingo --preset base --precision bf16 --ckpt-dir runs/flamingo
# ```
#
# Here the very same entry point runs a few steps of each at `tiny`, stage 2 from stage 1's checkpoint:

# %%
from vlm_primer.backbones import Blip2Config  # noqa: E402
from vlm_primer.train import main as train_main  # noqa: E402

base_blip2, base_flamingo = Blip2Config.from_preset("base"), FlamingoConfig.from_preset("base")
print(f"BLIP-2 base: {base_blip2.vision.image_size} px tower {base_blip2.vision.dim} wide, "
      f"{base_blip2.tokens_per_image} queries, LM {base_blip2.text.depth} x {base_blip2.text.dim}; Flamingo base: "
      f"{base_flamingo.visual_tokens} latents, a gated layer every {base_flamingo.cross_every} of "
      f"{base_flamingo.text.depth} blocks")
assert (base_blip2.tokens_per_image, base_blip2.vision.dim, base_flamingo.visual_tokens) == (32, 1408, 64)
with tempfile.TemporaryDirectory() as tmp:
    common = ["--preset", "tiny", "--batch-size", "8", "--steps", "2", "--no-progress", "--device", "cpu",
              "--precision", "fp32", "--set", "train_size=64"]
    h_s1 = train_main(["blip2", "--stage", "1", "--ckpt-dir", f"{tmp}/s1", "--ckpt-every", "2", *common])
    h_s2 = train_main(["blip2", "--stage", "2", "--set", f"qformer_init={tmp}/s1", "--set", "data=vqa", *common])
    h_fl = train_main(["flamingo", *common])
assert all(h[-1]["step"] == 2 and math.isfinite(h[-1]["loss"]) for h in (h_s1, h_s2, h_fl))

# %% [markdown]
# **Benchmarks.** `benchmarks/bench_blip2_flamingo.py` times a training step and measures the memory of our
# BLIP-2 and Flamingo against `transformers`' `Blip2ForConditionalGeneration` and `IdeficsForVisionText2Text`
# at the same config and weights; the ratios are printed and quoted in the README.
# `benchmarks/bench_bottlenecks.py` is the equal-budget comparison read above.
#
# ## Summary
#
# * A learned bottleneck hands the LM a fixed, small number of visual tokens: BLIP-2's Q-Former 32 (186 M
#   parameters at BERT-base shapes, counted above; the paper says 188 M), Qwen-VL's resampler 256, Flamingo
#   one `<image>` marker per image with its 64 visual tokens read by cross-attention; LLaVA-1.5's MLP hands on
#   all 576.
# * The Q-Former's three stage-1 objectives differ in one thing, the self-attention mask (uni-modal for ITC,
#   bi-directional for ITM, multimodal causal for ITG), drawn and checked entry by entry above.
# * Stage 1 taught our queries to read the image (ITC zero-shot well above chance, fresh queries at chance);
#   stage 2 then spent that alignment on the LM and lost it for retrieval. Skipping stage 1 made no difference
#   beyond the seed spread at our scale; BLIP-2's Figure 5 effect needs more than the toy has.
# * Into a frozen `lm-tiny`, BLIP-2's 8 image-only queries use the image (colour far above the prior, shape
#   somewhat, a blank image costs more than 10 points) but sit near the blind prior overall; the arms where the
#   question steers the read-out — InstructBLIP's instruction-aware queries, Flamingo's cross-attention — lead at
#   every seed, by 8 to 15 points seed for seed, at an equal budget of steps. The controls separate the causes:
#   with the question hidden, InstructBLIP (every parameter kept) falls back to BLIP-2; without its dense layers
#   Flamingo loses part of its lead but stays above BLIP-2 at every seed.
# * Flamingo's gates at 0 make it the frozen LM exactly (asserted bit for bit); its media mask keeps each
#   token on the latest image. Few-shot examples *hurt* a Flamingo trained on single images, at every seed;
#   trained on interleaved sequences the same architecture reads them without loss (within the spread), and
#   gains nothing from them either, since our examples hold nothing the model does not already know.
# * At equal steps with the LM frozen, every query bottleneck beats the MLP connector with a quarter of the
#   tokens; Q-Former and perceiver are indistinguishable; parameter counts differ across arms by up to 30
#   times, so the table compares designs, not sizes.
#
# ## Exercises
#
# Write each answer in the cell below and run it: `check` runs hidden tests and says what is wrong, never
# what the answer is.
#
# 1. **The three masks** (`05b.1`). Write `qformer_masks(kind, num_queries, num_text)`: a bool
#    ``(L, L)`` tensor, ``L = num_queries + num_text``, True where row position may attend to column
#    position, for `kind` in `"unimodal"`, `"bidirectional"`, `"multimodal_causal"` (no padding).
# 2. **The best query** (`05b.2`). Write `itc_scores(image_embeds, text_embeds)`: ``(B_i, Q, D)`` query
#    embeddings and ``(B_t, D)`` text embeddings, neither normalised, to the ``(B_i, B_t)`` ITC scores.
# 3. **Hard negatives** (`05b.3`). Write `negative_probs(scores)`: for a ``(B, B)`` ITC score matrix, each
#    row's probability of drawing each candidate as the hard negative (a softmax over the row that never
#    draws the row's own pair).
# 4. **The media mask** (`05b.4`). Write `latest_image(ids, image_id, eos_id)`: for a 1-D list of token ids,
#    the index (0, 1, ...) of the image each token may attend to, or -1: the latest `<image>` at or before it,
#    none before the first image or after an `<eos>` that follows the latest image.
# 5. **A gated layer's size** (`05b.5`). Write `gated_layer_params(dim, vision_dim, heads, dim_head, mlp_dim,
#    alpha_type)`: the parameters of one `GatedCrossAttentionLayer` (two RMSNorms, x-attention without
#    biases, a SwiGLU feed-forward without biases, two gates: one number each or one per channel).
#
# *An open experiment* (no check: it is yours). Make the examples necessary: at test time, ask yes/no
# questions whose examples answer "true" / "false" instead, a form the model never trained on. Does the
# interleaved Flamingo of `bench_fewshot.py` copy the form from 4 examples more often than the single-image one,
# by more than the spread of three seeds?

# %%
from vlm_primer.exercises import check  # noqa: E402


def qformer_masks(kind, num_queries, num_text):
    raise NotImplementedError  # your code here


def itc_scores(image_embeds, text_embeds):
    raise NotImplementedError


def negative_probs(scores):
    raise NotImplementedError


def latest_image(ids, image_id, eos_id):
    raise NotImplementedError


def gated_layer_params(dim, vision_dim, heads, dim_head, mlp_dim, alpha_type):
    raise NotImplementedError


for exercise_id, answer in [("05b.1", qformer_masks), ("05b.2", itc_scores), ("05b.3", negative_probs),
                            ("05b.4", latest_image), ("05b.5", gated_layer_params)]:
    check(exercise_id, answer)

# %%
elapsed = time.time() - T_START
print(f"blip2-tiny {b2['all']:.1%}, instructblip-tiny {ib['all']:.1%}, flamingo-tiny {fl['all']:.1%} vs blind "
      f"{blind['all']:.1%}; chapter executed in {elapsed:.0f} s at scale {SCALE!r}")
