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
# # 01 · Shapes World: a controllable world of scenes and captions
#
# Every model in this book is trained and tested on **Shapes World**, a tiny synthetic world of
# colored shapes on a dark background. Why not real photos? The survey gives three reasons in its
# sections on data (§3.1.3, *synthetic data*) and evaluation (§4.1.6–4.1.8):
#
# 1. **Negatives are hard to make from real data.** To test whether a model understands "a horse
#    eating grass" it must reject "grass eating a horse" (ARO, Yuksekgonul et al., 2023) or tell two
#    images apart whose captions use the same words in a different order (Winoground, Thrush et al.,
#    2022). With real photos someone has to write and check each negative by hand.
# 2. **Failures are hard to explain.** When a model fails on a COCO image, did it miss the object or
#    the relation? Real captions are short, ambiguous and biased ("a cup *on* a table").
# 3. **Synthetic scenes are controllable.** PUG {cite:p}`bordes2023pug` renders scenes with a game
#    engine and changes one factor at a time — add an animal, move it left or right — and found that
#    VLMs are at chance on spatial relations. CLEVR {cite:p}`johnson2017clevr` did the same for visual
#    question answering, with careful rules so that every question has one unambiguous answer.
#
# Shapes World is our PUG/CLEVR: a {term}`scene graph` is the single source of truth, and everything
# else — the image, the boxes, the captions, the {term}`hard negatives <hard negative>`, the answers — is computed from it.
# Because we know the truth, every caption is checked to be true and every negative to be false.
# It is also small enough that a model learns it in minutes on a laptop CPU.
#
# **After this chapter you can**
#
# * describe a scene as a scene graph and render it, with its boxes, at any resolution;
# * generate captions that are true by construction, and hard negatives that are false by construction;
# * build Winoground pairs and a compositional split of held-out colour–shape pairs;
# * tokenize the world's text and load it as training batches;
# * generate balanced questions, POPE probes and LLaVA-style instruction data, and measure what a
#   blind baseline gets from the question text alone.

# %%
import textwrap
import time
from collections import Counter

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display
from torch.utils.data import DataLoader

from vlm_primer import get_scale, seed_everything

seed_everything(0)
SCALE = get_scale()
print(f"VLM_PRIMER_SCALE = {SCALE!r}")

# %%
from vlm_primer.text import Tokenizer, encode_chat, format_chat
from vlm_primer.world import (
    COLORS,
    DEFAULT_HELD_OUT,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    ShapesCaptionDataset,
    WorldConfig,
    describe,
    hard_negatives,
    holds,
    make_collate,
    paraphrases,
    render,
    sample_scene,
    split_scene,
    winoground_pair,
    world_words,
)
from vlm_primer.world.render import object_coverage

config = WorldConfig.from_preset(SCALE)
print(config)


def show(ax, image, title=None, box=None):
    """Draw a (3, H, W) image (and optional pixel boxes) on a matplotlib axis."""
    ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
    if box is not None:
        for x0, y0, x1, y1 in box.tolist():  # pixel (i, j) is centred at (j, i) in imshow
            ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="w", lw=0.8))
    if title:
        ax.set_title(textwrap.fill(title, 30), fontsize=8)
    ax.axis("off")


# %% [markdown]
# ## The world
#
# The vocabulary is deliberately small: **8 colors, 6 shapes, 2 sizes**. The colors are saturated
# hues chosen to stay distinct after anti-aliasing; the diamond is a narrow rhombus so that it never
# looks like a rotated square. Here is every color–shape composition:

# %%
print(f"{len(COLORS)} colors: {list(COLORS)}\n{len(SHAPES)} shapes: {list(SHAPES)}\n{len(SIZES)} sizes: {list(SIZES)}")
tiles = [[render(Scene((Obj(shape, color, "large"),)), 48) for shape in SHAPES] for color in COLORS]
mosaic = torch.cat([torch.cat(row, dim=2) for row in tiles], dim=1)  # (3, 8*48, 6*48)
fig, ax = plt.subplots(figsize=(4.5, 6))
ax.imshow(mosaic.permute(1, 2, 0).numpy(), extent=(0, len(SHAPES), len(COLORS), 0))
ax.set_xticks(np.arange(len(SHAPES)) + 0.5, SHAPES, rotation=45)
ax.set_yticks(np.arange(len(COLORS)) + 0.5, list(COLORS))
ax.set_title("all 48 color × shape compositions")
plt.show()
assert len(COLORS) * len(SHAPES) == 48

