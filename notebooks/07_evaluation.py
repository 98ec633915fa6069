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
# # 07 · Responsible evaluation: every number with its baseline and its interval
#
# Survey §4 {cite:p}`bordes2024introduction` argues that evaluating vision-language models is hard in specific
# ways: metrics that reward fluency over truth, benchmarks a model can pass without looking at the image,
# {term}`object hallucination`, bias, memorization. On real benchmarks we can rarely say *why* a model fails. On Shapes World we
# can, because every object, attribute and answer is known: the argument the survey makes for PUG-style synthetic
# evaluation {cite:p}`bordes2023pug`. This chapter builds one harness that evaluates every model of the book, and
# teaches evaluation as measurement: each score beside its {term}`blind baseline` (what language alone gets) and with
# its {term}`confidence interval <bootstrap interval>` (what the choice of test items alone could move).
#
# **After this chapter you can**
#
# * run any model of the book on any suite it has the capability for, and read its record: score, interval, blind
#   baseline, breakdown;
# * compute VQA accuracy, CIDEr-D, CLIPScore, POPE, CHAIR, Winoground's three scores and WEAT as their official
#   code does, and say what each can and cannot see;
# * show that a benchmark is solvable without the image, and why a balanced benchmark is not;
# * tell a difference from noise with a bootstrap interval, and a finding from a seed accident;
# * plant a bias and measure it two ways, measure memorization against a reference model, and red-team a model
#   with a mitigation and its cost, each with its control.

# %%
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display
from scipy.stats import spearmanr

from vlm_primer import get_scale, seed_everything, zoo
from vlm_primer.evaluation import (bootstrap_ci, clip_score, evaluate, leaderboard, normalize_answer,
                                   paired_bootstrap_diff, plot_leaderboard, tint_association, tint_disparity,
                                   verify_premises, vqa_accuracy, wrap)
from vlm_primer.evaluation.captioning import cider_d, simple_tokenize
from vlm_primer.evaluation.memorization import dejavu_gap, dejavu_sets, recovery_rates
from vlm_primer.evaluation.suites import SUITES
from vlm_primer.text import Tokenizer
from vlm_primer.world import (NP, Exists, ShapesCaptionDataset, WorldConfig, caption_scene, hard_negative, holds,
                              paraphrases, render)
from vlm_primer.world.vocab import SIZE_WORDS
from vlm_primer.world.vqa import ten_answers

seed_everything(0)
SCALE = get_scale()
T_START = time.time()
tok = Tokenizer.load()
NAMES = ["clip-tiny", "clip-tiny-pairs", "siglip-tiny", "blip-tiny", "coca-tiny", "flava-tiny", "lm-tiny",
         "llava-tiny", "llava-next-tiny", "blip2-tiny", "instructblip-tiny", "flamingo-tiny", "ar-t2i-tiny",
         "dit-tiny"]
models = {name: wrap(name) for name in NAMES}
models["blip-tiny (ITM)"] = wrap("blip-tiny", head="itm", name="blip-tiny (ITM)")
print(f"VLM_PRIMER_SCALE = {SCALE!r}: every model here comes from the zoo at every scale")

# %% [markdown]
# ## The harness
#
# Every model of the book does some of four things, and every test is written against one of them: **match**
# (score how well a caption fits an image: a contrastive cosine, an {term}`image-text matching` head, or a
# language model's $\log P(\text{text})$ that never looks at the image), **caption**, **answer** a question, or
# **generate** an image. `wrap` finds out which a model can do; `evaluate(model, suite)` runs a suite that needs
# one of them, and refuses, naming what is missing, when the model cannot:

# %%
print(f"{'model':<18} capabilities")
for name, m in models.items():
    print(f"{name:<18} {', '.join(m.capabilities)}{'  (blind: never sees the image)' if m.blind else ''}")
print()
for s in SUITES.values():
    print(f"{s.name:<11} needs {s.needs:<8} {s.description}")
try:
    evaluate(models["clip-tiny"], "vqa")
except ValueError as err:
    print("\n", type(err).__name__, "-", err)

# %% [markdown]
# A suite draws its items from the **test split of the model's own world** (held-out colour-shape compositions stay
# held out), deterministically from `(n, seed)`, and returns one record: the per-item results, the score, its
# bootstrap 95 % interval, and the suite's blind baseline scored on the same items. Here `llava-tiny` on VQA:

# %%
vqa = evaluate(models["llava-tiny"], "vqa", n=400)
print({k: vqa[k] for k in ("model", "suite", "metric", "n", "score", "ci95", "items_per_second")})
print("blind baseline:", vqa["blind"])
for item in vqa["items"][:4]:
    print(f"  {item['question']:<45} -> {item['prediction']!r:<10} (answer {item['answer']!r}, value {item['value']})")

# %% [markdown]
# The widget runs any suite on any model that can take it (small `n`, so it answers in a second or two):

# %%
def show_record(model, suite, n):
    m = models[model]
    if SUITES[suite].needs not in m.capabilities:
        print(f"{model} cannot {SUITES[suite].needs!r}: pick another pair")
        return
    r = evaluate(m, suite, n=n, keep_items=False)
    print(leaderboard([r]))
    for t, b in r["breakdown"].items():
        print(f"  {t:<16} n={b['n']:<4} score {b['score']:.3f}   blind {b['blind']:.3f}")


picker = widgets.interactive(show_record, model=widgets.Dropdown(options=list(models), value="clip-tiny"),
                             suite=widgets.Dropdown(options=list(SUITES), value="aro"),
                             n=widgets.IntSlider(20, 5, 60, step=5))
display(picker)

# %% [markdown]
# ## Intervals
#
# A score measured on $n$ items is an estimate. The percentile bootstrap {cite:p}`efron1993bootstrap` ({term}`bootstrap interval`) asks how
# much it would move on another draw of items: resample the $n$ per-item values with replacement many times, and
# read the 2.5th and 97.5th percentiles of the resampled means. Its width shrinks like $1/\sqrt{n}$:

