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
# # 06b · Training recipes II: grounding, negatives, alignment, text-rich images and PEFT
#
# Survey §3.4–3.7 {cite:p}`bordes2024introduction` collects the techniques that turn a VLM that roughly works into
# one that locates what it names, does not mistake a sentence for its word swap, answers the way people want, reads
# the text in an image, and adapts to a new task by training a few parameters. Each has a precise definition or a
# maintained reference implementation, so each is built here in `vlm_primer.recipes`, checked against that
# reference in the tests, and measured on Shapes World with a control beside it.
#
# **After this chapter you can**
#
# * regress a box from a text-conditioned feature with L1 + {term}`generalized IoU`, the X-VLM recipe of
#   {term}`grounding`, and score it against the "largest object" control;
# * write a box as Kosmos-2's {term}`location tokens`, read it back, and teach a causal VLM to write them;
# * say what hard negative captions do to a contrastive model, and what they cost, at equal budget;
# * derive and run {term}`direct preference optimization` on the tiny LLaVA with preference pairs written from the
#   scene graph, beside the control that trains on the preferred answers only;
# * render text into Shapes World, see why reading it asks for resolution, and compare a squeezed image, tiles and a
#   separate text recogniser by accuracy and tokens;
# * adapt a CLIP to a new domain with {term}`LoRA`, DoRA, VeRA, {term}`QLoRA`'s 4-bit weights,
#   {term}`prompt tuning` (CoOp, VPT) and CLIP-Adapter, and compare them at equal budget;
# * put {term}`adapters <adapter>` in a LLaVA's language model and measure what sharing one set across two tasks
#   costs;
# * accumulate micro-batches' gradients into exactly the big batch's, answers of every length weighed by their
#   tokens.
#
# The long runs live in `benchmarks/` (`bench_kosmos.py`, `bench_negatives.py`, `bench_dpo.py`,
# `bench_text_reading.py`, `bench_peft.py`, `bench_vl_adapter.py`, three seeds each); this
# chapter reads their results files, prints the command that made each, and asserts only what holds across seeds.
# The pretrained parts come from the zoo: `clip-tiny`, `llava-tiny` and chapter 06b's own `grounder-tiny`.

# %%
import json
import time

import ipywidgets as widgets
import matplotlib.patches as mpatches
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import display

from vlm_primer import get_scale, seed_everything, zoo
from vlm_primer.recipes import alignment, grounding, peft, quant
from vlm_primer.text import Tokenizer
from vlm_primer.world import text_rich
from vlm_primer.zoo import grounding_recipes

seed_everything(0)
SCALE = get_scale()
T_START = time.time()
tok = Tokenizer.load()
pre = zoo.preprocess("clip-tiny")
BENCH = zoo.ZOO_DIR.parents[1] / "benchmarks"
RESULTS = {name: json.loads((BENCH / "results" / f"{name}.json").read_text())
           for name in ("kosmos", "negatives", "dpo", "text_reading", "peft", "vl_adapter")}


def seeds_of(runs, key, **where):
    """``key`` of every run matching ``where``, in seed order."""
    rows = sorted((r for r in runs if all(r[k] == v for k, v in where.items())), key=lambda r: r["seed"])
    return np.array([r[key] for r in rows])


print(f"VLM_PRIMER_SCALE = {SCALE!r}: the live parts use zoo models at every scale")
for name, res in RESULTS.items():
    print(f"{name}.json: `{res['command']}` ({res['date']}; {res['minutes']} min)")

# %% [markdown]
# ## Grounding
#
# Survey §3.4.1: a model that can say *where* a phrase is has to have tied the words to the pixels.
# X-VLM {cite:p}`zeng2022xvlm` adds bounding boxes to pretraining: a cross-modal encoder lets the text of a phrase
# attend to the image, and a small head regresses the phrase's box from the fused feature. The loss is DETR's
# {cite:p}`carion2020detr`: an L1 term on the box centre and size plus a {term}`generalized IoU` term
# {cite:p}`rezatofighi2019giou`. For boxes $A$, $B$ and $C$ the smallest box enclosing both,
#
# $$\mathrm{IoU} = \frac{|A \cap B|}{|A \cup B|}, \qquad
#   \mathrm{GIoU} = \mathrm{IoU} - \frac{|C| - |A \cup B|}{|C|},$$
#
# $$\mathcal{L} = 5\,\lVert b - \hat b \rVert_1 + 2\,(1 - \mathrm{GIoU}(b, \hat b)).$$
#
# IoU is zero for every pair of disjoint boxes, however far apart, so it gives no gradient there; GIoU keeps
# falling as they move apart. Written out for one pair, and checked against the package (which the tests check
# against `transformers`' DETR code):

# %%
def giou_by_hand(a, b):
    area = lambda r: max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])  # noqa: E731
    inter = area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = area(a) + area(b) - inter
    enclosing = area((min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])))
    return inter / union - (enclosing - union) / enclosing


a = (0.1, 0.1, 0.4, 0.4)
shifts = np.linspace(-0.2, 0.7, 46)
mine = [giou_by_hand(a, (0.1 + s, 0.1, 0.4 + s, 0.4)) for s in shifts]
boxes_b = torch.tensor([[0.1 + s, 0.1, 0.4 + s, 0.4] for s in shifts], dtype=torch.float64)
package = grounding.generalized_box_iou(torch.tensor([a], dtype=torch.float64), boxes_b)[0]
iou = grounding.box_iou(torch.tensor([a], dtype=torch.float64), boxes_b)[0]
torch.testing.assert_close(torch.tensor(mine, dtype=torch.float64), package)
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.plot(shifts, iou, lw=5, alpha=0.4, label="IoU")
ax.plot(shifts, package, label="GIoU (equal to IoU while the boxes overlap)")
ax.axhline(0, color="k", lw=0.5)
ax.set_xlabel("horizontal shift of the second box")
ax.set_title("IoU and GIoU of two boxes as one slides away", fontsize=9)
ax.legend()
plt.show()
assert iou[-1] == iou[-10] == 0 and package[-1] < package[-10] < 0  # IoU flat once apart, GIoU still falling

# %% [markdown]
# `vlm_primer.recipes.xvlm.Grounder` is that recipe on chapter 02's towers: the image tokens of a CLIP's vision
# tower (with fixed 2-D sine-cosine positions added, as DETR adds them to its keys) are the context of a 2-block
# cross-modal encoder over the expression's text tokens; the end-of-text token, the one position of the causal text
# tower that has read the whole expression, goes through X-VLM's box head (`grounding.BoxHead`: an MLP and a
# sigmoid read as centre and size). The zoo's `grounder-tiny` starts from `clip-tiny-pairs` and trains everything on
# referring expressions written from the scene graph (`grounding.referring_items`): "the red circle" when it is the
# only one, "the red circle left of the blue square" when a twin needs telling apart. Every expression fits its
# target alone. The control is the **largest object** baseline: the box of the biggest object, whatever the words
# say; a grounder that does not read the expression cannot beat it by much.

# %%
grounder = zoo.load("grounder-tiny")
card = zoo.card("grounder-tiny")
print(f"grounder-tiny: {card['params']:,} parameters; `{card['command']}` ({card['train_seconds'] / 60:.1f} min on "
      f"{card['trained_on']})")
items = grounding_recipes.test_items()
batch = grounding_recipes.referring_collate(tok, pre)(items)
true_boxes = batch.pop("boxes")
pred_boxes = grounder.predict(**batch)
control = grounding.largest_object_baseline([it["scene"] for it in items], grounding_recipes.world().image_size)
kinds = {k: [i for i, it in enumerate(items) if it["kind"] == k] for k in ("attribute", "relation")}
acc = grounding.referring_accuracy_by_kind(pred_boxes, true_boxes, [it["kind"] for it in items])
base = grounding.referring_accuracy_by_kind(control, true_boxes, [it["kind"] for it in items])
print(f"{len(items)} held-out expressions; referring accuracy (IoU >= 0.5):")
for k in acc:
    print(f"  {k:9s}  grounder {acc[k]:.3f}   largest object (control) {base[k]:.3f}")
assert acc["all"] >= base["all"] + 0.15 and all(acc[k] > base[k] for k in kinds)

# %% [markdown]
# The grounder beats the control on both kinds of expression. Below, held-out scenes with the expression, the true
# box (white, dashed) and the predicted one (green when IoU ≥ 0.5, red otherwise); the widget after it shows any
# of the 600, starting at the first one it gets wrong.

# %%
def show_item(i, ax=None):
    it = items[i]
    ax = ax or plt.subplots(figsize=(3.2, 3.4))[1]
    size = it["image"].shape[-1]
    ax.imshow(it["image"].permute(1, 2, 0).numpy(), extent=(0, 1, 1, 0))
    hit = float(grounding.box_iou(pred_boxes[i:i + 1], true_boxes[i:i + 1])[0, 0])
    for box, style in ((true_boxes[i], dict(edgecolor="white", linestyle="--")),
                       (pred_boxes[i], dict(edgecolor="lime" if hit >= 0.5 else "red"))):
        x0, y0, x1, y1 = box.tolist()
        ax.add_patch(mpatches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=2, **style))
    ax.set_title(f"{it['text']}\nIoU {hit:.2f} ({size} px)", fontsize=8)
    ax.axis("off")
    return hit


fig, axes = plt.subplots(2, 5, figsize=(13, 6))
for ax, i in zip(axes.flat, kinds["attribute"][:5] + kinds["relation"][:5]):
    show_item(i, ax)