# %% [markdown]
# ## Scene graphs
#
# A `Scene` is a tuple of `Obj`s: shape, color, size, position `x, y ∈ [0, 1]` (y points *down*,
# like image rows), rotation and texture. `sample_scene` draws one with CLEVR's rules:
#
# * objects do not overlap (center distance ≥ `spacing` × the sum of their radii), and every object
#   keeps at least `min_visible` of its pixels;
# * a spatial relation ("left of", "above", …) is only *defined* when the two objects are more than
#   `margin` apart along that axis, and every pair is placed so that at least one axis is clear.
#   Captions use clear relations only, so a relation is never ambiguous.
#
# Sampling is deterministic: the same `numpy.random.Generator` state gives the same scene.

# %%
scene = sample_scene(np.random.default_rng(0), config, num_objects=3)
for obj in scene:
    print(obj)
assert scene == sample_scene(np.random.default_rng(0), config, num_objects=3)

# %% [markdown]
# ## Rendering
#
# The renderer turns a scene graph into a float tensor `(3, H, W)` in `[0, 1]` at any resolution.
# Each shape is a **signed distance function** $d(p)$: negative inside, positive outside, measured
# in pixels. Near a straight edge the fraction of a pixel covered by the shape is about
# $\mathrm{clip}(0.5 - d(p), 0, 1)$, so edge pixels get intermediate values — *anti-aliasing* for
# the price of one `clip`. Objects are alpha-composited in order, and each gets a tight box in pixels.

# %%
_, _, cov = object_coverage(Obj("star", "white", "large", x=0.5, y=0.5), 32)
edge = (cov > 0) & (cov < 1)
print(f"star at 32x32: {int((cov == 1).sum())} fully covered pixels, {int(edge.sum())} partially covered edge pixels")
assert edge.sum() > 10

fig, axes = plt.subplots(1, 3, figsize=(9, 3))
axes[0].imshow(cov, cmap="gray", interpolation="nearest"); axes[0].set_title("coverage (anti-aliased)")
axes[1].imshow(cov > 0.5, cmap="gray", interpolation="nearest"); axes[1].set_title("hard threshold (aliased)")
show(axes[2], render(scene, 256), "the same scene at 256x256")
for a in axes[:2]:
    a.axis("off")
plt.show()

# %% [markdown]
# A sample of training scenes at the world's default resolution of 64×64 (chapter 02 trains at 48×48), with boxes and one caption
# each. The captions below each image come from the grammar of the next section.

# %%
train = ShapesCaptionDataset("train", 10_000, config=config)
fig, axes = plt.subplots(3, 4, figsize=(10, 9.5))
for ax, i in zip(axes.flat, range(12)):
    item = train[i]
    show(ax, item["image"], item["caption"], item["boxes"])
plt.tight_layout()
plt.show()

# %% [markdown]
# Rendering is fast: only the pixels inside each object's box are evaluated. (The benchmark
# `benchmarks/bench_render.py` measures it on one core; the target is 2,000 scenes/s at 64×64.)

# %%
scenes = [sample_scene(np.random.default_rng(i), config) for i in range(500)]
t0 = time.perf_counter()
images = [render(s, config.image_size) for s in scenes]
print(f"rendered {len(scenes) / (time.perf_counter() - t0):,.0f} scenes/s here (not asserted: timings vary)")

# %% [markdown]
# ## Captions
#
# Captions come from a small grammar. The grammar first builds a **meaning** — a frozen dataclass —
# and only then writes it as text, drawing templates and synonyms ("big"/"large", "disk"/"circle",
# "beneath"/"below"). Five kinds of meaning:
#
# | kind | meaning | example |
# |---|---|---|
# | `objects` | every object with all its attributes | "a small red circle and a large blue square" |
# | `attribute` | one object, some attributes | "there is a big yellow triangle" |
# | `relation` | a clear spatial relation between two objects | "the star is to the left of the hexagon" |
# | `count` | exactly *n* objects match | "there are two blue shapes" |
# | `absent` | negation that is true of the scene | "there is no green star" |
#
# `holds(meaning, scene)` decides truth **from the scene graph alone**. The same meaning has many
# paraphrases — a relation can even be read backwards ("X left of Y" = "Y right of X").