# %%
widths = {}
for n in (50, 200, 800):
    r = evaluate(models["llava-tiny"], "vqa", n=n, keep_items=False)
    widths[n] = r["ci95"][1] - r["ci95"][0]
    print(f"n = {n:>4}: {r['score']:.3f}  95% CI [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]  width {widths[n]:.3f}")
print(f"16 times the items: the interval {widths[50] / widths[800]:.1f} times narrower (1/sqrt(n) says 4)")
assert widths[800] < widths[50] / 2.5, "sixteen times the items should shrink the interval about four-fold"

# %% [markdown]
# Comparing two models, the right interval is **paired**: both score the same items, and each resample draws one set
# of items for both, so only their item-by-item difference counts. `clip-tiny` against `clip-tiny-pairs` on
# zero-shot classification:

# %%
zs = {name: evaluate(models[name], "zeroshot", n=100) for name in ("clip-tiny", "clip-tiny-pairs", "siglip-tiny")}
a, b = ([it["value"] for it in zs[name]["items"]] for name in ("clip-tiny", "clip-tiny-pairs"))
diff, lo, hi = paired_bootstrap_diff(a, b)
print(f"clip-tiny - clip-tiny-pairs: {diff:+.3f}, paired 95% CI [{lo:+.3f}, {hi:+.3f}] over {len(a)} items: "
      + ("no difference the items can tell" if lo < 0 < hi else "a difference"))

# %% [markdown]
# An interval over items says nothing about **training seeds**: a second run of the same recipe may land elsewhere.
# The zoo holds one seed per model, so every comparison in this chapter is *between these checkpoints*; chapter 05's
# `seed_verdict` and the `benchmarks/` seed runs are how the book answers the other question.
#
# ## VQA accuracy
#
# VQA v2 {cite:p}`goyal2017vqav2` scores a free-text answer against ten human answers: an answer counts fully when
# at least three annotators gave it, $\mathrm{acc}(a) = \min(\#\text{matches}/3, 1)$, averaged over the ten ways
# of leaving one annotator out. Before matching, the prediction goes through the official normalisation (lower case,
# punctuation, number words to digits, articles dropped); the references do not: the official script only applies
# its punctuation step to them (and not even that when all ten agree), because VQA v2 ships its references already
# normalised:

# %%
for raw in ("Two.", "the Circle", "A red one!", "yes, "):
    print(f"{raw!r:>14} -> {normalize_answer(raw)!r}")
answers = ["red"] * 2 + ["orange"] * 8
print("two of ten annotators said 'red':   ", round(vqa_accuracy("red", answers), 4))
print("eight of ten annotators said 'orange':", vqa_accuracy("Orange.", answers))
assert vqa_accuracy("red", answers) == 0.6 and vqa_accuracy("Orange.", answers) == 1.0
count_refs = ten_answers("two")  # the world's references for a count question whose answer is two
raw, normalised = vqa_accuracy("two", count_refs), vqa_accuracy("two", [normalize_answer(a) for a in count_refs])
print(f"references {count_refs}:")
print(f"  the right answer 'two' (normalised to '2') against them as they are: {raw:.2f}; "
      f"normalised first: {normalised}")
assert abs(raw - 0.9) < 1e-9 and vqa_accuracy("2", count_refs) == raw and normalised == 1.0
count = vqa["breakdown"]["count"]
print(f"llava-tiny's count score {count['score']:.3f} (blind {count['blind']:.3f}), out of 1")

# %% [markdown]
# Our world's references are not normalised that way: a count question's ten answers are the number word seven
# times and the digit three times. Fed to the official rule as they are, the right answer, "two" or "2", normalises
# to "2", matches only the three digits, and scores 0.9: a correct model would be capped below 1 on every count
# question. So the harness normalises the world's references first, as VQA v2's were before release, and every
# score below is out of 1. Any benchmark whose references come from elsewhere needs the same step.

# %%
vqa_models = ["llava-tiny", "instructblip-tiny", "flamingo-tiny", "blip2-tiny"]
vqa_records = {name: vqa if name == "llava-tiny" else evaluate(models[name], "vqa", n=400) for name in vqa_models}
types = list(vqa["breakdown"])
fig, ax = plt.subplots(figsize=(10, 3.2))
width = 0.16
for k, name in enumerate(vqa_models):
    ax.bar(np.arange(len(types)) + (k - 2) * width, [vqa_records[name]["breakdown"][t]["score"] for t in types],
           width, label=name)
ax.bar(np.arange(len(types)) + 2 * width, [vqa["breakdown"][t]["blind"] for t in types], width, color="black",
       label="blind prior (question only)")
ax.set_xticks(range(len(types)), types)
ax.set_ylabel("VQA accuracy")
ax.set_title("VQA accuracy by question type, beside the question-only prior")
ax.legend(fontsize=7, ncol=5)
plt.show()
print(leaderboard(list(vqa_records.values())))
d, lo, hi = paired_bootstrap_diff([it["value"] for it in vqa["items"]], [it["blind_value"] for it in vqa["items"]])
print(f"llava-tiny - blind prior: {d:+.3f}, paired 95% CI [{lo:+.3f}, {hi:+.3f}]")
assert lo > 0.1, "llava-tiny must beat the question-only prior by more than the items explain"

# %% [markdown]
# ## Language priors
#
# Survey §4.2.3: a benchmark can be passed by language alone, through its {term}`language prior`. The blind prior
# above answers each question with its most frequent training answer. On the yes/no types "is there ...?" and "is
# the circle left of the star?" it is right about half the time, as a balanced benchmark intends. On the attribute
# type, yes/no as well, it does far better, and the reason is a leak. The VQA models here were trained on scenes
# whose objects all have the same size (`sizes=("large",)`), so the harness drops the "what size is ...?" type,
# whose answer would always be "large"; but an attribute question can still ask about size, "is the star small?",
# and then its wording gives the answer away: "large" or "big" is always yes, "small", "little" or "tiny" always
# no. Split by the attribute it asks about:

# %%
size_words = {w for words in SIZE_WORDS.values() for w in words}
attr_items = [it for it in vqa["items"] if it["type"] == "attribute"]
asks_size = {"size": [it for it in attr_items if it["question"].rstrip("?").split()[-1] in size_words]}
asks_size["colour"] = [it for it in attr_items if it not in asks_size["size"]]
blind_by = {t: vqa["breakdown"][t]["blind"] for t in ("exist", "relation_yn", "attribute")}
blind_by |= {f"attribute ({k})": np.mean([it["blind_value"] for it in v]) for k, v in asks_size.items()}
print("blind prior, llava-tiny's VQA items:",
      {t: round(float(b), 2) for t, b in blind_by.items()}, {k: len(v) for k, v in asks_size.items()}, "items")
assert all(0.4 < blind_by[t] < 0.6 for t in ("exist", "relation_yn"))  # about half: balanced yes/no
assert blind_by["attribute"] > 0.7 and blind_by["attribute (size)"] > 0.9 and blind_by["attribute (colour)"] < 0.7

# %% [markdown]
# The size questions carry the attribute type: the prior is right on nearly all of them and not much above a coin
# flip on the colour ones. A leak of this kind is what a blind baseline is for: real benchmarks have their own (the
# survey's example: "is there a clock?" answered "yes" about 98 % of the time in VQA v1, its figure, citing
# {cite:p}`goyal2017vqav2`), and the blind score says how much of a model's number such a leak could explain. Caption-choice benchmarks have language priors too: scoring
# each caption by a text-only $P(\text{text})$, BLIP's language model does well on ARO {cite:p}`yuksekgonul2023aro`
# and its successors {cite:p}`lin2024revisiting`, because their negatives are often *less fluent* than the true
# caption. Here `lm-tiny` (a language model of the world's text) and the suites' bigram prior score the ARO-style
# suite and the Winoground-style one, beside the image models:

# %%
prior_models = ["lm-tiny", "clip-tiny-pairs", "siglip-tiny", "blip-tiny (ITM)"]
aro = {name: evaluate(models[name], "aro", n=100) for name in prior_models}
wino = {name: evaluate(models[name], "winoground", n=100) for name in prior_models}
print(f"{'':18} {'ARO':>6} {'relation':>9} {'attrib.':>8} {'order':>6} | {'Winoground group':>16}")
for name in prior_models:
    br = aro[name]["breakdown"]
    print(f"{name:18} {aro[name]['score']:6.3f} {br['relation']['score']:9.3f} {br['attribution']['score']:8.3f} "
          f"{br['order']['score']:6.3f} | {wino[name]['score']:16.3f}")
br = aro["lm-tiny"]["breakdown"]
print(f"{'bigram prior':18} {aro['lm-tiny']['blind']['score']:6.3f} {br['relation']['blind']:9.3f} "
      f"{br['attribution']['blind']:8.3f} {br['order']['blind']:6.3f} | {wino['lm-tiny']['blind']['score']:16.3f}")
print(f"chance: ARO {SUITES['aro'].chance}, Winoground group {SUITES['winoground'].chance:.3f}")
fig, ax = plt.subplots(figsize=(9, 3))
cols = ["relation", "attribution", "order", "Winoground group"]
rows = {name: [aro[name]["breakdown"][t]["score"] for t in cols[:3]] + [wino[name]["score"]] for name in prior_models}
rows["bigram prior (blind)"] = [br[t]["blind"] for t in cols[:3]] + [wino["lm-tiny"]["blind"]["score"]]
for k, (name, vals) in enumerate(rows.items()):
    ax.bar(np.arange(4) + (k - 2) * 0.16, vals, 0.16, label=name,
           color="black" if "blind" in name else None, hatch="//" if name == "lm-tiny" else None)
ax.axhline(0.5, ls=":", color="gray")
ax.set_xticks(range(4), ["ARO " + c for c in cols[:3]] + cols[3:])
ax.set_ylabel("accuracy / group score")
ax.set_title("Text-only scorers (hatched, black) against image models")
ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)
plt.show()
assert aro["lm-tiny"]["breakdown"]["order"]["score"] >= 0.9, "the control: shuffled word order is visible to P(text)"
assert aro["lm-tiny"]["score"] - wino["lm-tiny"]["score"] >= 0.5
assert aro["lm-tiny"]["score"] >= max(aro[m]["score"] for m in prior_models[1:]) - 0.05

# %% [markdown]
# The blind language model scores as well as the image models on the ARO-style suite (within 0.05 of the best),
# through the word-order negatives it reads as ungrammatical (the control: at least 0.9 there), and scores **0**
# on the Winoground-style suite, where both captions use the same words and are equally fluent: a text-only score
# prefers the same caption for both images, so it never wins. That is why Winoground {cite:p}`thrush2022winoground`
# is built balanced. The image models do not do well on it either; §Compositionality looks at why.
#
# ## Captioning metrics
#
# CIDEr-D {cite:p}`vedantam2015cider` rewards a caption for sharing (IDF-weighted) n-grams with the references. It
# cannot tell whether the caption is *true*. Against each two-object test scene's references (its paraphrases) we
# score two candidates whose truth the scene graph decides: **fluent but wrong** (the true caption's template with
# the two objects' colours swapped: one edit, false of the scene) and **terse but correct** ("red circle and blue
# square": every fact right, none of the references' phrasing).

# %%
ds = ShapesCaptionDataset("test", 120, WorldConfig(image_size=48, sizes=("large",)), num_objects=2, seed=3,
                          statements=False)
rng = np.random.default_rng(0)
refs, wrong, terse, scenes, meanings = [], [], [], [], {"fluent but wrong": [], "terse but correct": []}
for i in range(len(ds)):
    scene = ds.scene(i)[0]
    cap = caption_scene(scene, rng, "objects", ds.config.margin)
    neg = hard_negative(cap, scene, rng, kind="binding", margin=ds.config.margin)
    if neg is None:
        continue
    refs.append([simple_tokenize(t) for t in paraphrases(cap.meaning, rng, 5) if t != cap.text])
    wrong.append(simple_tokenize(neg.text))
    a_, b_ = scene.objects
    terse.append(f"{a_.color} {a_.shape} and {b_.color} {b_.shape}")
    scenes.append(scene)
    meanings["fluent but wrong"].append(neg.meaning)
    meanings["terse but correct"].append(Exists((NP(a_.shape, a_.color), NP(b_.shape, b_.color))))
