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
# # 00 · Preface: what a vision–language model is
#
# A {term}`vision–language model <vision-language model>` (**VLM**) maps images (and sometimes video) and text into a shared
# computation, so that it can *match* a picture with a sentence, *describe* a picture, *answer a
# question* about it, or *generate* a picture from a sentence. This book builds every major family of
# VLMs from scratch, following the survey *An Introduction to Vision-Language Modeling*
# {cite:p}`bordes2024introduction` and three landmark papers it builds on: BLIP {cite:p}`li2022blip`,
# BLIP-2 {cite:p}`li2023blip2` and LLaVA {cite:p}`liu2023llava`.
#
# Three promises hold in every chapter:
#
# 1. **The real thing, small.** A model called CLIP is the real CLIP architecture and loss; only its
#    size changes. The `tiny` presets train live on a laptop CPU, within the time budget each chapter
#    declares in `book.toml` (`make book` prints each chapter's time beside its budget); the `base`
#    presets are the paper configurations and use the very same code on GPUs.
# 2. **Proven equal to the reference.** Each model with a counterpart in Hugging Face `transformers`
#    is tested weight-for-weight against it, and real checkpoints load through `vlm_primer.interop`.
# 3. **Numbers are computed, never typed.** When the text says "reaches 90 %", the cell above it
#    computed the number and an `assert` checks the claim, so a broken claim breaks the build.
#
# Language is discrete; vision lives in a much higher-dimensional space where concepts do not split
# into tokens so easily. The survey's central question, which runs through the book, is how to build
# the bridge between the two — and how to tell whether a model really crossed it (counting, spatial
# relations, attribute binding and hallucination are where today's VLMs still stumble).
#
# **After this chapter you can**
#
# * name the four families of VLMs by their training objective, with examples of each;
# * find your way through the book: its chapters, the package behind them, the scale knob;
# * check an exercise answer in place with `check`.

# %%
import time

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from vlm_primer import get_scale, seed_everything

seed_everything(0)
SCALE = get_scale()
print(f"VLM_PRIMER_SCALE = {SCALE!r}")

# %% [markdown]
# ## The four families
#
# The survey sorts transformer-era VLMs by their **training objective**. The families are not
# exclusive — many models mix objectives (BLIP trains a contrastive loss, an image–text matching
# loss and a captioning loss, with no masking objective) — but each objective
# teaches the model something different:
#
# | family | the model learns to… | examples | chapter |
# |---|---|---|---|
# | **contrastive** | pull matching image/text pairs together and push mismatched ones apart in a shared embedding space | CLIP, SigLIP, Llip | 02 |
# | **masking** | reconstruct masked image patches or masked words, given the other modality | VisualBERT, FLAVA, MaskVLM | 03 |
# | **generative** | generate the caption (or the image) token by token | CoCa, BLIP, CM3Leon, Parti, Stable Diffusion | 04, 04b |
# | **pretrained backbones** | connect a pretrained vision encoder to a pretrained LLM through a trained {term}`connector`; what stays frozen varies (Frozen trains the vision encoder against a frozen LM; LLaVA's second stage updates the LLM) | Frozen, MiniGPT-4, LLaVA, BLIP-2, Flamingo | 05, 05b |
#
# The figure draws the four training setups side by side.


# %%
def box(ax, xy, w, h, text, color):
    ax.add_patch(FancyBboxPatch(xy, w, h, boxstyle="round,pad=0.02", fc=color, ec="#374151", lw=1.2))
    ax.text(xy[0] + w / 2, xy[1] + h / 2, text, ha="center", va="center", fontsize=9)


def arrow(ax, a, b):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, color="#374151", lw=1.2))


IMG, TXT, MOD, LOSS = "#bfdbfe", "#fde68a", "#e5e7eb", "#fecaca"
fig, axes = plt.subplots(1, 4, figsize=(15, 4.2))
for ax in axes:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")