# %%
rng = np.random.default_rng(1)
scene = sample_scene(rng, config, num_objects=3)
captions = describe(scene, rng, margin=config.margin)
fig, ax = plt.subplots(figsize=(2.6, 2.6))
show(ax, render(scene, 128))
plt.show()
for cap in captions:
    assert holds(cap.meaning, scene, config.margin)
    print(f"{cap.kind:>9}: {cap.text}")
    for p in paraphrases(cap.meaning, rng, 3)[1:]:
        print(f"{'':>9}  = {p}")

# %% [markdown]
# Every generated caption is checked against its scene graph. Here we check every caption of 400
# random scenes (the count is printed):

# %%
rng = np.random.default_rng(2)
checked = Counter()
for _ in range(400):
    s = sample_scene(rng, config)
    for cap in describe(s, rng, margin=config.margin):
        assert holds(cap.meaning, s, config.margin), cap
        checked[cap.kind] += 1
print(f"{sum(checked.values())} captions checked true: {dict(checked)}")
assert sum(checked.values()) >= 1500

# %% [markdown]
# ## Hard negatives
#
# A model that only spots *which words* appear in a caption can match "a red circle and a blue
# square" without seeing which color belongs to which shape — a "bag of words"
# {cite:p}`yuksekgonul2023aro`. Hard negatives catch it: each one is an edit of the caption's **meaning**, written with the
# same template and synonyms, and kept only if it is *false* of the scene.
#
# | kind | edit |
# |---|---|
# | `binding` | swap an attribute between two objects |
# | `relation` | swap the arguments of a relation, or flip it |
# | `shuffle` | swap the nouns (word order) |
# | `replace` | replace one attribute or object, a count, or the absent object |

# %%
rng = np.random.default_rng(3)
scene = sample_scene(rng, config, num_objects=3)
fig, ax = plt.subplots(figsize=(2.6, 2.6))
show(ax, render(scene, 128))
plt.show()
kinds_seen = set()
for cap in describe(scene, rng, kinds=("objects", "relation", "count", "absent"), margin=config.margin):
    print(f"TRUE   {cap.text}")
    for neg in hard_negatives(cap, scene, rng, margin=config.margin):
        assert not holds(neg.meaning, scene, config.margin)
        kinds_seen.add(neg.kind)
        print(f"FALSE  {neg.text}   ({neg.kind})")
    print()
assert kinds_seen == {"neg_binding", "neg_relation", "neg_shuffle", "neg_replace"}

# %% [markdown]
# ## A Winoground pair
#
# Winoground gives two images and two captions that contain **exactly the same words** in a
# different order; caption 0 matches image 0 and caption 1 matches image 1. A model scores a point
# only if it pairs both correctly. We build such pairs by editing a scene graph: swap the two
# objects' colors (attribute binding) or their positions (relation).

# %%
rng = np.random.default_rng(4)
fig, axes = plt.subplots(1, 4, figsize=(11, 3.6))
for k, kind in enumerate(("binding", "relation")):
    pair = winoground_pair(rng, config, kind)
    for j in range(2):
        s, c = pair.scenes[j], pair.captions[j]
        show(axes[2 * k + j], render(s, 128), f"{kind} {j}: {c.text}")
        assert holds(c.meaning, s, config.margin) and not holds(c.meaning, pair.scenes[1 - j], config.margin)
    words = [Counter(c.text.split()) for c in pair.captions]
    assert words[0] == words[1], "the two captions must use the same multiset of words"
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Splits and compositional generalisation
#
# Does a model understand "red" and "triangle" separately, or has it memorised the pairs it saw? To
# find out we **hold out** some compositions. The `train`, `val` and `test` splits never contain a
# held-out color–shape pair; the `compositional` split contains at least one per scene. Every color
# and every shape still appears in training — only these *bindings* are new:

# %%
print("held-out compositions:", ", ".join(f"{c} {s}" for c, s in DEFAULT_HELD_OUT))