true_share = {name: np.mean([holds(m, sc, ds.config.margin) for m, sc in zip(ms, scenes)])
              for name, ms in meanings.items()}
cider = {name: cider_d(refs, cands)[1] for name, cands in (("fluent but wrong", wrong), ("terse but correct", terse))}
for name, per in cider.items():
    est, lo, hi = bootstrap_ci(per)
    print(f"{name:18} CIDEr-D {est:.2f} [{lo:.2f}, {hi:.2f}]   true of the scene: "
          f"{true_share[name]:.0%} of {len(per)}")
print("e.g.", wrong[0], "|", terse[0], "| refs:", refs[0][:2])
d, lo, hi = paired_bootstrap_diff(cider["fluent but wrong"], cider["terse but correct"])
prefers = np.mean(np.array(cider["fluent but wrong"]) > np.array(cider["terse but correct"]))
print(f"CIDEr-D ranks the falsehood above the truth on {prefers:.0%} of scenes")
assert lo > 0 and prefers > 0.5, "CIDEr-D prefers the fluent falsehood"
assert true_share["fluent but wrong"] == 0 and true_share["terse but correct"] == 1  # the scene graph decides

# %% [markdown]
# CIDEr-D prefers the false caption on most scenes: its n-grams match the references' phrasing, and one
# swapped colour costs little.
#
# ## CLIPScore
#
# {term}`CLIPScore` {cite:p}`hessel2021clipscore` needs no references: $w \cdot \max(\cos(E_c, E_v), 0)$ with $w = 2.5$,
# the cosine of a CLIP's caption and image embeddings. (`torchmetrics`' `CLIPScore` reports $100 \cos$ instead and
# clips the batch mean at 0 rather than each pair: scored one pair at a time it is 40 times ours, as the tests
# check.) It reads the image, so it can tell a wrong colour from a right one, but only as well as the CLIP behind it
# binds colours to shapes:

# %%
clip_pairs = zoo.load("clip-tiny-pairs")
images = torch.stack([zoo.preprocess("clip-tiny-pairs")(render(s, 48)) for s in scenes])
true_caps = [" ".join(r[0].split()) for r in refs]
scores = {name: clip_score(clip_pairs, tok, images, caps) for name, caps in
          (("true (a reference)", true_caps), ("fluent but wrong", wrong), ("terse but correct", terse))}
for name, s in scores.items():
    print(f"{name:20} CLIPScore {s.mean():.3f}")
win = (scores["true (a reference)"] > scores["fluent but wrong"]).float().numpy()
est, lo, hi = bootstrap_ci(win)
print(f"CLIPScore prefers the true caption to its colour swap on {est:.0%} of scenes [{lo:.0%}, {hi:.0%}]")
over_terse = (scores["fluent but wrong"] > scores["terse but correct"]).float().mean().item()
print(f"... and the fluent falsehood to the terse truth on {over_terse:.0%}")
assert lo > 0.5 and over_terse > 0.5

# %% [markdown]
# The reference-free score is no better than its CLIP: `clip-tiny-pairs` passes chapter 02's one-word control but
# binds colours to shapes only part of the time, and CLIPScore inherits exactly that. It also shares CIDEr-D's taste
# for phrasing: the terse truth is far from anything the CLIP was trained on, and scores below the fluent swap.
#
# ## Compositionality
#
# Three ways of asking whether a model composes what it sees, on the contrastive models and BLIP's ITM head. The
# **Winoground-style** suite gives two scenes and two captions with the same words; text score: each image prefers
# its caption; image score: each caption prefers its image; group: both. The **ARO-style** suite is above. The
# **DCI-style** suite {cite:p}`urbanek2024dci` asks each object of a 2-4-object scene, shown alone at its place, to
# pick its own dense caption among the scene's.

# %%
comp_models = ["clip-tiny", "clip-tiny-pairs", "siglip-tiny", "blip-tiny", "blip-tiny (ITM)"]
comp = {s: [evaluate(models[name], s, n=60) for name in comp_models] for s in ("winoground", "dci")}
fig, axes = plt.subplots(1, 2, figsize=(11, 3))
for ax, (suite, records) in zip(axes, comp.items()):
    plot_leaderboard(records, ax=ax)
plt.tight_layout()
plt.show()
for r in comp["winoground"]:
    ex, two = r["extra"]["scores"], r["extra"]["two_way"]
    print(f"{r['model']:18} text {ex['text']:.3f} image {ex['image']:.3f} group {ex['group']:.3f} | "
          f"two-way choices: caption {two['text']:.3f}, image {two['image']:.3f}")
for r in comp["dci"]:
    print(f"{r['model']:18} DCI {r['score']:.3f}   resized crops {r['extra']['resized_crops']:.3f}   "
          f"chance {r['extra']['chance']:.3f}")
assert all(r["score"] < SUITES["winoground"].chance for r in comp["winoground"])
assert all(r["score"] > 0.95 and r["extra"]["resized_crops"] < r["extra"]["chance"] + 0.2 for r in comp["dci"])

# %% [markdown]
# Every model is **below chance** on Winoground's group score, while each of its four two-way choices is near a
# coin flip: a model that prefers one caption of a pair *for both images* fails the text score by construction.
# DCI-style matching, with objects shown alone and captions naming colour and shape, is nearly solved by all of them
# (above 0.95): a benchmark that no model fails cannot rank models. DCI's own protocol, each object's crop resized to
# the full frame (the `extra` field), puts every model within 0.2 of chance: the crops blow a 13-pixel object up to
# a scale no zoo model saw, so they test the change of scale more than the match of region and caption.
#
# ## Zero-shot
#
# Zero-shot classification over the world's 48 colour-shape names (chapter 02's prompt ensemble), on compositions
# seen in training and on the six held out of it, and with class names written with the most and least frequent
# synonym of the training captions (the survey's advice to prompt with the frequent one):