plt.tight_layout()
plt.show()

first_miss = next(i for i in range(len(items)) if grounding.box_iou(pred_boxes[i:i + 1], true_boxes[i:i + 1]) < 0.5)
display(widgets.interactive(lambda item=first_miss: (show_item(item), plt.show()),
                            item=widgets.IntSlider(first_miss, min=0, max=len(items) - 1)))

# %% [markdown]
# What the toy can and cannot show: X-VLM learns its boxes from the region annotations of COCO and Visual Genome
# across millions of images and reports its gains on RefCOCO+ and other benchmarks. Here one world of up to three
# large shapes at 48 px, where a box is a few patches wide; the result shows that the recipe learns to read a
# referring expression, relations included, beyond what an image-only guess gets; it says nothing of how far the
# recipe scales.
#
# ## Boxes as tokens
#
# A language model cannot regress a number, but it can write tokens. Kosmos-2 {cite:p}`peng2023kosmos2` cuts the
# image into $P \times P$ bins ($P = 32$) and writes a box as the bins of its two corners,
#
# $$\text{top-left} = \lfloor y_0 P \rfloor P + \lfloor x_0 P \rfloor, \qquad
#   \text{bottom-right} = \lceil y_1 P - 1 \rceil P + \lceil x_1 P - 1 \rceil,$$
#
# as `<patch_index_0012><patch_index_0345>` inside the text, and reads it back as the centres of the two bins. The
# package's conversion equals `transformers`' `Kosmos2Processor` helpers (in the tests); here the round trip on the
# held-out boxes, and what it costs in IoU at a few bin counts:

# %%
rows = []
for bins in (4, 8, 16, 32):
    back = torch.stack([grounding.location_tokens_to_box(grounding.box_to_location_tokens(b, bins), bins)
                        for b in true_boxes])
    rows.append((bins, float(grounding.box_iou(back, true_boxes).diagonal().mean()),
                 grounding.referring_accuracy(back, true_boxes)))
    print(f"P = {bins:2d}: mean IoU of the round trip {rows[-1][1]:.3f}; boxes still right at IoU >= 0.5: "
          f"{rows[-1][2]:.3f}")
example = grounding.box_to_location_tokens(true_boxes[0], 32)
print(f"'{items[0]['text']}' -> {grounding.location_text(example)}")
assert rows[-1][1] > 0.85 and rows[0][1] < rows[-1][1]

# %% [markdown]
# At Kosmos-2's 32 bins the tokens keep the boxes; at 4 bins a 48-px image has 12-px bins and the round trip loses
# much of each object.
#
# A causal VLM learns to write them with its ordinary next-token loss. `recipes.kosmos.add_location_tokens` gives
# `llava-tiny`'s language model $P^2$ new tokens (new rows in its embedding table and output head, every other
# weight kept), `recipes.kosmos.location_item` writes "where is the red circle left of the blue square?" answered by
# the two tokens of the box, and `recipes.kosmos.predict_boxes` reads an answer back by greedy decoding restricted
# to the location tokens (the second one to bins that can close a box). `benchmarks/bench_kosmos.py` trains it at
# $P = 8$ with `grounder-tiny`'s budget (3,000 steps of 32 expressions, the tower trained too), three seeds, and
# scores it on the same 600 held-out expressions:

# %%
kos = RESULTS["kosmos"]
kacc = seeds_of(kos["runs"], "referring_accuracy")
print(f"`{kos['command']}` ({kos['date']}; {kos['minutes']} min): P = {kos['bins']}, {kos['steps']} steps of "
      f"{kos['batch']}")
for k in ("referring_accuracy", "referring_accuracy_attribute", "referring_accuracy_relation"):
    v = seeds_of(kos["runs"], k)
    print(f"  {k:30s} {v.mean():.3f} ({v.min():.3f}-{v.max():.3f})")
ceiling = kos["runs"][0]["ceiling"]
print(f"  ceiling at P = {kos['bins']} (true boxes through the tokens): {ceiling:.3f}; largest object (control): "
      f"{base['all']:.3f}; grounder-tiny (regression): {acc['all']:.3f}")
assert kacc.min() > base["all"] and kacc.max() < acc["all"] and kacc.max() <= ceiling
shown = kos["runs"][0]["shown"]
fig, axes = plt.subplots(1, 5, figsize=(13, 3.2))
for ax, s_ in zip(axes, shown[:5]):
    i = s_["index"]
    box = grounding.location_tokens_to_box(torch.tensor(s_["tokens"]), kos["bins"])
    ax.imshow(items[i]["image"].permute(1, 2, 0).numpy(), extent=(0, 1, 1, 0))
    for b_, style in ((true_boxes[i], dict(edgecolor="white", linestyle="--")), (box, dict(edgecolor="yellow"))):
        x0, y0, x1, y1 = b_.tolist()
        ax.add_patch(mpatches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=2, **style))
    ax.set_title(f"{s_['text']}\n{grounding.location_text(torch.tensor(s_['tokens']))}", fontsize=7)
    ax.axis("off")
fig.suptitle("boxes written as location tokens by the LLaVA (yellow; seed 0), true boxes dashed", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# The LLaVA that writes boxes beats the largest-object control at every seed but stays well below the regression
# grounder at the same budget and below the ceiling its 8 × 8 bins allow: a box spelled in two tokens from the
# language model's last position reaches a lower accuracy at this budget than one regressed from a cross-modal
# encoder's feature (its curve has flattened by the end, so more steps may not close the gap). What the toy cannot show: Kosmos-2 learns its tokens from a web-scale corpus of grounded pairs and then
# grounds phrases zero-shot (RefCOCO, Flickr30k Entities); the point here is the mechanism, and that the tokens are
# learnt by the loss that teaches the model to talk.
#
# ## Negative captions
#
# Survey §3.4.2: a contrastive model trained on web pairs can match "the horse is eating the grass" with an image of
# grass eating a horse, because nothing in its batches ever tells the two apart. NegCLIP
# {cite:p}`yuksekgonul2023aro` adds, for each caption, a *hard negative*: the caption with words swapped (attribute,
# relation or order, chapter 01's `hard_negative`), false of the image. The negatives join the image-to-text choices
# only (`recipes.negatives.negclip_loss`). `benchmarks/bench_negatives.py` trains CLIP and NegCLIP at the same budget,
# from scratch and by fine-tuning `clip-tiny-pairs`, three seeds each, and measures the ARO-style suite of chapter 07
# beside its blind text prior, the binding probe with its one-word-replacement control, and the zero-shot cost:

# %%
neg = RESULTS["negatives"]
print(f"{'arm':11s} {'ARO':>16s} {'swap (probe)':>16s} {'replace control':>16s} {'zero-shot':>16s}")
for arm in ("clip", "negclip", "clip_ft", "negclip_ft"):
    cells = [seeds_of(neg["runs"], k, arm=arm) for k in ("aro", "binding_swap_win", "replace_control_win",
                                                          "zero_shot_top1")]
    print(f"{arm:11s} " + " ".join(f"{c.mean():.3f} ({c.min():.2f}-{c.max():.2f})" for c in cells))
blind = seeds_of(neg["runs"], "aro_blind", arm="clip")[0]
best_aro = max(seeds_of(neg["runs"], "aro", arm=a).max() for a in ("clip", "negclip", "clip_ft", "negclip_ft"))
print(f"ARO blind text prior (no image): {blind:.3f}; the best model at any seed: {best_aro:.3f}")
assert blind > best_aro  # the blind prior is above every model
gain = {s: seeds_of(neg["runs"], "aro", arm="neg" + s) - seeds_of(neg["runs"], "aro", arm=s) for s in ("clip", "clip_ft")}
for s, g in gain.items():
    spread = max(np.ptp(seeds_of(neg["runs"], "aro", arm=s)), np.ptp(seeds_of(neg["runs"], "aro", arm="neg" + s)))
    print(f"NegCLIP - CLIP ({'fine-tune' if s.endswith('ft') else 'scratch'}), ARO per seed: {g.round(3)}; "
          f"seed spread within an arm {spread:.3f}")
    assert abs(g.mean()) < spread  # no gain beyond the spread at this scale
controls = np.concatenate([seeds_of(neg["runs"], "replace_control_win", arm=a) for a in ("clip_ft", "negclip_ft")])
assert (controls > 0.9).all()  # the probe sees a one-word replacement: the test works

# %% [markdown]
# The control works: the fine-tuned models tell a caption from its one-word replacement more than 90 % of the time,
# so the probe can see a difference. NegCLIP's change in ARO is smaller than the spread across seeds, from scratch
# and fine-tuned: at this scale, **no gain on ARO**, and the blind text prior is as high as the best model (a third
# of the items
# are shuffled word orders, which a bigram model of the captions rejects without looking at the image; chapter 07
# makes the same point about ARO's order tests). The paper reports VG-Relation 0.59 →
# 0.81 and VG-Attribution 0.62 → 0.71 for CLIP ViT-B/32 → NegCLIP fine-tuned on COCO with its negatives; our
# world's captions are short and our models tiny, and the result here is that negatives, from scratch or in 300
# fine-tuning steps, do not move a tiny CLIP's ARO score beyond its own seed noise. On the binding-swap probe (the
# table's swap column) NegCLIP from scratch is ahead of CLIP at every seed, but by less than CLIP's own seed
# spread: a tendency, not a finding.

# %% [markdown]
# ## Alignment with preferences
#
# Survey §3.5: after instruction tuning (chapter 05) a VLM still says things that are not in the image. LLaVA-RLHF
# {cite:p}`sun2023llavarlhf` collects answers people prefer and trains towards them; its *factually augmented*
# reward model is given the image's facts. Here the scene graph is the facts, and the preference pairs write
# themselves (`alignment.preference_pairs`): for a request about an image, the **chosen** answer names every object,
# true by construction; the **rejected** answer is the same sentence with one edit that makes it false, an object
# the image does not hold or a wrong colour.
#
# {term}`Direct preference optimization <direct preference optimization>` {cite:p}`rafailov2023dpo` trains on such pairs without a reward model. With
# the policy $\pi_\theta$, a frozen reference $\pi_\text{ref}$ (the model it starts from) and the implicit rewards
# $r = \beta \log \frac{\pi_\theta(y \mid x)}{\pi_\text{ref}(y \mid x)}$ of the chosen ($y_c$) and rejected ($y_r$)
# answers,
#
# $$\mathcal{L}_\text{DPO} = -\log \sigma\!\left(\beta \log \frac{\pi_\theta(y_c \mid x)}{\pi_\text{ref}(y_c \mid x)}
#   - \beta \log \frac{\pi_\theta(y_r \mid x)}{\pi_\text{ref}(y_r \mid x)}\right),$$
#
# where $\log \pi(y \mid x)$ sums the answer's token log-probabilities, the image in the prompt. At the start the
# policy is the reference, both rewards are zero and the loss is $\log 2$. One pair, the loss by hand against the
# package (whose loss the tests check against `trl`'s `DPOTrainer`), then a few live steps on `llava-tiny`:

# %%
llava = zoo.load("llava-tiny")
reference = alignment.frozen_reference(llava)
collate = alignment.dpo_collate(llava.tokens_per_image, transform=zoo.preprocess("llava-tiny"))
pairs = alignment.preference_pairs(16 * 24, seed=0, split="train")
for p in pairs[:2]:
    print(f"[{p['kind']}] {p['prompt']!r}\n   chosen:   {p['chosen']}\n   rejected: {p['rejected']}")
b = collate(pairs[:16])
with torch.no_grad():
    pc, pr = (alignment.sequence_logprobs(llava, b[k]) for k in ("chosen", "rejected"))
    rc, rr = (alignment.sequence_logprobs(reference, b[k]) for k in ("chosen", "rejected"))
beta = 0.1
by_hand = -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))
torch.testing.assert_close(by_hand, alignment.dpo_loss(pc, pr, rc, rr, beta)[0])
torch.testing.assert_close(by_hand.mean(), torch.tensor(np.log(2), dtype=by_hand.dtype))
print(f"before any step: loss {by_hand.mean():.4f} = log 2; the policy already prefers the chosen answer in "
      f"{(pc > pr).float().mean():.0%} of these pairs (log-probabilities alone)")