def composition_counts(split: str, n: int) -> np.ndarray:
    counts = np.zeros((len(COLORS), len(SHAPES)), dtype=int)
    for i in range(n):
        s, _ = split_scene(split, i, 0, config)
        for o in s:
            counts[list(COLORS).index(o.color), SHAPES.index(o.shape)] += 1
    return counts


train_counts, comp_counts = composition_counts("train", 3000), composition_counts("compositional", 1000)
held_idx = [(list(COLORS).index(c), SHAPES.index(s)) for c, s in DEFAULT_HELD_OUT]
assert all(train_counts[i, j] == 0 for i, j in held_idx), "a held-out composition leaked into train"
assert all(comp_counts[i, j] > 0 for i, j in held_idx)
assert (train_counts.sum(1) > 0).all() and (train_counts.sum(0) > 0).all()  # every color and shape is seen

fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
for ax, counts, title in ((axes[0], train_counts, "train (3,000 scenes)"),
                          (axes[1], comp_counts, "compositional test (1,000 scenes)")):
    im = ax.imshow(counts, cmap="viridis")
    ax.set_xticks(range(len(SHAPES)), SHAPES, rotation=45)
    ax.set_yticks(range(len(COLORS)), list(COLORS))
    for i, j in held_idx:
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2))
    ax.set_title(title)
    plt.colorbar(im, ax=ax, shrink=0.8)
plt.suptitle("object counts per color × shape (red frames: held-out compositions)")
plt.tight_layout()
plt.show()
print(f"held-out cells in train: {[int(train_counts[i, j]) for i, j in held_idx]}")

# %% [markdown]
# Scene *i* of a split is a pure function of `(seed, split, i)`, so datasets need no storage,
# workers never disagree, and the ordinary splits are disjoint by construction (each split draws
# from its own random stream):

# %%
val = ShapesCaptionDataset("val", 10_000, config=config)
assert train[5]["scene"] == ShapesCaptionDataset("train", 10_000, config=config)[5]["scene"]
train_set = {split_scene("train", i, 0, config)[0] for i in range(500)}
val_set = {split_scene("val", i, 0, config)[0] for i in range(500)}
print(f"scenes shared by 500 train and 500 val scenes: {len(train_set & val_set)}")
assert not train_set & val_set

# %% [markdown]
# ## Statistics
#
# What does the training distribution look like? Object counts are uniform over the preset's range,
# colors and shapes are (nearly) uniform except for the held-out pairs, and captions are short.

# %%
tok = Tokenizer.load()
n_stats = 1000
items = [train[i] for i in range(n_stats)]
n_objects = Counter(len(it["scene"]) for it in items)
colors = Counter(o.color for it in items for o in it["scene"])
shapes = Counter(o.shape for it in items for o in it["scene"])
lengths = [len(tok.encode(it["caption"])) for it in items]

fig, axes = plt.subplots(1, 4, figsize=(14, 3))
axes[0].bar(sorted(n_objects), [n_objects[k] for k in sorted(n_objects)]); axes[0].set_title("objects per scene")
axes[0].set_xticks(sorted(n_objects))
axes[1].bar(list(COLORS), [colors[c] for c in COLORS], color=[COLORS[c] for c in COLORS], edgecolor="k")
axes[1].set_title("colors"); axes[1].tick_params(axis="x", rotation=60)
axes[2].bar(SHAPES, [shapes[s] for s in SHAPES]); axes[2].set_title("shapes"); axes[2].tick_params(axis="x", rotation=60)
axes[3].hist(lengths, bins=range(min(lengths), max(lengths) + 2)); axes[3].set_title("caption length (tokens, with EOS)")
plt.tight_layout()
plt.show()
print(f"objects/scene: {dict(sorted(n_objects.items()))}; caption length: mean {np.mean(lengths):.1f}, max {max(lengths)} tokens")
assert set(n_objects) == set(range(1, config.max_objects + 1))
assert max(lengths) <= 32, "every caption fits in a 32-token context"