# %%
for name, r in zs.items():
    br, syn = r["breakdown"], r["extra"]["synonyms"]
    print(f"{name:16} seen {br['seen']['score']:.2f}  held-out {br['held-out']['score']:.2f}  | class names with "
          f"the frequent synonyms {syn['frequent']['accuracy']:.2f}, the rare ones {syn['rare']['accuracy']:.2f}")
print("synonym counts in the training captions:", zs["clip-tiny"]["extra"]["synonyms"]["counts"])
kept = {name: r["breakdown"]["held-out"]["score"] / r["breakdown"]["seen"]["score"] for name, r in zs.items()}
print("held-out accuracy as a share of seen accuracy:", {k: round(v, 2) for k, v in kept.items()})
by_type = {t: np.array([it["value"] for it in zs["clip-tiny-pairs"]["items"] if it["type"] == t])
           for t in ("seen", "held-out")}
rng = np.random.default_rng(0)  # the share's interval: both sets of items resampled
shares = [rng.choice(by_type["held-out"], len(by_type["held-out"])).mean()
          / rng.choice(by_type["seen"], len(by_type["seen"])).mean() for _ in range(2000)]
share_lo, share_hi = np.percentile(shares, [2.5, 97.5])
print(f"clip-tiny-pairs keeps {kept['clip-tiny-pairs']:.2f} of its accuracy, 95 % interval "
      f"[{share_lo:.2f}, {share_hi:.2f}] over {len(by_type['seen'])} + {len(by_type['held-out'])} items")
assert zs["clip-tiny"]["breakdown"]["seen"]["score"] - zs["clip-tiny"]["breakdown"]["held-out"]["score"] >= 0.25
assert all(0.4 < kept[m] < 0.6 for m in ("clip-tiny", "siglip-tiny"))
assert share_hi > 1 and share_lo > 0.8  # no loss these items can detect; a loss over a fifth they would
assert all(abs(r["extra"]["synonyms"]["frequent"]["accuracy"] - r["extra"]["synonyms"]["rare"]["accuracy"]) < 0.1
           for r in zs.values())

# %% [markdown]
# `clip-tiny` and SigLIP lose about half their accuracy on compositions they never saw; `clip-tiny-pairs`, trained
# on two-object scenes where colours and shapes recombine, loses none that 100 items per type can detect (its
# interval rules out a loss of a fifth, not a small one). It is one training run of a different data recipe, so
# this illustrates the survey's point about compositional data rather than measuring it. The synonym choice changes little here (under
# 0.1 for every model), and the counts say why: the world writes each synonym about as often as the other, so there
# is no frequent name to prefer. On web data the gap is real, which is why the survey recommends the most frequent
# one.

# %% [markdown]
# ## Spatial relations
#
# PUG-style probes {cite:p}`bordes2023pug`: a two-object scene and its twin with one object moved to the other side.
# **text**: does the true left/right caption beat its swap? **image**: does the caption pick its scene over the
# twin? **count**: once objects are added one at a time, does "k shapes" beat k ± 1?

# %%
pug = [evaluate(models[name], "pug", n=100) for name in comp_models + ["lm-tiny"]]
print(f"{'':18} {'text':>6} {'image':>6} {'count':>6}")
for r in pug:
    br = r["breakdown"]
    print(f"{r['model']:18} " + " ".join(f"{br[t]['score']:6.2f}" for t in ("text", "image", "count")))
for r in pug[:-1]:
    est, lo, hi = bootstrap_ci([it["value"] for it in r["items"] if it["type"] == "image"])
    print(f"{r['model']:18} image score {est:.2f} [{lo:.2f}, {hi:.2f}]" + ("" if lo <= 0.5 else "  above chance"))
    assert hi < 0.75, f"{r['model']} reads left from right?"

# %% [markdown]
# Honest numbers: no image model of the book tells left from right reliably (every interval of the image score
# stays below 0.75; where one clears 0.5 it is by little). Two likely reasons, which this chapter does not test:
# they were trained on captions in which relations are rare, and their towers pool the image into one vector. The
# survey's point that VLMs struggle with spatial relations holds here in a strong form.
#
# ## Hallucination
#
# POPE {cite:p}`li2023pope` asks "Is there a ... in the image?" about present and absent objects, the absent ones
# drawn at random, among the most frequent objects (*popular*) or among those that co-occur most with what is there
# (*adversarial*); the **yes-ratio** exposes a model that simply agrees. {term}`CHAIR` {cite:p}`rohrbach2018chair` counts,
# in free captions, mentions of objects that are not there ($\text{CHAIR}_i$: share of mentions;
# $\text{CHAIR}_s$: share of captions with one).

# %%
pope = {name: evaluate(models[name], "pope", n=150) for name in ("llava-tiny", "instructblip-tiny", "flamingo-tiny")}
print(f"{'':18} {'setting':<12} {'acc':>6} {'prec':>6} {'recall':>6} {'F1':>6} {'yes':>6}")
for name, r in pope.items():
    for setting, m in r["extra"].items():
        print(f"{name:18} {setting:<12} " + " ".join(f"{m[k]:6.3f}" for k in
                                                      ("accuracy", "precision", "recall", "f1", "yes_ratio")))
chair = {name: evaluate(models[name], "chair", n=200) for name in ("blip-tiny", "coca-tiny", "llava-tiny")}
for name, r in chair.items():
    ex = r["extra"]
    print(f"{name:12} CHAIR_s {ex['chair_s']:.3f}  CHAIR_i {ex['chair_i']:.3f}  mentions/caption "
          f"{ex['mentions_per_caption']:.2f}  coverage {ex['coverage']:.2f}")
print("llava-tiny describes:", chair["llava-tiny"]["items"][0]["caption"])
assert all(r["score"] > r["blind"]["score"] + 0.1 for r in pope.values())
yes = {name: [m["yes_ratio"] for m in r["extra"].values()] for name, r in pope.items()}
assert min(yes["llava-tiny"]) > 0.55 and max(yes["flamingo-tiny"]) < 0.45
acc = {name: [m["accuracy"] for m in r["extra"].values()] for name, r in pope.items()}
assert max(acc["flamingo-tiny"]) < min(acc["llava-tiny"])
assert chair["llava-tiny"]["score"] > chair["blip-tiny"]["score"] + 0.1