ax = axes[0]
ax.set_title("Contrastive (CLIP, SigLIP)")
box(ax, (0.05, 0.05), 0.38, 0.14, "image", IMG)
box(ax, (0.57, 0.05), 0.38, 0.14, "caption", TXT)
box(ax, (0.05, 0.38), 0.38, 0.16, "image\nencoder", MOD)
box(ax, (0.57, 0.38), 0.38, 0.16, "text\nencoder", MOD)
box(ax, (0.2, 0.75), 0.6, 0.16, "similarity matrix\nInfoNCE / sigmoid", LOSS)
for x in (0.24, 0.76):
    arrow(ax, (x, 0.19), (x, 0.38))
    arrow(ax, (x, 0.54), (0.5, 0.75))

ax = axes[1]
ax.set_title("Masking (FLAVA, MaskVLM)")
box(ax, (0.05, 0.05), 0.38, 0.14, "image,\npatches masked", IMG)
box(ax, (0.57, 0.05), 0.38, 0.14, "caption,\nwords masked", TXT)
box(ax, (0.1, 0.38), 0.8, 0.16, "multimodal encoder", MOD)
box(ax, (0.05, 0.75), 0.38, 0.16, "reconstruct\npatches", LOSS)
box(ax, (0.57, 0.75), 0.38, 0.16, "predict\nwords", LOSS)
for x in (0.24, 0.76):
    arrow(ax, (x, 0.19), (x, 0.38))
    arrow(ax, (x, 0.54), (x, 0.75))

ax = axes[2]
ax.set_title("Generative (CoCa, BLIP)")
box(ax, (0.05, 0.05), 0.38, 0.14, "image", IMG)
box(ax, (0.05, 0.38), 0.38, 0.16, "image\nencoder", MOD)
box(ax, (0.57, 0.38), 0.38, 0.16, "text decoder\n(cross-attn)", MOD)
box(ax, (0.57, 0.05), 0.38, 0.14, "caption so far", TXT)
box(ax, (0.57, 0.75), 0.38, 0.16, "next word\n(cross-entropy)", LOSS)
arrow(ax, (0.24, 0.19), (0.24, 0.38))
arrow(ax, (0.43, 0.46), (0.57, 0.46))
arrow(ax, (0.76, 0.19), (0.76, 0.38))
arrow(ax, (0.76, 0.54), (0.76, 0.75))

ax = axes[3]
ax.set_title("Pretrained backbones (LLaVA, BLIP-2)")
box(ax, (0.05, 0.05), 0.38, 0.14, "image", IMG)
box(ax, (0.05, 0.3), 0.38, 0.16, "pretrained vision\nencoder", MOD)
box(ax, (0.05, 0.56), 0.38, 0.13, "projector / Q-Former\n(trained)", "#bbf7d0")
box(ax, (0.57, 0.05), 0.38, 0.14, "instruction", TXT)
box(ax, (0.57, 0.4), 0.38, 0.2, "pretrained LLM\n(frozen, LoRA\nor fine-tuned)", MOD)
box(ax, (0.57, 0.78), 0.38, 0.14, "answer tokens", LOSS)
arrow(ax, (0.24, 0.19), (0.24, 0.3))
arrow(ax, (0.24, 0.46), (0.24, 0.56))
arrow(ax, (0.43, 0.62), (0.57, 0.52))
arrow(ax, (0.76, 0.19), (0.76, 0.4))
arrow(ax, (0.76, 0.6), (0.76, 0.78))
fig.suptitle("The four families of VLMs (survey §2)", fontsize=13)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Inside a pretrained-backbone VLM
#
# The fourth family is the one most assistants belong to, and it has a vocabulary of its own. Three
# parts: a **vision encoder** (a ViT, usually CLIP's or SigLIP's), a **language model**, and between
# them a trained {term}`connector` that turns image features into something the LLM can read. The
# connector is where the models differ most:
#
# | connector | what it does | example | chapter |
# |---|---|---|---|
# | linear projection | one matrix maps each patch feature to an LLM token | LLaVA {cite:p}`liu2023llava` | 05 |
# | MLP | a 2-layer MLP per patch, the same number of tokens | LLaVA-1.5 {cite:p}`liu2024llava15` | 05 |
# | {term}`Q-Former` | a small transformer whose 32 learned queries read the image by cross-attention: a fixed, short token budget | BLIP-2 {cite:p}`li2023blip2` | 05b |
# | {term}`perceiver resampler` | learned latents cross-attend to the image features, a fixed number of visual tokens | Flamingo {cite:p}`alayrac2022flamingo` | 05b |
# | cross-attention in the LLM | gated cross-attention layers inserted between the frozen LLM's layers read the visual tokens | Flamingo | 05b |
#
# An architecture guide among the study notes sorts whole systems into four types. **A**: a frozen
# vision encoder and a trained connector feeding the LLM's input (LLaVA, LLaVA-NeXT; the LLM is often
# trained too). **B**: everything trained end to end. **C**: image information enters *inside* the
# LLM's layers through cross-attention (Flamingo; the notes also list Qwen-VL, whose cross-attention
# is a one-layer resampler in its connector rather than inside the LLM). **D**: natively multimodal, images and
# text as one token sequence in one model. The notes place GPT-4V, Gemini and Claude 3 in B or D;
# their makers have not published those architectures, so take that placement as a guess. This book
# builds A and C from scratch, and D's early-fusion idea in its masking and video chapters.
#
# Such models are trained in **stages**. (1) **Alignment**: on image–caption pairs, train the
# connector (sometimes more) so that the LLM can read the visual tokens, with the ordinary
# next-token loss. (2) **Instruction tuning**: on visual conversations, teach the model to follow
# requests ({term}`instruction tuning`); LLaVA updates the LLM here. (3) Optionally, **preference alignment** with RLHF or DPO,
# to prefer helpful and grounded answers. The timeline below places the models this book builds.