policy = zoo.load("llava-tiny")
policy.set_stage(2)  # the tower frozen: connector and language model trained, as in chapter 05's stage 2
policy.train()
opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=RESULTS["dpo"]["lr"], weight_decay=0.0)
live = [alignment.dpo_step(policy, reference, collate(pairs[i * 16:(i + 1) * 16]), beta, optimizer=opt)
        for i in range(24)]
policy.eval()
fig, ax = plt.subplots(1, 2, figsize=(9, 2.6))
ax[0].plot([s["loss"].item() for s in live])
ax[0].axhline(np.log(2), color="k", ls=":", lw=1)
ax[0].set_title("DPO loss (log 2 dotted)")
ax[1].plot([s["margin"] for s in live])
ax[1].set_title("reward margin r_c - r_r")
for a_ in ax:
    a_.set_xlabel("step (16 pairs)")
plt.tight_layout()
plt.show()
first, last = np.mean([s["loss"].item() for s in live[:4]]), np.mean([s["loss"].item() for s in live[-4:]])
print(f"mean loss over the first 4 steps {first:.4f}, over the last 4 {last:.4f}")
assert last < first < np.log(2) + 1e-3

# %% [markdown]
# The loss falls below $\log 2$ within a few steps: the policy learns to prefer the true answers over their false
# twins more than its reference does. Whether that makes it hallucinate less is a question for chapter 07's
# suites, asked of every arm of `benchmarks/bench_dpo.py` at three seeds: **base** (`llava-tiny` itself),
# **dpo**, and the control **sft_chosen**, the same steps, batches and optimiser of plain instruction tuning on the
# chosen answers alone. DPO only counts where it beats the control, which sees the same faithful captions without
# the rejected ones. POPE (accuracy on "is there a ...?", the blind always-"yes" beside it), CHAIR$_s$ (the share of
# captions that mention something absent, lower is better) with its coverage (the share of the scene's objects the
# captions name), VQA accuracy (the cost), and on held-out pairs the share whose implicit-reward margin favours the
# chosen answer (0.5 for the untrained model, which is its own reference):

# %%
dpo_res = RESULTS["dpo"]
metrics = (("pope", "POPE"), ("chair_s", "CHAIR_s (low=good)"), ("coverage", "coverage"), ("vqa", "VQA"),
           ("pref_acc", "held-out pref."))
print(f"{dpo_res['steps']} steps of {dpo_res['batch']} pairs, lr {dpo_res['lr']:g}, beta {dpo_res['beta']:g}")
print(f"{'arm':11s}" + "".join(f"{label:>18s}"[-18:] for _, label in metrics))
table = {arm: {k: seeds_of(dpo_res["runs"], k, arm=arm) for k, _ in metrics} for arm in ("base", "dpo", "sft_chosen")}
for arm, row in table.items():
    print(f"{arm:11s}" + "".join(f"{v.mean():7.3f} ({v.min():.2f}-{v.max():.2f})" for v in row.values()))
blind = {k: float(seeds_of(dpo_res["runs"], f"{k}_blind", arm="base")[0]) for k in ("pope", "chair_s", "vqa")}
print("blind baselines:", {k: round(v, 3) for k, v in blind.items()})
dpo_, sft_ = table["dpo"], table["sft_chosen"]
beyond = {k: bool(dpo_[k].min() > sft_[k].max() or dpo_[k].max() < sft_[k].min()) for k, _ in metrics}
print("DPO and the control apart beyond their seed ranges:", beyond)
print(f"POPE: DPO's worst seed {dpo_['pope'].min():.3f}, the control's best {sft_['pope'].max():.3f}, the untrained "
      f"model {table['base']['pope'].mean():.3f}; coverage: DPO's best {dpo_['coverage'].max():.4f}, the control's "
      f"worst {sft_['coverage'].min():.4f}")
assert table["base"]["chair_s"].max() < blind["chair_s"] and table["base"]["pope"].min() > blind["pope"]  # suites see
assert beyond["pref_acc"] and beyond["vqa"] and dpo_["vqa"].min() > sft_["vqa"].max()
assert not beyond["chair_s"] and dpo_["chair_s"].min() > table["base"]["chair_s"].max()
assert beyond["pope"] and 0 < dpo_["pope"].min() - sft_["pope"].max() < 0.02  # ahead at every seed, by a hair
assert table["base"]["pope"].min() > max(dpo_["pope"].max(), sft_["pope"].max())  # both below the base, every seed
assert sft_["chair_s"].min() > table["base"]["chair_s"].max() and sft_["vqa"].max() < blind["vqa"]
assert beyond["coverage"] and dpo_["coverage"].max() < sft_["coverage"].min()  # DPO's descriptions name fewer

# %% [markdown]
# First the controls: the untrained model is better than the blind baselines on POPE and CHAIR, so both suites can
# see a difference in hallucination. Then the verdicts, against the control:
#
# * DPO learns what it was trained on: on held-out pairs the policy favours the true answer over its false twin,
#   relative to the reference, far more often than plain tuning on the chosen answers does (beyond the seed ranges).
# * It costs less: plain tuning on short captions damages VQA far more than DPO does (beyond the ranges); the
#   control's VQA falls below the blind baseline's at every seed.
# * POPE: DPO is ahead of the control at every seed, but its worst seed beats the control's best by less than two
#   points (printed above), a weak finding; and both arms lose POPE accuracy against the untrained model at every
#   seed.
# * CHAIR: DPO and the control are **within each other's spread**, and both hallucinate *more* than the untrained
#   model in long descriptions, which they were not trained to write (the pairs are short captions; the CHAIR suite
#   asks for a detailed description). No finding on caption hallucination at this scale. DPO's descriptions name
#   fewer of the scene's objects than the control's at every seed (coverage: the ranges do not overlap, but the gap
#   is smaller than the control's seed spread, so a tendency); the benchmark's docstring records
#   a longer run (300 steps at the same learning rate) that lowered CHAIR only that way, by saying less.
#
# What the toy can and cannot show: LLaVA-RLHF trains 7B and 13B LLaVAs with PPO against a reward model on 10 K human
# preferences plus its factually augmented reward, and reports MMHal-Bench and POPE gains; ours is a 400 K-parameter
# LLaVA with pairs that differ by one word. It shows the mechanics and why the control matters (most of what
# "more training on good answers" does to this model is damage), not the size of the effect.