# %% [markdown]
# Every model beats the always-"yes" baseline, and the yes-ratio tells two styles apart: `llava-tiny` says "yes" to
# more than 55 % of the probes in every setting, `flamingo-tiny` to fewer than 45 %, and is less accurate in every
# setting too.
# The instruction-tuned model's long descriptions name more objects and hallucinate more of them than the short
# captions of BLIP and CoCa: the LLaVA-RLHF observation {cite:p}`sun2023llavarlhf` that detailed descriptions are
# where hallucination lives. CHAIR needs the caption to name objects at all; `coverage` (the share of the scene's
# objects named) guards against a model that avoids hallucination by saying nothing.
#
# ## Text to image
#
# The same reader that checks chapter 04b's samples turns its generators into a suite: does the image drawn for
# "a large red circle" read back as red and as a circle? The blind baseline is a real scene of a random
# composition, what an image that ignored its prompt would score.

# %%
t2i = [evaluate(models[name], "t2i", n=48) for name in ("ar-t2i-tiny", "dit-tiny")]
print(leaderboard(t2i))
assert t2i[0]["ci95"][0] > t2i[0]["blind"]["ci95"][1]

# %% [markdown]
# ## Bias
#
# Survey §4.2 measures bias in two ways: a **classification disparity** between groups of images, and an
# **embedding association** ({term}`WEAT` {cite:p}`caliskan2017weat`, grounded in images by {cite:t}`ross2021grounded`).
# Here the bias is planted. `clip-spurious-tiny` trained on one-object scenes whose background tint follows the
# shape's group (circle, triangle, star: warm; square, diamond, hexagon: cool) 95 % of the time; the captions
# never mention the background. Its control, `clip-spurious-control-tiny`, trained the same way with the tint
# independent of the shape.

# %%
from vlm_primer.evaluation.bias import SpuriousCaptionDataset  # noqa: E402

fig, axes = plt.subplots(1, 6, figsize=(9, 1.8))
for k, force in enumerate(("aligned", "conflicting")):
    shown = SpuriousCaptionDataset("test", 3, WorldConfig(image_size=48, sizes=("large",)), num_objects=1,
                                   statements=False, force=force, seed=4)
    for j in range(3):
        ax = axes[3 * k + j]
        ax.imshow(render(shown.scene(j)[0], 48).permute(1, 2, 0))
        ax.set_title(force, fontsize=8)
        ax.axis("off")
plt.show()
pre = zoo.preprocess("clip-tiny")
bias = {}
for name in ("clip-spurious-tiny", "clip-spurious-control-tiny"):
    model = zoo.load(name)
    bias[name] = {**tint_disparity(model, pre, tok, n=240, max_length=16),
                  **tint_association(model, pre, tok, n=100, n_resamples=1000, max_length=16)}
    b = bias[name]
    print(f"{name:28} zero-shot aligned {b['aligned']:.2f} conflicting {b['conflicting']:.2f} gap {b['gap']:+.2f} "
          f"[{b['gap_ci95'][0]:+.2f}, {b['gap_ci95'][1]:+.2f}] | WEAT d = {b['effect_size']:+.2f}, "
          f"p = {b['p_value']:.3f}")
biased, control = bias["clip-spurious-tiny"], bias["clip-spurious-control-tiny"]
fig, axes = plt.subplots(1, 2, figsize=(9, 2.6))
for k, (name, b) in enumerate(bias.items()):
    axes[0].bar([k - 0.2, k + 0.2], [b["aligned"], b["conflicting"]], 0.4,
                color=["tab:orange", "tab:blue"], label=["aligned tint", "conflicting tint"] if k == 0 else None)
axes[0].set_xticks([0, 1], ["planted (95 %)", "control (50 %)"])
axes[0].set_ylabel("zero-shot top-1")
axes[0].set_ylim(0, 0.7)
axes[0].legend(fontsize=7, loc="upper center", ncol=2)
axes[1].bar([0, 1], [b["effect_size"] for b in bias.values()], color=["tab:red", "tab:gray"])
axes[1].set_xticks([0, 1], [f"planted (p = {biased['p_value']:.3f})", f"control (p = {control['p_value']:.2f})"])
axes[1].set_ylabel("WEAT effect size d")
axes[1].axhline(0, color="black", lw=0.8)
fig.suptitle("A planted bias and its control: zero-shot disparity (left) and WEAT (right)", fontsize=10)
plt.tight_layout()
plt.show()
assert biased["gap_ci95"][0] > 0.2 and control["gap_ci95"][0] <= 0 <= control["gap_ci95"][1]
assert biased["p_value"] < 0.01 and control["p_value"] > 0.05

# %% [markdown]
# Both measures see the planted bias, and neither sees one in the control. The control matters more than it looks:
# WEAT's permutation test asks only whether the warm-background images and the cool-background ones associate
# differently with the two groups of words, and an *untrained* CLIP, whose image embedding is mostly its average
# colour, shows an association as large as any (in whichever direction its random weights point):

# %%
from vlm_primer.contrastive import CLIP, CLIPConfig  # noqa: E402

untrained = CLIP(CLIPConfig(**zoo.card("clip-tiny")["config"])).eval()
u = tint_association(untrained, pre, tok, n=100, n_resamples=1000, max_length=16)
print(f"untrained CLIP: WEAT d = {u['effect_size']:+.2f} (|d| beyond the planted bias's {abs(biased['effect_size']):.2f}"
      f"; the one-sided p of the planted direction is {u['p_value']:.3f} only because the sign is the other one)")
assert abs(u["effect_size"]) > max(1.0, abs(control["effect_size"]))