# %%
timeline = [  # (year, month, model, family): the paper's first arXiv version (LLaVA-NeXT: its release post)
    (2021, 2, "CLIP", "contrastive"), (2021, 6, "Frozen", "pretrained backbones"),
    (2022, 1, "BLIP", "generative"), (2022, 4, "Flamingo", "pretrained backbones"),
    (2022, 5, "CoCa", "generative"), (2023, 1, "BLIP-2", "pretrained backbones"),
    (2023, 3, "SigLIP", "contrastive"), (2023, 4, "LLaVA", "pretrained backbones"),
    (2023, 10, "LLaVA-1.5", "pretrained backbones"), (2024, 1, "LLaVA-NeXT", "pretrained backbones"),
    (2024, 5, "Llip", "contrastive"),
]
colors = {"contrastive": "#2563eb", "generative": "#d97706", "pretrained backbones": "#059669"}
fig, ax = plt.subplots(figsize=(10, 3.4))
for k, (year, month, name, family) in enumerate(timeline):
    x = year + (month - 1) / 12
    ax.plot([x, x], [0, 1 if k % 2 else -1], color=colors[family], lw=1)
    ax.scatter([x], [0], color=colors[family], zorder=3)
    ax.text(x, 1.15 if k % 2 else -1.45, name, ha="center", fontsize=11, color=colors[family])
for family, color in colors.items():
    ax.scatter([], [], color=color, label=family)
ax.axhline(0, color="#9ca3af", lw=1)
ax.set_ylim(-1.9, 2.6)
ax.set_yticks([])
ax.set_xticks([2021, 2022, 2023, 2024, 2025])
ax.legend(loc="upper center", fontsize=10, frameon=False, ncol=3)
ax.set_title("The models this book builds, by date of first publication")
for side in ("left", "right", "top"):
    ax.spines[side].set_visible(False)
plt.tight_layout()
plt.show()
assert [t[:2] for t in timeline] == sorted(t[:2] for t in timeline)

# %% [markdown]
# ## The map of the book
#
# The chapter list below is read from `book.toml`, the one manifest of the book (the HTML build and
# the tests read it too). Each chapter has a notebook, the package modules that back it, the survey
# section it follows, and a CPU budget: the time a chapter may take at the `tiny` scale on a 2-core
# laptop. The budgets are targets that `make book` checks, printing each chapter's time beside its
# budget and flagging a chapter that runs over.

# %%
from vlm_primer.book import load_book