# %% [markdown]
# ## Text-rich images
#
# Survey §3.6: reading the text in an image (a sign, a poster, a chart) is hard for VLMs trained on captions, which
# rarely spell out what is written, and for encoders at 224 px or 336 px, where small text is a few pixels high.
# LLaVAR {cite:p}`zhang2023llavar` adds instruction data about text-rich images; Monkey and LLaVA-NeXT cut a
# high-resolution image into tiles (chapter 05's AnyRes); Lumos runs a separate text recogniser and gives the
# language model the words it read. `vlm_primer.world.text_rich` writes text into Shapes World: letters, digits
# and short words on objects (black or white by the object's brightness) and on signs, each with its box, so OCR
# targets, text questions ("what word is on the blue square?") and LLaVAR-style instructions come from the scene:

# %%
def text_scene_at(seed, size):
    from vlm_primer.world import WorldConfig
    return text_rich.sample_text_scene(seed, WorldConfig(image_size=size, max_objects=4), num_signs=(1, 2))


fig, axes = plt.subplots(3, 4, figsize=(12, 9.2))
for col, seed in enumerate((0, 3, 7, 11)):
    image = text_rich.render_text_scene(text_scene_at(seed, 128))
    for row, size in enumerate((128, 64, 32)):
        seen = F.avg_pool2d(image[None], 128 // size)[0] if size < 128 else image  # what a smaller encoder sees
        axes[row, col].imshow(seen.permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[row, col].set_title(f"seen at {size} px", fontsize=9)
        axes[row, col].axis("off")
fig.suptitle("text-rich scenes drawn at 128 px and averaged down to what a lower-resolution encoder sees", fontsize=10)
plt.tight_layout()
plt.show()
ts = text_scene_at(3, 128)
print("OCR targets, in reading order:", [(t, tuple(int(v) for v in box)) for t, box in text_rich.ocr_targets(ts)])
print("described:", text_rich.describe_text_scene(ts, np.random.default_rng(0)))

# %% [markdown]
# The default text size is a twelfth of the image side, so the text keeps its share of the image while its pixels
# shrink with the resolution. How far apart two words stay as the text shrinks: every three-letter word drawn at
# each size, the smallest distance between two of them (each word's ink padded to a common box and scaled to the
# same pixel count, so sizes compare):

# %%
def separation(size, words):
    masks = [text_rich.text_mask(w, size) for w in words]
    h, w = max(m.shape[0] for m in masks), max(m.shape[1] for m in masks)
    flat = torch.stack([torch.from_numpy(np.pad(m, ((0, h - m.shape[0]), (0, w - m.shape[1])))).flatten()
                        for m in masks]) / np.sqrt(h * w)
    d = torch.cdist(flat, flat) + torch.eye(len(words)) * 1e9
    return float(d.min()), float(torch.median(d[d < 1e8]))


three = [w for w in text_rich.WORDS if len(w) == 3]
sizes = [3, 4, 5, 7, 10, 14, 21]
seps = {s: separation(s, three) for s in sizes}
fig, ax = plt.subplots(1, 2, figsize=(10, 2.8), gridspec_kw=dict(width_ratios=[1.2, 1]))
ax[0].plot(sizes, [seps[s][0] for s in sizes], "o-", label="closest two words")
ax[0].plot(sizes, [seps[s][1] for s in sizes], "s-", label="median pair")
ax[0].set_xlabel("text size (px): 5 at 64-px images, 10 at 128, 21 at 256")
ax[0].set_ylabel("RMS ink distance")
ax[0].set_title("how far apart two three-letter words are", fontsize=9)
ax[0].legend(fontsize=8)
ax[1].axis("off")
for i, s in enumerate((3, 5, 10, 21)):
    inset = ax[1].inset_axes([i / 4, 0, 0.24, 1])
    inset.imshow(text_rich.text_mask("CAT", s), cmap="gray", interpolation="nearest")
    inset.set_title(f"CAT at {s} px", fontsize=8)
    inset.axis("off")
plt.tight_layout()
plt.show()
print({s: round(v[0], 3) for s, v in seps.items()})
assert seps[3][0] < 0.5 * seps[10][0]

# %% [markdown]
# At 3 px the closest two words are less than half as far apart as at 10 px: reading asks for resolution, which is
# what tiles and a separate recogniser buy. The text-VQA questions, and what a blind model gets from the question
# alone (for each question type, the answer most often right on the training questions), scored with ANLS, the
# metric of text VQA (chapter 07's `anls`, equal to the `anls` package):

# %%
from vlm_primer.evaluation import anls_score  # noqa: E402

train_q = text_rich.TextVQADataset("train", 600, seed=0)
test_q = text_rich.TextVQADataset("test", 300, seed=0)
prior = {}
for i in range(len(train_q)):
    q = train_q.question(i)
    prior.setdefault(q.qtype, []).append(q.answer)
prior = {t: max(sorted(set(a)), key=a.count) for t, a in prior.items()}  # ties: the first in sorted order
by_type = {}
for i in range(len(test_q)):
    q = test_q.question(i)
    by_type.setdefault(q.qtype, ([], []))
    by_type[q.qtype][0].append(prior.get(q.qtype, ""))
    by_type[q.qtype][1].append([q.answer])
for t, (pred, refs) in sorted(by_type.items()):
    example = next(test_q.question(i) for i in range(len(test_q)) if test_q.question(i).qtype == t)
    print(f"{t:12s} blind ANLS {anls_score(pred, refs):.2f}  e.g. {example.question!r} -> {example.answer!r}")
read = [t for t in by_type if t.startswith("read")]
blind_read = anls_score(sum((by_type[t][0] for t in read), []), sum((by_type[t][1] for t in read), []))
print(f"blind ANLS on the reading questions: {blind_read:.2f}")
assert blind_read < 0.2

# %% [markdown]
# ### Reading needs pixels: a recogniser at three resolutions
#
# Before comparing VLMs, a control that the task can see resolution at all. The task from here on: one sign per
# 96 px scene carries a digit drawn 10 px high ("what number is written on the sign?", ten answers, chance 0.1).
# Lumos's recogniser at its smallest (`vlm_primer.recipes.ocr.TextRecognizer`: three convolutions over the crop of
# each text box, a classifier over the ten digits) is trained and tested on the image as drawn, and on the image
# averaged down to 48 and 32 px (what a lower-resolution encoder keeps), 150 steps each:

# %%
from vlm_primer.recipes import ocr  # noqa: E402
from vlm_primer.world import WorldConfig  # noqa: E402

reading = dict(qtypes=("read_sign",), num_texted=(0, 1), num_signs=1, vocabulary=text_rich.DIGITS, text_size=10)
world96 = WorldConfig(image_size=96, sizes=("large",), max_objects=2)


def drawn(split, n):
    data = text_rich.TextVQADataset(split, n, world96, seed=0, **reading)
    return [(text_rich.render_text_scene(ts), ts) for ts in (data.text_scene(i)[0] for i in range(n))]


def seen_at(scenes, size):  # averaged down to `size` px and back up: the pixels a `size`-px encoder keeps
    k = 96 // size
    return [(F.interpolate(F.avg_pool2d(im[None], k), scale_factor=k, mode="nearest")[0], ts) for im, ts in scenes]


def read_accuracy(model, scenes):
    pairs = [(r, t.text) for im, ts in scenes for r, t in zip(model.read(im, ts.boxes()), ts.texts)]
    return sum(r == t for r, t in pairs) / len(pairs)


rec_train, rec_test = drawn("train", 400), drawn("test", 100)
rec_acc = {}
for size in (96, 48, 32):
    model = ocr.train_recognizer(seen_at(rec_train, size), text_rich.DIGITS, steps=150, seed=0)
    rec_acc[size] = read_accuracy(model, seen_at(rec_test, size))
print({f"{s} px": round(a, 3) for s, a in rec_acc.items()}, "(chance 0.1)")
assert rec_acc[96] > 0.6 and rec_acc[96] > rec_acc[48] + 0.2 and rec_acc[32] < 0.3 and rec_acc[48] < 0.5

# %% [markdown]
# At 96 px the recogniser reads most digits; averaged down to 48 px, with the same training, it reads fewer than
# half of them (printed above), and at 32 px it is at chance. The test sees resolution. Now the VLMs
# (`benchmarks/bench_text_reading.py`, three seeds, its command in the results file): chapter 05's
# `llava-next-tiny`, which has never seen text, learns the reading question in three ways at the same budget
# (1,200 steps of 32 questions, the tower trained too) and is scored on 300 held-out questions:
#
# * **squeezed**: LLaVAR's recipe {cite:p}`zhang2023llavar`, text-reading instruction data, with the image squeezed
#   to the tower's 48 px (136 visual tokens);
# * **tiles**: the same data through AnyRes tiles of the 96 px image (Monkey's {cite:p}`li2024monkey` and
#   LLaVA-NeXT's high-resolution tiles: 336 visual tokens);
# * **recogniser**: Lumos's decoupling {cite:p}`shenoy2024lumos`: the recogniser above (trained on 2,000 other
#   scenes) reads each text box at 96 px and the LLM gets the squeezed image and the line "ocr: 7 (top right)."
#   before the question ({term}`scene-text recognition`; the boxes come from the scene, a perfect detector).
#
# Beside them the untrained model and the blind control (the most frequent training answer):

# %%
tr_res = RESULTS["text_reading"]
tr_arms = ("base", "squeezed", "tiles", "recognizer")
tr_runs = {a: [r for r in tr_res["runs"] if r["arm"] == a] for a in tr_arms}
assert all(len({r["seed"] for r in runs}) >= 3 for runs in tr_runs.values())
tr_acc = {a: np.array([r["accuracy"] for r in runs]) for a, runs in tr_runs.items()}
print(f"{'arm':11s} {'visual':>6s} {'text':>5s}  accuracy (3 seeds)   ANLS")
for a, runs in tr_runs.items():
    anls = [r["anls"] for r in runs]
    print(f"{a:11s} {runs[0]['visual_tokens']:6d} {runs[0]['text_tokens']:5.1f}  "
          f"{tr_acc[a].min():.3f}-{tr_acc[a].max():.3f}        {min(anls):.3f}-{max(anls):.3f}")
print(f"blind control: {tr_res['blind']:.3f}; the recogniser alone reads "
      f"{min(r['recognizer_accuracy'] for r in tr_runs['recognizer']):.3f}-"
      f"{max(r['recognizer_accuracy'] for r in tr_runs['recognizer']):.3f} of the test signs")
fig, ax = plt.subplots(figsize=(6.5, 3.2))
for a, runs in tr_runs.items():
    tokens = runs[0]["visual_tokens"] + runs[0]["text_tokens"]
    ax.plot([tokens] * len(runs), tr_acc[a], "o", label=f"{a} ({runs[0]['visual_tokens']} visual tokens)")
ax.axhline(tr_res["blind"], ls=":", color="k", lw=1, label="blind control")
ax.set_xlabel("prompt tokens (visual + text)")
ax.set_ylabel("reading accuracy")
ax.set_title("reading a 10 px digit: accuracy against what the LLM is given", fontsize=9)
ax.legend(fontsize=7)
plt.tight_layout()
plt.show()
assert tr_acc["recognizer"].min() > 0.95 and tr_acc["recognizer"].min() > tr_acc["tiles"].max() + 0.5
assert tr_acc["squeezed"].max() < tr_res["blind"] + 0.05 and tr_acc["base"].max() < tr_res["blind"] + 0.05
assert tr_acc["tiles"].min() > tr_acc["squeezed"].max()

# %% [markdown]
# **Only the recogniser reads**: every sign at every seed, for the squeezed image's 136 visual tokens and 16 text
# tokens more. The squeezed image stays at the blind control: at 48 px the 5 px digit is mostly gone (the recogniser
# above keeps fewer than half of them, the LLM nothing above the blind control). The tiles, with 2.5 times the visual tokens, are above the squeezed image at every seed but
# far from reading (the benchmark's probes: at 400 steps they stayed at chance), so reading end to end is learnable
# here, slowly, where a three-layer network trained on the words themselves learns it in the few seconds of the cell
# above. Two things the toy leaves out: the recogniser's boxes come
# from the scene (a perfect detector: a real one adds its own misses), and the answer is one of ten digits, a closed
# vocabulary that a real recogniser does not have.
#
# The papers, with their settings: LLaVAR adds 422 K noisy instruction examples built from OCR of LAION's text-rich
# images and 16 K GPT-4 conversations, and reports up to 20 % higher accuracy on text-VQA benchmarks; Monkey reads
# images of up to 1344 x 896 pixels as 448 px windows; Lumos's on-device recogniser raises the accuracy of its
# multimodal LLM on its in-the-wild text questions by 28 % (to about 80 %). Ours illustrates why the three exist; it
# reproduces none of their numbers.

# %% [markdown]
# ## Parameter-efficient fine-tuning
#
# Survey §3.7: fine-tuning every weight of a VLM costs a copy of the model and its optimiser state per task. The
# alternatives train a few new parameters and freeze the rest.
#
# * **{term}`LoRA`** {cite:p}`hu2022lora` learns a low-rank update beside each frozen linear layer $W$:
#   $h = Wx + b + \frac{\alpha}{r} B A x$ with $A \in \mathbb{R}^{r \times d_\text{in}}$, $B \in
#   \mathbb{R}^{d_\text{out} \times r}$ starting at zero, so training starts at the pretrained model;
#   $r(d_\text{in} + d_\text{out})$ numbers instead of $d_\text{in} d_\text{out}$, folded into $W$ afterwards.
# * **DoRA** {cite:p}`liu2024dora` splits each row of the weight into a magnitude $m$ and a direction that LoRA
#   updates: $W' = m \cdot \frac{W + \frac{\alpha}{r} BA}{\lVert W + \frac{\alpha}{r} BA \rVert_\text{row}}$.
# * **VeRA** {cite:p}`kopiczko2024vera` shares one pair of frozen random matrices across all layers and trains two
#   scaling vectors per layer: $h = Wx + b + \Lambda_b B \Lambda_d A x$.
# * **{term}`QLoRA`** {cite:p}`dettmers2023qlora` stores the frozen $W$ in 4-bit NormalFloat (NF4, 16 levels at the
#   quantiles of a normal distribution, blocks of 64 scaled by their absolute maximum, the scales themselves in 8
#   bits) and trains LoRA on top.
# * **{term}`Prompt tuning <prompt tuning>`**: CoOp {cite:p}`zhou2022coop` learns the context words in front of each class name
#   ("[V]₁ [V]₂ [V]₃ [V]₄ red circle"), shared or per class; VPT {cite:p}`jia2022vpt` adds learnt tokens to the vision
#   transformer's input (shallow) or to every block's (deep).
# * **CLIP-Adapter** {cite:p}`gao2024clipadapter` puts a bottleneck MLP $A$ on the image embedding and blends it in,
#   $f' = \alpha A(f) + (1 - \alpha) f$.
#
# The package's LoRA, DoRA and VeRA equal `peft`'s (`LoraConfig`, `use_dora=True`, `VeraConfig`) on the same
# weights, and its NF4 levels are the paper's table; CoOp built from the words "a photo of a" is exactly the
# hand-written prompt (all in the tests). One LoRA layer by hand against the package:

# %%
torch.manual_seed(0)
base_layer = torch.nn.Linear(64, 32)
layer = peft.LoRALinear(base_layer, r=4, alpha=8.0)
torch.nn.init.normal_(layer.B, std=0.1)  # a trained adapter: B is no longer zero
x = torch.randn(5, 64)
by_hand = x @ base_layer.weight.T + base_layer.bias + (8.0 / 4) * (x @ layer.A.T @ layer.B.T)
torch.testing.assert_close(layer(x), by_hand)
merged = peft.merge_adapters(torch.nn.Sequential(layer), unload=True)[0]
torch.testing.assert_close(merged(x), by_hand, rtol=1e-5, atol=1e-5)
print(f"LoRA r=4 on a 64 -> 32 layer: {4 * (64 + 32)} trainable numbers instead of {64 * 32 + 32}; merged back into "
      f"an nn.Linear ({type(merged).__name__}) it computes the same")

# %% [markdown]
# Why NormalFloat: trained weights are close to normally distributed, so levels at the normal's quantiles waste
# fewer codes on values that rarely occur than 15 evenly spaced levels do. On a normal weight matrix, the error of
# the 4-bit round trip and its storage cost:

# %%
w = torch.randn(256, 256) * 0.02
q = quant.nf4_quantize(w)
nf4_err = ((quant.nf4_dequantize(q) - w).norm() / w.norm()).item()
blocks = w.reshape(-1, 64)
scale = blocks.abs().amax(1, keepdim=True) / 7
int4_err = (((blocks / scale).round().clamp(-7, 7) * scale).reshape(w.shape) - w).norm().item() / w.norm().item()
fig, ax = plt.subplots(figsize=(6.5, 2.4))
ax.hist((w.reshape(-1, 64) / w.reshape(-1, 64).abs().amax(1, keepdim=True)).flatten().numpy(), bins=80,
        color="0.7", density=True, label="weights / block absmax")
for v in quant.NF4.tolist():
    ax.axvline(v, color="tab:red", lw=0.8)
for v in np.linspace(-1, 1, 15):
    ax.axvline(v, color="tab:blue", lw=0.8, ls=":")
ax.set_title("NF4 levels (red) and 15 evenly spaced int4 levels (blue, dotted)", fontsize=9)
plt.show()
print(f"relative error: NF4 {nf4_err:.3f}, int4 absmax {int4_err:.3f}; NF4 with double quantisation stores "
      f"{q.bits_per_parameter():.3f} bits per weight (fp32: 32)")
assert nf4_err < 0.9 * int4_err and q.bits_per_parameter() < 4.2

# %% [markdown]
# On normally distributed weights NF4's round trip is more accurate than 15 evenly spaced levels with the same
# block scaling (the printed relative errors), at about 4.13 bits per weight with its constants: QLoRA's memory
# saving comes from the frozen weights, while the adapters train in 16-bit in the paper (fp32 here).
#
# **The comparison.** `benchmarks/bench_peft.py` adapts the zoo's `clip-tiny` (which names solid single objects
# almost perfectly) to **striped** objects, a texture it never saw, from a few images per class. Every method gets
# the same budget (the same steps over the same batches); each its own learning rate, chosen on a validation split
# of training scenes, never on the test set. The table: trainable parameters, memory for training (a formula: the
# frozen weights at their storage precision plus 16 bytes per trainable parameter for the fp32 weight, its gradient
# and AdamW's two moments), the median step time, and top-1 over the 48 names on striped test images (the gain) and on
# solid ones (what the adaptation costs on the old domain), mean and range over three seeds:

# %%
peft_res = RESULTS["peft"]
table_runs = peft_res["runs"]
methods = peft_res["methods"]
blind_top1 = np.array([r["blind_top1"] for r in table_runs if r["method"] == "zero_shot"])
print(f"{peft_res['shots']} striped images per class present ({len(blind_top1)} seeds), {peft_res['steps']} steps of "
      f"{peft_res['batch']}; blind control (always the most frequent training class): {blind_top1.mean():.3f}")
print(f"{'method':13s}{'trainable':>11s}{'memory':>9s}{'ms/step':>9s}{'lr':>8s}{'striped':>20s}{'solid':>20s}")
rows = {}
for m in methods:
    runs_m = sorted((r for r in table_runs if r["method"] == m), key=lambda r: r["seed"])
    st, so = (np.array([r[k] for r in runs_m]) for k in ("striped_top1", "solid_top1"))
    times = [r["step_ms"] for r in runs_m if r["step_ms"] is not None]
    rows[m] = dict(trainable=runs_m[0]["trainable"], mb=runs_m[0]["memory_bytes"] / 2**20,
                   ms=float(np.median(times)) if times else float("nan"), striped=st, solid=so)
    print(f"{m:13s}{runs_m[0]['trainable']:11,d}{rows[m]['mb']:8.2f}M{rows[m]['ms']:9.1f}"
          f"{peft_res['lrs'].get(m, 0):8.0e}{st.mean():11.3f} ({st.min():.2f}-{st.max():.2f})"
          f"{so.mean():11.3f} ({so.min():.2f}-{so.max():.2f})")


def apart(a, b, key="striped"):
    """Whether two methods' seed ranges do not overlap."""
    x, y = rows[a][key], rows[b][key]
    return x.min() > y.max() or y.min() > x.max()


fig, ax = plt.subplots(figsize=(7.5, 3.8))
for m, r in rows.items():
    x = max(r["trainable"], 1)
    ax.errorbar(x, r["striped"].mean(), yerr=[[r["striped"].mean() - r["striped"].min()],
                [r["striped"].max() - r["striped"].mean()]], fmt="o", capsize=3)
    ax.annotate(m, (x, r["striped"].mean()), fontsize=7, textcoords="offset points",
                xytext={"vpt_deep": (6, -10), "dora": (6, -12), "qlora": (-34, -12), "linear_probe": (-62, 4)}.get(m, (4, 3)))
ax.axhline(blind_top1.mean(), color="k", ls=":", lw=1)
ax.set_xscale("log")
ax.set_xlabel("trainable parameters (zero-shot drawn at 1)")
ax.set_ylabel("striped top-1")
ax.set_title("few-shot adaptation to a new texture at equal budget (range over 3 seeds; blind dotted)", fontsize=9)
plt.show()
trained = [m for m in methods if m != "zero_shot"]
top = ["full", "lora", "dora", "vera", "qlora", "linear_probe"]
print("separated pairs in the top group:", [(a, b) for k, a in enumerate(top) for b in top[k + 1:] if apart(a, b)])
assert rows["zero_shot"]["striped"].min() > blind_top1.max()
assert all(rows[m]["striped"].min() > rows["zero_shot"]["striped"].max() for m in trained)
assert not apart("lora", "full") and not apart("qlora", "lora")
assert all(rows[m]["striped"].min() > rows[p]["striped"].max() for m in top for p in ("coop", "vpt_shallow"))
tiers = [top, ["clip_adapter", "coop_cs"], ["vpt_shallow", "vpt_deep"], ["coop"]]  # the order the text gives
assert all(min(rows[m]["striped"].min() for m in hi) > max(rows[m]["striped"].max() for m in lo)
           for hi, lo in zip(tiers, tiers[1:]))  # each tier's worst seed above the next tier's best
assert all(rows[m]["solid"].max() < rows["zero_shot"]["solid"].min() - 0.4 for m in trained)
assert all(rows["coop"]["solid"].min() > rows[m]["solid"].max() for m in trained if m != "coop")
assert rows["qlora"]["mb"] < 0.5 * rows["lora"]["mb"] and rows["full"]["trainable"] > 10 * rows["lora"]["trainable"]
assert rows["lora"]["ms"] > rows["full"]["ms"] and all(rows[m]["ms"] < 0.5 * rows["lora"]["ms"]
                                                       for m in ("linear_probe", "clip_adapter", "coop"))

# %% [markdown]
# What holds at every seed:
#
# * Every method, given 4 images per class, lifts the striped accuracy far above zero-shot (which is above the blind
#   control). The weight-updating methods and the linear probe form a top group; **LoRA is within full
#   fine-tuning's seed range** with a thirteenth of its trainable parameters, and **QLoRA within LoRA's** with its
#   frozen weights in 4 bits (about half the memory in our formula; the printed pairs are the only ones of the
#   group whose seed ranges do not overlap, and each by less than its seed spread: tendencies, not findings). Below them CLIP-Adapter and class-specific CoOp, then VPT, then unified CoOp,
#   which has only 256 numbers to learn with.
# * Every method **forgets**: solid accuracy falls from 98 % to between a sixth and a half. Unified CoOp, which only
#   rewrites four words shared by all classes, forgets least. The few-shot set is striped objects only; the
#   methods are told nothing about keeping the old domain.
# * At this size the savings are memory, not time: a LoRA step is not faster than a full one (the printed
#   milliseconds; the frozen weights still run forward and backward), and DoRA's normalisation and QLoRA's
#   dequantisation cost more. The methods that never backpropagate through the tower (linear probe,
#   CLIP-Adapter, CoOp) are the fast ones.
#
# The papers' claims, with their settings: LoRA matches full fine-tuning of GPT-3 175B on GLUE-style and
# generation benchmarks with 10,000 times fewer trainable parameters; QLoRA fine-tunes a 65B model on one 48 GB GPU
# and matches 16-bit fine-tuning; CoOp beats hand-written prompts on 11 image-classification datasets at 1 to 16
# shots. Here a 370 K-parameter CLIP and one texture shift: the ordering and the forgetting are ours, not theirs.

# %% [markdown]
# The widget reads the benchmark's LoRA rank sweep (same budget, each rank its own learning rate, three seeds):
# how the striped accuracy and the trainable-parameter count move with the rank $r$ (LoRA on all 36 linear layers
# of both towers, $\alpha = 2r$).

# %%
# the sweep and the table's LoRA runs (r = 4, which the sweep repeats), one run per rank and seed
sweep = list({(r["r"], r["seed"]): r for r in [r for r in table_runs if r["method"] == "lora"]
              + peft_res["rank_sweep"]["runs"]}.values())
ranks = sorted({r["r"] for r in sweep})
by_rank = {k: np.array([r["striped_top1"] for r in sweep if r["r"] == k]) for k in ranks}
assert all(len(v) == len(blind_top1) for v in by_rank.values())  # every rank at every seed, once
assert all(by_rank[k].min() <= by_rank[4].max() and by_rank[k].max() >= by_rank[4].min() for k in ranks)


def show_rank(r=8):
    fig, ax = plt.subplots(1, 2, figsize=(9, 2.8))
    for rank in ranks:
        ax[0].plot([rank] * len(by_rank[rank]), by_rank[rank], "o", color="tab:red" if rank == r else "0.6")
        ax[1].bar(str(rank), next(x["trainable"] for x in sweep if x["r"] == rank),
                  color="tab:red" if rank == r else "0.6")
    ax[0].set_xscale("log", base=2)
    ax[0].axhline(rows["full"]["striped"].mean(), ls=":", color="k", lw=1, label="full fine-tuning (mean)")
    ax[0].set_title("striped top-1 by LoRA rank (3 seeds)", fontsize=9)
    ax[0].legend(fontsize=7)
    ax[1].set_title("trainable parameters by rank", fontsize=9)
    plt.tight_layout()
    plt.show()
    print(f"r = {r}: {next(x['trainable'] for x in sweep if x['r'] == r):,} trainable parameters, striped top-1 "
          f"{by_rank[r].mean():.3f} ({by_rank[r].min():.3f}-{by_rank[r].max():.3f}), lr "
          f"{peft_res['rank_sweep']['lrs'].get(str(r), peft_res['lrs']['lora']):g}")


display(widgets.interactive(show_rank, r=widgets.SelectionSlider(options=ranks, value=8)))

# %% [markdown]
# Every rank's range overlaps rank 4's: from 7 K to 110 K trainable numbers, no measurable difference on this
# task, as LoRA's paper found that very small ranks suffice for adaptation.

# %% [markdown]
# ### One adapter for two tasks: VL-Adapter
#
# **{term}`Adapters <adapter>`** {cite:p}`houlsby2019adapters` are the oldest of these methods: a small bottleneck
# MLP after each frozen sub-layer, $y \mapsto y + W_\text{up}\,\sigma(W_\text{down}\, y)$ with $W_\text{up}$
# starting near zero in the paper (exactly zero here), so a fresh adapter is close to the identity. VL-Adapter
# {cite:p}`sung2022vladapter` puts them in the language model of a CLIP + LM model (training the visual projection
# and the layer norms with them) and asks what to share across vision-language tasks: one adapter set per task,
# or **one set shared by every task**, trained on all of them at once. Its answer: the shared set matches the
# per-task sets at a fraction of their parameters (on VQAv2, GQA, NLVR² and COCO captions, with 4.18 % of the
# parameters updated it matches full fine-tuning). The adapter, by hand and from the
# package (`vlm_primer.recipes.vl_adapter`, put after every attention and MLP sub-layer of the LLaVA's LM by
# `apply_adapters`):

# %%
from vlm_primer.recipes import vl_adapter  # noqa: E402

torch.manual_seed(0)
adapter = vl_adapter.BottleneckAdapter(64, reduction=8)
with torch.no_grad():
    adapter.up.weight.normal_(0, 0.1)  # a trained adapter (a fresh one is the identity: up starts at zero)
y = torch.randn(2, 5, 64)
by_hand = y + torch.relu(y @ adapter.down.weight.T + adapter.down.bias) @ adapter.up.weight.T + adapter.up.bias
assert torch.allclose(adapter(y), by_hand, atol=1e-6)
assert torch.equal(vl_adapter.BottleneckAdapter(64, 8)(y), y)

# %% [markdown]
# The experiment (`benchmarks/bench_vl_adapter.py`, three seeds, the command in the results file): a stage-1 LLaVA
# (its connector aligned on captions, its LM has never seen a question) learns two tasks of LLaVA's stage 2, short
# VQA answers and instructions (conversations, descriptions, reasoning), 300 batches of 32 of each. Arms: two fully
# fine-tuned models (connector and LM), one adapter set per task (with its own connector and layer norms), one
# shared adapter set trained on the two tasks mixed (as many examples of each), and one fully fine-tuned model on
# the mixture. Scores: VQA accuracy (its blind control beside it) and the held-out answer loss of the instructions;
# "trainable" is what both tasks together add to the frozen model.

# %%
vla_res = RESULTS["vl_adapter"]
vla = {a: [r for r in vla_res["runs"] if r["arm"] == a] for a in
       ("stage1", "full_per_task", "adapter_per_task", "adapter_shared", "full_shared")}
assert all(len({r["seed"] for r in runs}) >= 3 for runs in vla.values())
rng_of = {a: {k: (min(r[k] for r in runs), max(r[k] for r in runs)) for k in ("vqa", "instruct_loss")}
          for a, runs in vla.items()}
print(f"{'arm':17s} {'trainable':>10s}  {'VQA accuracy':>13s}  {'instruction loss':>16s}   (3 seeds: min-max)")
for a, runs in vla.items():
    v, i = rng_of[a]["vqa"], rng_of[a]["instruct_loss"]
    print(f"{a:17s} {runs[0]['trainable']:10,d}  {v[0]:.3f}-{v[1]:.3f}  {i[0]:8.3f}-{i[1]:.3f}")
trained_min = min(rng_of[a]["vqa"][0] for a in vla if a != "stage1")
print(f"blind VQA control: {vla_res['vqa_blind']:.3f}; the weakest trained run is above it by "
      f"{trained_min - vla_res['vqa_blind']:.3f}")
fig, ax = plt.subplots(1, 2, figsize=(10, 3))
for a, runs in vla.items():
    if a == "stage1":
        continue
    n = runs[0]["trainable"]
    for k, axis in (("vqa", ax[0]), ("instruct_loss", ax[1])):
        axis.plot([n] * len(runs), [r[k] for r in runs], "o", label=a)
ax[0].axhline(vla_res["vqa_blind"], ls=":", color="k", lw=1, label="blind control")
for axis, title in zip(ax, ("VQA accuracy (higher is better)", "instruction answer loss (lower is better)")):
    axis.set_xscale("log")
    axis.minorticks_off()
    axis.set_xlabel("trainable parameters for both tasks (log scale)")
    axis.set_title(title, fontsize=9)
ax[0].legend(fontsize=7)
plt.tight_layout()
plt.show()
n = {a: runs[0]["trainable"] for a, runs in vla.items()}
overlap = lambda a, b, k: rng_of[a][k][0] <= rng_of[b][k][1] and rng_of[b][k][0] <= rng_of[a][k][1]  # noqa: E731
assert n["adapter_per_task"] == 2 * n["adapter_shared"] and 7 * n["adapter_per_task"] < n["full_per_task"]
assert rng_of["stage1"]["vqa"][1] < vla_res["vqa_blind"] < min(rng_of[a]["vqa"][0] for a in vla if a != "stage1")
assert overlap("adapter_shared", "adapter_per_task", "vqa")  # VQA: no difference beyond the seeds
assert rng_of["adapter_shared"]["instruct_loss"][0] > rng_of["adapter_per_task"]["instruct_loss"][1]
assert rng_of["adapter_shared"]["vqa"][1] < rng_of["full_shared"]["vqa"][0]  # on the same mixture, full tuning
assert rng_of["adapter_shared"]["instruct_loss"][0] > rng_of["full_shared"]["instruct_loss"][1]  # wins on both
assert overlap("full_shared", "full_per_task", "vqa") and overlap("full_shared", "full_per_task", "instruct_loss")

# %% [markdown]
# What the seeds allow us to say. Every trained arm answers above the blind control at every seed, the weakest run by
# the printed margin (the stage-1 model, which has never seen a question, answers none). With half the parameters of
# the two per-task sets, **the shared adapter set is within their seed range on VQA** and **slightly worse on the
# instructions at every seed** (a higher held-out loss, beyond the spread): sharing adapters costs something here, on
# one of the two tasks. Sharing a *fully* fine-tuned model costs nothing measurable (the mixture's model is within the
# per-task models' ranges on both scores). Trained on the same mixture, the shared adapters trail full fine-tuning on
# both scores beyond the spread, with a seventh of its trainable parameters; per task, adapters and full fine-tuning
# overlap, because the seed spread of this tiny LLaVA is wide (VQA 0.46 to 0.61 for the same full fine-tuning). The
# bottleneck matters: 8 wide (reduction 8), the shared set trailed the per-task sets much further on seed 0 (the
# benchmark's docstring), so the comparison is run 32 wide.
#
# VL-Adapter's own figure, with its setting: a CLIP ResNet-101 image encoder and BART-base, trained on VQAv2, GQA,
# NLVR² and COCO captions at once, where a single shared adapter set updating 4.18 % of the parameters matches full
# fine-tuning. Our LM is 64 wide and has seen only Shapes World: the shared set's small cost is ours, not a
# refutation of theirs.

# %% [markdown]
# ## Gradient accumulation
#
# LLaVA trained its projection with batches of 128 and fine-tuned with batches of 32 on eight A100s
# {cite:p}`liu2023llava`; one smaller GPU holds fewer sequences. {term}`Gradient accumulation <gradient accumulation>` runs one optimizer
# step as `grad_accum_steps` micro-batches (`TrainConfig.grad_accum_steps`, `--grad-accum` in the CLI) and adds
# their gradients before the update. That equals the big batch only if each micro-batch's loss is weighed by its
# share of what the loss averages. A language model's loss is the mean over the batch's $N$ answer tokens; split into
# $k$ micro-batches $B_j$ of $N_j$ tokens with mean losses $\bar\ell_j$,
#
# $$\mathcal{L} = \frac{1}{N}\sum_{t=1}^{N}\ell_t = \sum_{j=1}^{k} \frac{N_j}{N}\,\bar\ell_j
#   \;\neq\; \frac{1}{k}\sum_{j=1}^{k}\bar\ell_j \quad\text{unless every } N_j = N/k.$$
#
# The plain average of the micro-batches' means, which many training loops computed (the `Trainer` of `transformers`
# until October 2024, its pull request #34191), gives a token in a micro-batch of short answers more weight than one in a
# micro-batch of long answers, and chapter 05's data mixes one-word VQA answers with caption sentences. Our `Trainer`
# asks the model what its loss averages, `model.loss_items(batch)` (the language models count their predicted tokens
# with `vlm_primer.nn.causal_lm_items`; a model without it is counted in samples), and weighs each micro-batch by its
# share. Under DDP, which averages the processes' gradients, the share is of the tokens of every process (one
# all-reduce per step).
#
# The gradient of `llava-tiny`'s trained parameters (stage 2: connector and language model) on 8 sequences, 4 short
# VQA answers and 4 captions, as one batch and as two micro-batches of 4 rows, once split by task and once mixed
# (the control, where the two micro-batches hold about as many tokens):

# %%
from vlm_primer.backbones.data import LlavaChatDataset, llava_collate  # noqa: E402
from vlm_primer.backbones.stages import TINY_WORLD  # noqa: E402
from vlm_primer.training import Batches, TrainConfig, Trainer  # noqa: E402

acc_model = zoo.load("llava-tiny").eval()
acc_model.set_stage(2)
chats = [LlavaChatDataset(task, size=4, seed=1, image_tokens=acc_model.tokens_per_image,
                          transform=zoo.preprocess("llava-tiny"), config=WorldConfig(**TINY_WORLD))
         for task in ("vqa", "caption")]
whole = llava_collate(acc_model.cfg.text.pad_token_id)([c[i] for c in chats for i in range(4)])
rows = lambda idx: {k: v[idx] for k, v in whole.items()}  # noqa: E731
trained = [p for p in acc_model.parameters() if p.requires_grad]


def gradient(batch):
    return torch.cat([g.flatten() for g in torch.autograd.grad(acc_model(**batch).loss, trained)])


g_whole = gradient(whole)
rel_err = lambda g: float((g - g_whole).norm() / g_whole.norm())  # noqa: E731
splits = {"by task": ([0, 1, 2, 3], [4, 5, 6, 7]), "mixed (control)": ([0, 1, 4, 5], [2, 3, 6, 7])}
accumulation = {}
for name, (first, second) in splits.items():
    micro = [rows(first), rows(second)]
    n = [acc_model.loss_items(b) for b in micro]
    g = [gradient(b) for b in micro]
    accumulation[name] = dict(tokens=n, plain=rel_err((g[0] + g[1]) / 2),
                              weighted=rel_err((n[0] * g[0] + n[1] * g[1]) / sum(n)))
    print(f"{name:16} answer tokens {n[0]:3d} + {n[1]:3d}: relative error of the plain average "
          f"{accumulation[name]['plain']:.3f}, of the token-weighted sum {accumulation[name]['weighted']:.1e}")
short_n, long_n = accumulation["by task"]["tokens"]
fig, ax = plt.subplots(figsize=(6.5, 2.6))
ax.bar([0, 1], [1 / (2 * short_n), 1 / (2 * long_n)], width=0.35, label="plain average: 1 / (k N_j)")
ax.bar([0.35, 1.35], [1 / (short_n + long_n)] * 2, width=0.35, label="token-weighted: 1 / N (the big batch)")
ax.set_xticks([0.175, 1.175], [f"a VQA answer token ({short_n} in its micro-batch)",
                               f"a caption token ({long_n} in its micro-batch)"], fontsize=8)
ax.set_ylabel("weight in the step's loss")
ax.set_title("What one token counts for, accumulated over two micro-batches", fontsize=9)
ax.legend(fontsize=7)
plt.tight_layout()
plt.show()

trainer_model = zoo.load("llava-tiny")
trainer_model.set_stage(2)
before = torch.cat([p.detach().flatten().clone() for p in trainer_model.parameters() if p.requires_grad])
one_step = TrainConfig(max_steps=1, batch_size=4, grad_accum_steps=2, grad_clip=None, warmup_steps=0, device="cpu",
                       precision="fp32", progress=False, live_plot=False)
Trainer(trainer_model, Batches([rows([0, 1, 2, 3]), rows([4, 5, 6, 7])]), one_step,
        optimizer=torch.optim.SGD([p for p in trainer_model.parameters() if p.requires_grad], lr=1.0)).fit()
after = torch.cat([p.detach().flatten() for p in trainer_model.parameters() if p.requires_grad])
trainer_err = rel_err(before - after)  # plain SGD at lr 1: the update is minus the accumulated gradient
print(f"the Trainer's accumulated step (SGD, lr 1) against the big batch's gradient: relative error {trainer_err:.1e}")
mixed_n = accumulation["mixed (control)"]["tokens"]
assert long_n > 3 * short_n and abs(mixed_n[0] - mixed_n[1]) <= 0.2 * sum(mixed_n)
assert accumulation["by task"]["plain"] > 0.1 > 10 * accumulation["mixed (control)"]["plain"]
assert max(a["weighted"] for a in accumulation.values()) < 1e-5 and trainer_err < 1e-5

# %% [markdown]
# Split by task, the plain average is far from the big batch's gradient: each VQA token counts several times as
# much as a caption token. Mixed, the two micro-batches hold as many tokens, or nearly, and the plain average is
# right or close: the error goes unnoticed on data of even lengths. Weighted by tokens, accumulation gives the big
# batch's gradient to float32 round-off, and so does the `Trainer`. One caveat: the equality is of gradients, and it
# holds for losses that are means over items; a contrastive loss is not, as its negatives are the other samples of
# the same batch, so accumulated CLIP micro-batches see fewer negatives than the big batch, whatever the weights
# (chapter 02, §SigLIP vs CLIP across batch sizes, measures what batch size does to them).

# %% [markdown]
# ## GPU-ready training
#
# The project's entry point runs both recipes at paper shapes: `--peft lora|dora|qlora|vera` on any recipe puts
# adapters on the model's trainable linear layers (`recipes.peft.apply_peft`; LLaVA's connector stays fully
# trained, as in LLaVA-1.5's LoRA recipe), and `dpo` trains a LLaVA on the preference pairs against its frozen
# copy (`recipes.alignment.DPOModel`). `--preset base` is LLaVA-1.5-7B's shapes with random weights unless
# `--set init=` loads trained ones:
#
# ```bash
# torchrun --nproc_per_node 8 -m vlm_primer.train llava --preset base --stage 2 --peft lora --peft-r 128 \
#     --precision bf16 --set init=runs/llava-s1 --batch-size 16 --ckpt-dir runs/llava-lora
# torchrun --nproc_per_node 8 -m vlm_primer.train dpo --preset base --precision bf16 \
#     --set init=runs/llava-s2 --set beta=0.1 --batch-size 8 --ckpt-dir runs/llava-dpo
# ```
#
# Here the same entry point runs a few steps of each at `tiny`:

# %%
from vlm_primer.train import main as train_main  # noqa: E402

common = ["--preset", "tiny", "--batch-size", "8", "--steps", "2", "--no-progress", "--device", "cpu",
          "--precision", "fp32", "--set", "train_size=64"]
h_lora = train_main(["llava", "--stage", "2", "--peft", "lora", "--peft-r", "8", *common])
h_dpo = train_main(["dpo", "--set", "beta=0.1", *common])
assert h_lora[-1]["step"] == h_dpo[-1]["step"] == 2 and abs(h_dpo[-1]["loss"] - np.log(2)) < 0.01

# %% [markdown]
# ## Summary
#
# * **Grounding**: X-VLM's recipe (a cross-modal encoder, a box head, L1 + GIoU) on chapter 02's towers finds the
#   object a referring expression names, relations included, far above the largest-object control; Kosmos-2's
#   location tokens keep a box to within a bin at 32 bins, and the tiny LLaVA taught to write them beats the control
#   at every seed but not the regression grounder.
# * **Negative captions**: at this scale NegCLIP's hard negatives do not move the ARO-style score beyond the seed
#   spread, from scratch or fine-tuned, and a blind text prior is as high as the best model on the suite.
# * **Alignment**: DPO on preference pairs written from the scene graph lowers its loss from $\log 2$ within a few
#   steps; against the control that trains on the chosen answers alone it wins on held-out preferences and costs
#   far less VQA accuracy (beyond the seed ranges), leads on POPE by a hair (both arms below the untrained model),
#   and does not change caption
#   hallucination (CHAIR within the spread, both arms worse than the untrained model on long descriptions).
# * **Text-rich images**: text keeps its share of the image but loses its pixels as the resolution falls: at 3 px
#   the closest two words are less than half as far apart as at 10 px, and a blind model reads almost nothing
#   (ANLS near zero on the reading questions). A small recogniser reads most 10 px digits at 96 px and fewer than half at 48 px.
#   At equal budget a LLaVA-NeXT given the squeezed image stays at chance, one given AnyRes tiles (2.5 times the
#   visual tokens) has barely begun to read, and one given a Lumos-style recogniser's words reads every sign for
#   16 text tokens more.
# * **PEFT**: from 4 images per class, every method lifts a CLIP far above zero-shot on a new texture; LoRA is within
#   full fine-tuning's seed range with a thirteenth of its trainable parameters and QLoRA within LoRA's with 4-bit
#   frozen weights; the LoRA rank makes no measurable difference; every method forgets the old domain, unified CoOp
#   least; at this size the savings are memory, not step time. In a LLaVA's language model, one adapter set shared
#   by two tasks matches the per-task sets on VQA and costs a little on the instructions, with half their
#   parameters.
# * **Gradient accumulation**: micro-batches equal the big batch when each one's mean loss is weighed by its share of
#   the tokens the loss averages (`loss_items`); the plain average of their means is far off when short and long
#   answers fall in different micro-batches, and close when they mix.
#
# ## Exercises
#
# Write each answer in the cell below and run it: `check` runs hidden tests and says what is wrong, never what the
# answer is.
#
# 1. **GIoU** (`06b.1`). Write `giou(a, b)` for two boxes `(x0, y0, x1, y1)`.
# 2. **Kosmos-2 location tokens** (`06b.2`). Write `location_tokens(box, bins)`: the patch indices of the top-left
#    and bottom-right corners of a normalised box.
# 3. **The DPO loss** (`06b.3`). Write `dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)`: the
#    mean loss over pairs of sequence log-probabilities.
# 4. **LoRA's forward pass** (`06b.4`). Write `lora_forward(x, W, b, A, B, alpha)` with the rank read from `A`.
# 5. **Rounding a block to NF4** (`06b.5`). Write `nf4_block(x, levels)`: the dequantised values of one block
#    (absmax scaling, nearest level).
# 6. **CLIP-Adapter's blend** (`06b.6`). Write `clip_adapter_blend(f, W1, W2, alpha)` for a bias-free two-layer
#    adapter with ReLUs.
# 7. **Accumulated loss** (`06b.7`). Write `accumulated_loss(losses, items)`: the loss of the big batch from the mean
#    losses of its micro-batches and the number of items (answer tokens) each averages over.

# %%
from vlm_primer.exercises import check  # noqa: E402


def giou(a, b):
    raise NotImplementedError  # your code here


def location_tokens(box, bins):
    raise NotImplementedError


def dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    raise NotImplementedError


def lora_forward(x, W, b, A, B, alpha):
    raise NotImplementedError


def nf4_block(x, levels):
    raise NotImplementedError


def clip_adapter_blend(f, W1, W2, alpha):
    raise NotImplementedError


def accumulated_loss(losses, items):
    raise NotImplementedError


for exercise_id, answer in [("06b.1", giou), ("06b.2", location_tokens), ("06b.3", dpo), ("06b.4", lora_forward),
                            ("06b.5", nf4_block), ("06b.6", clip_adapter_blend), ("06b.7", accumulated_loss)]:
    check(exercise_id, answer)

# %%
elapsed = time.time() - T_START
print(f"referring accuracy {acc['all']:.3f} (control {base['all']:.3f}); chapter executed in {elapsed:.0f} s at "
      f"scale {SCALE!r}")