# %% [markdown]
# A significant association is a difference between two sets of embeddings, not yet a learned prejudice. The
# trained control, which saw the same tints with no link to shape, is what tells the two apart.
#
# ## Concept frequency
#
# {cite:t}`udandarao2024zeroshot` find that a CLIP's zero-shot accuracy on a concept grows log-linearly with how
# often the concept appears in its pretraining data (survey §4.2.4). The extreme case is already in §Zero-shot: the
# six held-out compositions, seen zero times, against the 42 seen about 1,500 times each in `clip-tiny`'s uniform
# training. `ZipfCaptionDataset` draws the colour-shape compositions of one-object scenes from a long-tailed law
# instead, with its frequency table: chapter 06's `ConceptFrequencyDataset` with `concept="composition"` (chapter
# 06's own experiment, below, draws *shapes* from the law, `concept="shape"`):

# %%
from vlm_primer.evaluation.frequency import ZipfCaptionDataset, frequency_table  # noqa: E402

table = frequency_table(ZipfCaptionDataset(2000, WorldConfig(image_size=48, sizes=("large",)), exponent=2.0,
                                           statements=False))
counts = list(table.values())
print(f"Zipf law, exponent 2: the most frequent composition {counts[0]} times of 2,000, the 10th {counts[9]}, "
      f"the last {counts[-1]}; held out: never")
seen, held = (zs["clip-tiny"]["breakdown"][t]["score"] for t in ("seen", "held-out"))
print(f"clip-tiny zero-shot: {seen:.2f} on compositions seen in training, {held:.2f} on those seen 0 times")
assert counts[0] > 10 * max(counts[9], 1) and held < seen

# %% [markdown]
# Chapter 06 runs the experiment at equal budget (`benchmarks/bench_data_recipes.py`, three seeds): the same tiny
# CLIP trained on shapes drawn uniformly or from a Zipf law (exponent 2, the ranking reshuffled at every seed, so a
# shape that is hard by nature is not always the rare one). Each point is one shape in one run:

# %%
import json  # noqa: E402

recipes_bench = json.loads((zoo.ZOO_DIR.parents[1] / "benchmarks" / "results" / "data_recipes.json").read_text())
balance = [r for r in recipes_bench["runs"] if r["part"] == "balance"]
fig, ax = plt.subplots(figsize=(6, 3))
rho_by_seed = {}
for r in balance:
    xs = [r["train_counts"][s] for s in r["shape_accuracy"]]
    ys = list(r["shape_accuracy"].values())
    ax.scatter(xs, ys, color="tab:red" if r["arm"] == "zipf" else "tab:blue", s=14,
               label=None if r["seed"] else ("Zipf, exponent 2" if r["arm"] == "zipf" else "uniform (control)"))
    if r["arm"] == "zipf":
        rho_by_seed[r["seed"]] = spearmanr(xs, ys).statistic
ax.set_xscale("log")
ax.set_xlabel("training scenes showing the shape")
ax.set_ylabel("zero-shot top-1 on the shape")
ax.set_title("Per-shape accuracy against training frequency (chapter 06's benchmark)")
ax.legend(fontsize=8)
plt.show()
print(f"`{recipes_bench['command']}`: Spearman of per-shape accuracy with training count, per seed:",
      {k: round(float(v), 2) for k, v in sorted(rho_by_seed.items())})
assert len(rho_by_seed) >= 3 and all(v > 0 for v in rho_by_seed.values())

# %% [markdown]
# In every seed the shapes seen least are the ones the model gets wrong most, while the uniform runs (every shape
# seen equally often) show how much the shapes differ by nature. This is the paper's trend at toy scale: six concepts
# whose training counts span less than two orders of magnitude (chapter 06 prints the span), where the paper has
# thousands over five; chapter 06 reads the slope.
#
# ## Memorization
#
# {term}`Déjà vu memorization <déjà vu memorization>` {cite:p}`jayaraman2024dejavu` asks whether a CLIP remembers *more of a training image than
# its caption says*. Two CLIPs train on disjoint sets A and B of 100 three-object scenes, each with a caption that
# names two objects (640 passes: a small set seen many times); the third object is hidden from the text. For each
# caption of A, we retrieve its 50 nearest scenes from 3,000 public ones and count how many contain the hidden
# object. The target (trained on A) against the reference (trained on B) on the same captions:

# %%
sets = dejavu_sets(100)
rates = {name: recovery_rates(zoo.load(name), pre, tok, sets.a, sets.public, k=50, max_length=16)
         for name in ("clip-dejavu-a-tiny", "clip-dejavu-b-tiny", "clip-dejavu-a-masked-tiny")}
gap = dejavu_gap(rates["clip-dejavu-a-tiny"], rates["clip-dejavu-b-tiny"])
masked = dejavu_gap(rates["clip-dejavu-a-masked-tiny"], rates["clip-dejavu-b-tiny"])
reduction = dejavu_gap(rates["clip-dejavu-a-tiny"], rates["clip-dejavu-a-masked-tiny"])
for label, g in (("target vs reference", gap), ("text-randomised target vs reference", masked),
                 ("target vs text-randomised target", reduction)):
    print(f"{label:38} {g['target']:.3f} vs {g['reference']:.3f}: gap {g['gap']:+.3f} "
          f"[{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]")
fig, ax = plt.subplots(figsize=(6, 2.6))
labels = ["target (A)", "text-randomised target (A)", "reference (B)"]
vals = [rates[n] for n in ("clip-dejavu-a-tiny", "clip-dejavu-a-masked-tiny", "clip-dejavu-b-tiny")]
cis = np.array([bootstrap_ci(v)[1:] for v in vals])
means = np.array([v.mean() for v in vals])
ax.barh(range(3), means, xerr=[means - cis[:, 0], cis[:, 1] - means], capsize=3, color=["tab:red", "tab:orange",
                                                                                     "tab:gray"])
ax.set_yticks(range(3), labels)
ax.set_xlabel("share of 50 nearest public scenes with the hidden object")
ax.set_title("Déjà vu on set A's training captions")
plt.show()
ratio = gap["target"] / gap["reference"]
print(f"the target finds the hidden object {ratio:.1f} times as often as the reference")
assert gap["ci95"][0] > 0 and masked["gap"] < gap["gap"] and 1.6 < ratio < 2.4