book = load_book()
print(f"{'id':<4}{'status':<9}{'§':<10}{'budget':>7}  title")
for ch in book.chapters:
    print(f"{ch.id:<4}{ch.status:<9}{ch.survey_section:<10}{ch.cpu_budget_s:>6}s  {ch.title}")
assert [c.id for c in book.chapters] == sorted(c.id for c in book.chapters)
assert all(c.cpu_budget_s <= 120 for c in book.chapters), "every chapter must run in 2 minutes at tiny"

# %% [markdown]
# ## How to use the book
#
# * **Read** the executed HTML book (`make book` builds it under `_build/html`) or the `.ipynb` files,
#   which are saved with their outputs.
# * **Run** it yourself with `make lab`, which opens JupyterLab on `notebooks/`. Every notebook is also
#   stored as a plain Python file (`NN_slug.py`, jupytext "percent" format) for reading diffs.
# * **Use the library.** Everything a notebook builds lives in `vlm_primer`, documented and tested. A
#   notebook may write a piece inline to teach it, then checks that it equals the package version.
# * **Do the exercises.** Every chapter ends with 4–8 exercises. Write your answer in the notebook and
#   call `check("NN.k", answer)` from `vlm_primer.exercises`: it runs hidden tests and tells you what
#   is wrong — a wrong shape, a factor off, a case missed — without giving the answer away.
# * **Look words up.** Terms link to the book's glossary, which gives each one in English and in
#   Korean (as the study notes write it); citations link to the bibliography.
#
# ### The scale knob
#
# One environment variable, `VLM_PRIMER_SCALE`, chooses the presets of every model in every notebook:
#
# | scale | meant for | typical image size |
# |---|---|---|
# | `tiny` (default) | a laptop CPU: each chapter in ≤ 2 minutes | 32–64 px (chapter 02 trains at 48 px) |
# | `small` | a single consumer GPU, minutes to an hour | 64–128 px |
# | `base` | the paper configurations (e.g. ViT-B/16), GPUs | 224×224 |
#
# ```bash
# VLM_PRIMER_SCALE=small jupyter lab notebooks/
# ```
#
# The same knob, read by `vlm_primer.get_scale()`, drives `PresetConfig.from_preset()`: call it with
# no name and you get the preset of the current scale. Here is what the knob means for the vision
# transformer that most chapters share — the parameter counts are computed from the presets, not typed:

# %%
from vlm_primer.nn import ViT, ViTConfig

rows = []
for name in ("tiny", "small", "base"):
    cfg = ViTConfig.from_preset(name)
    n_params = sum(p.numel() for p in ViT(cfg).parameters())
    rows.append((name, cfg, n_params))
    print(f"{name:<6} {cfg.image_size:>4}px patch {cfg.patch_size:>2}  dim {cfg.dim:>4}  depth {cfg.depth:>2}"
          f"  heads {cfg.heads:>2}  → {n_params / 1e6:8.2f} M parameters")
assert rows[0][2] < rows[1][2] < rows[2][2]
assert 80e6 < rows[2][2] < 90e6, "the base preset is ViT-B/16, about 86 M parameters"

fig, ax = plt.subplots(figsize=(5, 3))
ax.bar([r[0] for r in rows], [r[2] for r in rows], color=["#93c5fd", "#60a5fa", "#2563eb"])
ax.set_yscale("log")
ax.set_ylabel("parameters (log scale)")
ax.set_title("ViT presets behind VLM_PRIMER_SCALE")
plt.tight_layout()
plt.show()

# %% [markdown]
# The current scale is also respected when a preset name is omitted, and an unknown preset is a clear
# error rather than a silent fallback:

# %%
assert ViTConfig.from_preset() == ViTConfig.from_preset(SCALE)
try:
    ViTConfig.from_preset("huge")
except ValueError as err:
    print("ValueError:", err)
else:
    raise AssertionError("an unknown preset must raise")