# %% [markdown]
# ## The tokenizer
#
# Text models read token ids. Our tokenizer is a {term}`byte-level BPE` {cite:p}`sennrich2016bpe` (the GPT-2 recipe, built with
# Hugging Face `tokenizers`) trained on a corpus generated from the grammar, plus question/answer
# and chat templates the later chapters need. Byte-level means any string can be encoded — nothing
# is `<unk>` — while the small vocabulary (about 800 tokens) makes every word of the world a single
# token. Special tokens have fixed ids: `<pad>=0`, `<bos>`, `<eos>`, `<mask>`, `<image>` and the chat
# roles. `python -m vlm_primer.text.build` rebuilds `data/tokenizer.json` byte for byte.

# %%
print(tok)
text = "a big violet rhombus beneath a small cyan hexagon"
ids = tok.encode(text, add_bos=True)
print(ids)
print(tok.tokenize(text))
assert tok.decode(ids) == text
single = [w for w in world_words() if len(tok.encode(w, add_eos=False)) == 1]
print(f"{len(single)} / {len(world_words())} world words are a single token")
assert len(single) == len(world_words())
print(tok.tokenize("Unseen wörds still encode: 🙂"))

# %% [markdown]
# Batches are padded with `<pad>` and carry an attention mask. When a caption is cut to `max_length`,
# `<eos>` stays the last real token — CLIP's text encoder reads its sentence embedding there.

# %%
batch = tok(["a red circle left of a big blue square", "three stars"], max_length=8)
print(batch["input_ids"])
print(batch["attention_mask"])
assert (batch["input_ids"][torch.arange(2), batch["attention_mask"].sum(1) - 1] == tok.eos_id).all()

# %% [markdown]
# Later chapters talk to models in **chat** form. `format_chat` writes a conversation with role
# tokens and the `<image>` placeholder that the model replaces with visual tokens:

# %%
chat = format_chat([
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "how many stars are there?"}]},
    {"role": "assistant", "content": "two"},
])
print(chat)
print(tok.tokenize(chat))

# %% [markdown]
# ## Datasets for training
#
# `ShapesCaptionDataset` yields images with captions (and paraphrases, other true statements, boxes,
# hard negatives on request); `make_collate` tokenises a batch. With one object per scene each item
# also carries a class label from the 48 `classnames` — chapter 02 uses this for zero-shot
# classification.

# %%
loader = DataLoader(train, batch_size=16, collate_fn=make_collate(tok, max_length=32))
b = next(iter(loader))
print({k: tuple(v.shape) for k, v in b.items() if isinstance(v, torch.Tensor)})
assert b["pixel_values"].shape == (16, 3, config.image_size, config.image_size)

single_obj = ShapesCaptionDataset("train", 100, config=config, num_objects=(1, 1))
print(len(single_obj.classnames), "classes, e.g.", single_obj.classnames[:4], "| item 0:", single_obj[0]["label"])
assert len(single_obj.classnames) == 48

# %% [markdown]
# ## Questions, probes and instructions
#
# Chapters 04–08 need more than captions: questions with answers (visual question answering),
# hallucination probes, and the instruction conversations that LLaVA trains on
# {cite:p}`liu2023llava`. All of them are read off the scene graph, so every answer is true by
# construction (the tests check each one against the graph).
#
# **Questions** come in eight types: three yes/no types (*exist*: "is there a red circle in the
# image?", *attribute*: "is the star small?", *relation_yn*: "is the square above the disk?"),
# four that name an attribute (*color*, *shape*, *size*, and *relation*: "is the circle left, right,
# above or below the star?") and *count*. VQAv2 {cite:p}`goyal2017vqav2` showed why they must be
# **balanced**: in the first VQA dataset a model that never looked at the image answered "yes" to
# "is there a …?" and "2" to "how many …?" often enough to score well. So a yes/no answer is drawn
# first (yes or no, half each), and a count is drawn uniformly among the counts the scene allows.
# Each question carries VQAv2's ten reference answers (the canonical word seven times and a synonym
# three times: `purple`/`violet`, `two`/`2`), so VQAv2's official soft accuracy applies to our models.

# %%
from vlm_primer.world import (QUESTION_TYPES, PopeStats, ShapesInstructDataset, ShapesPOPEDataset,
                              ShapesVQADataset, accuracy_by_type, blind_prior, parse_box, pope_probes)