# %% [markdown]
# The target finds the hidden object about twice as often as the reference: it remembers something of its training
# images that the captions never said. Text randomization (30 % of caption tokens masked at every batch, the
# paper's most effective mitigation) shrinks the gap; the interval of the reduction is computed on one training seed
# per model, so it is a tendency here, not a finding about the method.
#
# ## Red teaming
#
# {term}`Red teaming <red teaming>` (survey §4.5) probes a model with inputs chosen to make it fail, scored against reference replies. Our
# adversarial set has **false premises** ("what color is the hexagon?" when there is none: the reply must deny
# it), **leading** questions ("the circle is red, isn't it?" when it is blue) and, as the control, the same
# questions with **true premises**. The mitigation asks the model first whether each shape the question names is
# there, and denies the premise when it says no:

# %%
red = []
for name in ("llava-tiny", "instructblip-tiny"):
    for m in (models[name], verify_premises(models[name])):
        red.append(evaluate(m, "redteam", n=60))
print(f"{'':36} {'false premise':>13} {'leading':>8} {'true premise':>13}")
for r in red:
    br = r["breakdown"]
    print(f"{r['model']:36} " + " ".join(f"{br[t]['score']:>{w}.2f}" for t, w in
                                        (("false_premise", 13), ("leading", 8), ("true_premise", 13))))
print("llava-tiny asked 'is there a hexagon?' about scenes without one:",
      models["llava-tiny"].answer(torch.stack([render(s, 48) for s in sets.public[:5]]),
                                  ["is there a hexagon in the image?"] * 5))
red_scores = [{t: b["score"] for t, b in r["breakdown"].items()} for r in red]  # llava, + check, instructblip, + check
control = [[it["value"] for it in r["items"] if it["type"] == "true_premise"] for r in red[2:]]
price, price_lo, price_hi = paired_bootstrap_diff(control[1], control[0])  # the same items, with and without
print(f"the check's price on InstructBLIP's control: {price:+.2f} [{price_lo:+.2f}, {price_hi:+.2f}]")
assert red_scores[0]["false_premise"] == red_scores[2]["false_premise"] == 0  # both accept every false premise
assert red_scores[3]["false_premise"] > 0  # the check helps InstructBLIP deny some ...
assert price_hi < 0  # ... at a price on the control
assert red_scores[3]["leading"] <= red_scores[2]["leading"] + 0.05  # and does not answer leading questions better
assert red_scores[1] == red_scores[0]  # the check changes nothing for llava-tiny

# %% [markdown]
# Both models accept every false premise. The premise check helps InstructBLIP deny some, at a price on the control
# (it now denies some true premises too; the interval of the paired difference excludes 0). On leading questions it
# does not help: its "no, there is no circle." about a circle that is there is a false reply, and scores as one. It does nothing for `llava-tiny`, and the last line shows why: asked
# whether a shape is there, without a colour, it says "yes" to everything. A mitigation is only as good as the
# check it relies on, and that check needs red-teaming of its own.
#
# ## Summary
#
# * One harness evaluates every model of the book through four capabilities; each record carries the score, its
#   bootstrap interval and a blind baseline on the same items.
# * Language alone passes benchmarks whose negatives are less fluent than the truth (ARO-style word order), and
#   fails balanced ones (Winoground-style) by construction.
# * CIDEr-D prefers a fluent falsehood to a terse truth; CLIPScore reads the image but only as well as its CLIP.
# * The book's image models are below chance on Winoground's group score, at chance on left/right, and lose the
#   held-out compositions; the instruction-tuned model hallucinates most in long descriptions.
# * A planted bias shows in both disparity and WEAT, and not in its control, while an untrained model "passes"
#   WEAT; a CLIP trained on a small set remembers objects its captions never named; a premise check helps one
#   model's red-team score at a cost and not the other's.
#
# ## Exercises
#
# Write each answer in the cell below and run it: `check` runs hidden tests and says what is wrong, never what the
# answer is.
#
# 1. **VQA accuracy** (`07.1`). Write `vqa_acc(pred, answers)`: the official accuracy of an already normalised
#    answer against ten normalised references.
# 2. **A bootstrap interval** (`07.2`). Write `boot_ci(values, idx)`: the 2.5th and 97.5th percentiles of the
#    means of `values[idx[r]]` over the rows `r` of the given resample indices `idx` `(R, N)`.
# 3. **Winoground's scores** (`07.3`). Write `wino(s)`: text, image and group scores of `s` `(N, 2, 2)`, where
#    `s[n, i, j]` scores image `i` with caption `j` of pair `n` (a tie is a failure: the right one must score higher).
# 4. **POPE** (`07.4`). Write `pope(pred, label)`: F1 and yes-ratio of boolean predictions (True = yes).
# 5. **CHAIR** (`07.5`). Write `chair_i(mentions, present)`: hallucinated mentions over all mentions, given each
#    caption's mentioned shapes and each scene's set of shapes.
# 6. **WEAT** (`07.6`). Write `weat_d(X, Y, A, B)`: the effect size, rows as embeddings (cosine similarity).
# 7. **CLIPScore** (`07.7`). Write `clip_s(cos, w=2.5)`: CLIPScore from pair cosines.

# %%
from vlm_primer.exercises import check  # noqa: E402


def vqa_acc(pred, answers):
    raise NotImplementedError  # your code here


def boot_ci(values, idx):
    raise NotImplementedError


def wino(s):
    raise NotImplementedError


def pope(pred, label):
    raise NotImplementedError


def chair_i(mentions, present):
    raise NotImplementedError


def weat_d(X, Y, A, B):
    raise NotImplementedError


def clip_s(cos, w=2.5):
    raise NotImplementedError


for exercise_id, answer in [("07.1", vqa_acc), ("07.2", boot_ci), ("07.3", wino), ("07.4", pope),
                            ("07.5", chair_i), ("07.6", weat_d), ("07.7", clip_s)]:
    check(exercise_id, answer)

# %%
elapsed = time.time() - T_START
print(f"llava-tiny VQA {vqa['score']:.3f} (blind {vqa['blind']['score']:.3f}); planted-bias gap "
      f"{biased['gap']:+.2f}; déjà vu gap {gap['gap']:+.3f}; chapter executed in {elapsed:.0f} s at scale {SCALE!r}")