# %% [markdown]
# ### The zoo
#
# Later chapters start from pretrained parts — a vision tower that already tells a red circle from a
# blue square, a language model that already speaks the world's language — rather than training them
# inside their two-minute budget. `vlm_primer.zoo` keeps them as small fp16 safetensors files in
# `data/zoo/`, each with a **card**: the config, the recipe and a hash of its source, the exact
# command that rebuilds it on a laptop (`python -m vlm_primer.zoo build NAME --overwrite`, or
# `make zoo` for all), and its quality measured on a fixed evaluation set. The tests re-measure every
# card from its file, so a card cannot drift from the weights it describes. `python -m vlm_primer.zoo
# export NAME DIR` writes a model as its `transformers` class (`CLIPModel`, `SiglipModel`,
# `LlamaForCausalLM`), so the ecosystem's tools run on it.

# %%
from vlm_primer.zoo import MODELS, card, load

for name in MODELS:
    c = card(name)
    quality = ", ".join(f"{k} {v:.4g}" for k, v in c["quality"].items())
    print(f"{name:<16} {c['model']:<9} {c['params'] / 1e6:4.2f} M params, {c['bytes'] / 1e6:3.1f} MB, "
          f"rebuilt in {c['train_seconds'] / 60:.1f} min\n{'':<16} {quality}\n{'':<16} {c['command']}")
start = time.perf_counter()
clip_tiny = load("clip-tiny")
print(f"load('clip-tiny') took {1000 * (time.perf_counter() - start):.0f} ms (verified against its card's SHA-256)")
assert card("clip-tiny")["quality"]["zero_shot_top1"] >= 0.85

# %% [markdown]
# ## What comes next
#
# Chapter 01 introduces **Shapes World**, the small controllable world of coloured shapes that every
# later chapter trains on. Because we render every scene from a scene graph, we know the truth about
# every image: which captions are true, which hard negatives are false, and which attribute–shape
# combinations a model has never seen. That is what lets a CPU-sized model teach real lessons about
# contrastive learning, compositionality and hallucination.
#
# ## Summary
#
# * VLMs fall into four families by training objective — contrastive, masking, generative, and
#   pretrained backbones joined by a connector — and many models combine objectives.
# * The book follows the survey's order; `book.toml` lists the chapters, their survey sections and
#   their CPU budgets, and the table above is read from it.
# * Pretrained parts come from the **zoo** (`vlm_primer.zoo.load`), each with a card and the command
#   that rebuilds it; the tests re-measure every card.
# * One knob, `VLM_PRIMER_SCALE`, picks `tiny` (laptop CPU), `small` or `base` (the paper
#   configurations) for every model; the ViT presets above range from a fraction of a million to 86 M
#   parameters.
#
# ## Exercises
#
# 1. **The four families** (`00.1`). Map each of CLIP, SigLIP, Llip, FLAVA, MaskVLM, VisualBERT, CoCa,
#    Parti, Stable Diffusion, LLaVA, BLIP-2, Flamingo, MiniGPT-4 and Frozen to `"contrastive"`,
#    `"masking"`, `"generative"` or `"pretrained backbones"`, as in the table above.
# 2. **Tokens of a ViT** (`00.2`). Write `num_patches(image_size, patch_size)`: how many patch tokens
#    does a ViT see? How many for ViT-L/14 at 336 px?
# 3. **Parameters of a ViT** (`00.3`). Write `vit_params(cfg)` from a `ViTConfig` alone: the patch
#    embedding, positions, class token, per block two LayerNorms, attention and the MLP, and the
#    LayerNorms outside the blocks: the final one (`final_norm`) and, when `pre_norm` is set, CLIP's
#    `ln_pre` after the embeddings. Check it against the counts printed above.
# 4. **The memory bill** (`00.4`). Training in fp32 with AdamW keeps, for each parameter, the weight,
#    its gradient and two moments. Write `training_bytes(n_params)` and evaluate it for ViT-B/16.

# %%
from vlm_primer.exercises import check

families = {}  # your answer: {"CLIP": "contrastive", ...}


def num_patches(image_size, patch_size):
    raise NotImplementedError  # your code here


def vit_params(cfg):
    raise NotImplementedError


def training_bytes(n_params):
    raise NotImplementedError


for exercise_id, answer in [("00.1", families), ("00.2", num_patches), ("00.3", vit_params), ("00.4", training_bytes)]:
    check(exercise_id, answer)