vqa_val = ShapesVQADataset("val", 1500, config=config)
examples = {}
for i in range(200):
    q = vqa_val.question(i)
    examples.setdefault(q.qtype, (i, q))
fig, axes = plt.subplots(1, 4, figsize=(11, 3.2))
for ax, qtype in zip(axes, ("relation_yn", "count", "color", "relation")):
    i, q = examples[qtype]
    show(ax, vqa_val[i]["image"], f"{q.question} → {q.answer}")
fig.suptitle("Four of the eight question types, with the answer read off the scene graph")
plt.show()
for qtype in QUESTION_TYPES:
    i, q = examples[qtype]
    print(f"{qtype:>11} | {q.question:<52} | {q.answer:<6} | {q.sentence}")

# %% [markdown]
# ### The control: a blind baseline
#
# Before any model answers these questions we need to know what the question *text* alone gives
# away. The {term}`blind baseline` never sees the image: for each question it predicts the answer
# most often given to the same question text in training (falling back to the most frequent answer
# of its type). Every VQA number in this book is printed beside it.

# %%
vqa_train = ShapesVQADataset("train", 3000, config=config)
train_qs = [vqa_train.question(i) for i in range(len(vqa_train))]
val_qs = [vqa_val.question(i) for i in range(len(vqa_val))]
prior = blind_prior(train_qs)
blind = accuracy_by_type(val_qs, [prior.predict(q) for q in val_qs])
answers_per_type = {t: len({q.answer for q in train_qs if q.qtype == t}) for t in QUESTION_TYPES}
print(f"{'type':>11}  {'questions':>9}  {'blind':>6}  {'chance':>6}")
for t in QUESTION_TYPES:
    n = sum(q.qtype == t for q in val_qs)
    print(f"{t:>11}  {n:>9}  {blind[t]:>6.1%}  {1 / answers_per_type[t]:>6.1%}")
print(f"{'all':>11}  {len(val_qs):>9}  {blind['all']:>6.1%}")
assert abs(blind["all"] - 0.4) < 0.05  # the summary: about 40 % over all types
assert all(abs(blind[t] - 0.5) < 0.1 for t in ("exist", "attribute", "relation_yn"))
assert blind["count"] > 1.5 / answers_per_type["count"]  # the control can see a bias where there is one

# %% [markdown]
# The balanced yes/no types sit at a coin flip, and colour, shape and size at chance. The baseline
# is not broken, though (the control works): where the text does give the answer away, it finds it.
# "How many red circles are there?" is usually *zero* or *one* in scenes of one to three objects, so
# on *count* it scores about twice chance. A model's count accuracy means something only above the
# blind row, not above chance.
#
# ### POPE: probing object hallucination
#
# POPE {cite:p}`li2023pope` measures {term}`object hallucination` with yes/no probes, "is there a
# ⟨object⟩ in the image?": half name objects that are present, half name absent ones, drawn at
# *random*, among the objects most frequent in the training data (*popular*), or among those that
# co-occur most with the objects present (*adversarial*). On COCO the adversarial probes are the
# hardest, because models learn which objects go together. Here an object is a colour–shape pair.

# %%
stats = PopeStats.from_scenes(split_scene("train", i, 0, config)[0] for i in range(2000))
scene0, _ = split_scene("val", 3, 0, config)
print("objects:", ", ".join(o.describe() for o in scene0.objects))
for setting in ("random", "popular", "adversarial"):
    probes = pope_probes(scene0, np.random.default_rng(0), setting, 3, stats)
    print(f"{setting:>11}: " + "; ".join(f"{q.question[9:-14]} → {q.answer}" for q in probes))

neg_freq = {}
for setting in ("random", "popular", "adversarial"):
    pope = ShapesPOPEDataset("val", 200, config=config, setting=setting)
    yes = np.mean([q.answer == "yes" for _, q in pope.probes])
    negs = [q.meaning.np for _, q in pope.probes if q.answer == "no"]
    neg_freq[setting] = np.mean([stats.frequency[(n.color, n.shape)] for n in negs])
    print(f"{setting:>11}: {len(pope)} probes, {yes:.0%} yes; mean training frequency of the negatives "
          f"{neg_freq[setting]:.1f}")
    assert yes == 0.5
assert neg_freq["popular"] >= neg_freq["random"]
comp_freq = {(c, s): stats.frequency[(c, s)] for c in COLORS for s in SHAPES}
seen_freq = np.array([f for f in comp_freq.values() if f > 0])
n_unseen = sum(f == 0 for f in comp_freq.values())
print(f"training frequency of the {len(seen_freq)} compositions that occur: {seen_freq.min()} to {seen_freq.max()} "
      f"(mean {seen_freq.mean():.0f}, std {seen_freq.std():.1f}; uniform sampling: about "
      f"{np.sqrt(seen_freq.mean()):.1f}); the {n_unseen} held-out compositions: 0")
print(f"negatives' frequency relative to random: popular {neg_freq['popular'] / neg_freq['random']:.2f}x, "
      f"adversarial {neg_freq['adversarial'] / neg_freq['random']:.2f}x")
assert n_unseen == len(DEFAULT_HELD_OUT) and neg_freq["random"] < neg_freq["adversarial"] < neg_freq["popular"]
assert seen_freq.std() < 1.5 * np.sqrt(seen_freq.mean()), "the spread of uniform (multinomial) sampling"

# %% [markdown]
# What the toy can and cannot show: Shapes World draws each object's colour–shape pair uniformly from
# the allowed ones, independently of the other objects, so no composition is truly popular and
# co-occurrence carries no signal. The popular negatives are still more frequent in training than
# random ones (the ratio is printed), for two reasons that have nothing to do with popularity: random
# negatives include the held-out compositions, which never occur in training, and "popular" picks the
# compositions that sampling noise favoured — the frequencies of those that occur spread as much as
# uniform sampling predicts (printed). Adversarial negatives sit in between, since a composition that
# is more frequent also co-occurs more.
# POPE's gap between random and adversarial probes comes from skewed co-occurrence in real data, which
# no chapter of this book builds; chapter 07 measures models in all three settings, and chapter 06b
# uses POPE to score preference tuning.
#
# ### Instruction data, as LLaVA made it
#
# LLaVA gave a text-only GPT-4 the captions and boxes of a COCO image and asked for three kinds of
# data: a multi-turn *conversation*, a *detailed description* and *complex reasoning*. Our teacher
# reads the scene graph instead and writes the same three kinds, plus *grounding* (a referring
# expression answered with a box, `<box>x1,y1,x2,y2</box>` in hundredths of the image side). Each
# sample is a list of chat messages; the first user turn starts with `<image>`, where a VLM splices
# in the image tokens, and `encode_chat` marks only the assistant's tokens as training targets.

# %%
instruct = ShapesInstructDataset("val", 200, config=config)
seen = {}
for i in range(len(instruct)):
    item = instruct[i]
    seen.setdefault(item["kind"], item)
for kind in ("conversation", "detail", "reasoning", "grounding"):
    print(f"--- {kind}")
    for m in seen[kind]["messages"]:
        print(f"{m['role']:>9}: {textwrap.fill(m['content'], 100, subsequent_indent=' ' * 11)}")

ids, target = encode_chat(tok, seen["conversation"]["messages"])
print(f"\nconversation: {len(ids)} tokens, {sum(target)} of them trained (the assistant's answers)")
assert 0 < sum(target) < len(ids)

item = seen["grounding"]
x0, y0, x1, y1 = (v / 100 * config.image_size for v in parse_box(item["messages"][1]["content"]))
fig, ax = plt.subplots(figsize=(3, 3))
show(ax, item["image"], item["messages"][0]["content"].removeprefix("<image>"), torch.tensor([[x0, y0, x1, y1]]))
plt.show()

# %% [markdown]
# All three datasets are `torch` datasets like `ShapesCaptionDataset`, deterministic by seed, with
# the held-out compositions kept out of `train`; `export_webdataset(dataset, folder)` writes any of
# them as WebDataset shards for training at scale.

# %% [markdown]
# ## Explore
#
# Move the sliders to sample other scenes (in a live Jupyter session; the saved notebook and the HTML
# book show the controls at their default values).

# %%
explorer_out = widgets.Output()


def explore(seed=0, num_objects=3, split="train", size=64, kind="relation"):
    """Sample scene `seed` of `split`, render it with boxes and print its captions and a negative."""
    cfg = config.replace(image_size=size, max_objects=max(num_objects, config.max_objects))
    s, r = split_scene(split, seed, 0, cfg, num_objects=num_objects)
    img, bx = render(s, size, return_boxes=True)
    fig, ax = plt.subplots(figsize=(3, 3))
    show(ax, img, f"{split} #{seed}", bx)
    plt.show()
    for cap in describe(s, r, margin=cfg.margin):
        marker = "→" if cap.kind == kind else " "
        print(f"{marker} {cap.kind:>9}: {cap.text}")
        if cap.kind == kind:
            for neg in hard_negatives(cap, s, r, margin=cfg.margin):
                print(f"  {'':>9}  ✗ {neg.text} ({neg.kind})")


controls = widgets.interactive(
    explore,
    seed=widgets.IntSlider(0, 0, 200, description="seed"),
    num_objects=widgets.IntSlider(3, 1, 6, description="objects"),
    split=widgets.Dropdown(options=["train", "val", "test", "compositional"], description="split"),
    size=widgets.Dropdown(options=[32, 64, 128], value=64, description="size"),
    kind=widgets.Dropdown(options=["objects", "attribute", "relation", "count", "absent"], value="relation",
                          description="negatives of", style={"description_width": "initial"}),
)
display(controls)

# %% [markdown]
# ## Summary
#
# * A **scene graph** is the single source of truth; images, boxes and text are functions of it.
# * The renderer is anti-aliased (signed distances → coverage) and fast enough to generate data on
#   the fly while training.
# * Captions are built from **meanings** and checked true; **hard negatives** edit the meaning and
#   are checked false; **Winoground pairs** reuse the same words in swapped roles.
# * Held-out compositions give a **compositional** test split; the ordinary splits are disjoint by seed.
# * A byte-level BPE keeps every world word one token, with stable special and chat tokens.
# * **Questions** are balanced so that the **blind baseline** stays near chance on yes/no (about 40 %
#   over all types); **POPE** probes and **instruction data** are read off the same scene graph.
#
# Next, chapter 02 trains CLIP and SigLIP on these pairs and asks: can they tell a red circle left of
# a blue square from a blue circle left of a red square?
#
# ## Exercises
#
# 1. **Spatial relations** (`01.1`). Write `relation(a, b, rel, margin)`: does object `a` clearly stand
#    `rel` (`"left"`, `"right"`, `"above"`, `"below"`) of object `b`, by more than `margin` (positions
#    are fractions of the image side, y pointing down)?
# 2. **Winoground pairs** (`01.2`). Write `same_words(a, b)`: do two captions use exactly the same words,
#    each as often, in any order?
# 3. **A held-out split** (`01.3`). Write `training_compositions(colors, shapes, held_out)`: every
#    colour–shape pair except the held-out ones. Why must every colour and every shape still occur?
# 4. **Anti-aliasing** (`01.4`). Write `disc_coverage(cx, cy, r, size)`: a `(size, size)` array with
#    the coverage $\mathrm{clip}(0.5 - d, 0, 1)$ of each pixel, where $d$ is the signed distance from the
#    pixel's centre to the circle of centre $(c_x, c_y)$ and radius $r$ (in pixels). Plot it next to a
#    hard threshold.
# 5. **A blind baseline** (`01.5`). Write `blind_accuracy(train, test)`: `train` and `test` are lists of
#    `(question, answer)` pairs. Predict for each test question the answer most often given to the same
#    question text in `train` (ties: the one seen first; the most frequent answer overall for a question never
#    seen) and return the accuracy. Why does it beat chance on *count* questions but not on *exist* questions?

# %%
from vlm_primer.exercises import check


def relation(a, b, rel, margin):
    raise NotImplementedError  # your code here


def same_words(a, b):
    raise NotImplementedError


def training_compositions(colors, shapes, held_out):
    raise NotImplementedError


def disc_coverage(cx, cy, r, size):
    raise NotImplementedError


def blind_accuracy(train, test):
    raise NotImplementedError


for exercise_id, answer in [("01.1", relation), ("01.2", same_words), ("01.3", training_compositions),
                            ("01.4", disc_coverage), ("01.5", blind_accuracy)]:
    check(exercise_id, answer)
