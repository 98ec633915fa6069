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
# # 08 · Video: Shapes World in motion, VideoBERT, MERLOT, Video-LLaMA and Video-LLaVA
#
# A video is images in time, and time brings three things an image does not have (survey §5
# {cite:p}`bordes2024introduction`): **motion** (which way did it go?), **order** (what happened first?) and
# **cause** (did it bounce because it hit the wall?). It also brings **cost**: eight frames are eight images' worth
# of tokens. This chapter puts Shapes World in motion, so that every event in a clip is known, and builds the video
# models of the survey on it: VideoBERT's visual words {cite:p}`sun2019videobert`, MERLOT's and VideoOFA's frame
# order {cite:p}`zellers2021merlot,chen2023videoofa`, Video-LLaMA's video Q-Former {cite:p}`zhang2023videollama`, and
# Video-LLaVA / LLaVA-NeXT-Video, which splice every frame into a language model
# {cite:p}`lin2023videollava,zhang2024llavanextvideo`. The survey's sharpest point is about evaluation (§5.4): many
# video benchmarks can be answered from a single frame, so they measure nothing temporal. In a world we control we can
# write questions that provably need two frames, and check.
#
# **After this chapter you can**
#
# * simulate clips with motion, bounces, collisions and occlusion, read their events from the frames, and write
#   captions and questions with temporal language;
# * prove that a question needs more than one frame (a clip and its reversal share a frame and disagree on the
#   answer), and show the {term}`single-frame bias` of a standard-style video QA suite with a single-frame model
#   beside the full one, and a reader that sees time beating its single-frame twin where time is needed;
# * turn frames into VideoBERT's {term}`visual words`, and use a model's surprise to probe intuitive physics with a
#   {term}`violation of expectation` test;
# * train MERLOT's temporal reordering and read its accuracy against a control that has no order to find;
# * say why Video-LLaMA adds a temporal position embedding before its video Q-Former, with the control that shows it;
# * count what frames cost a language model's context under every-token, pooling, {term}`token merging` and a
#   video Q-Former, and plot accuracy against frames sampled.

# %%
import json
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from IPython.display import HTML, display

from vlm_primer import get_scale, get_seed, seed_everything, zoo
from vlm_primer.evaluation import seed_verdict
from vlm_primer.text import Tokenizer
from vlm_primer.video.display import animate_frames
from vlm_primer.world import WorldConfig
from vlm_primer.world.video import (ask_temporal, clip_events, describe_clip, needs_two_frames,
                                    physics_pair, render_clip, sample_clip)
from vlm_primer.video.recipes import video_qa_eval, video_qa_set

seed_everything(0)
SCALE = get_scale()
SEED = get_seed()  # the seed of the live runs (VLM_PRIMER_SEED); the zoo models are seed 0
T_START = time.time()
torch.set_num_threads(min(2, torch.get_num_threads()))
tok = Tokenizer.load()
tower, tower_tf = zoo.load("clip-tiny-pairs").vision.eval(), zoo.preprocess("clip-tiny-pairs")  # the zoo tower
print(f"VLM_PRIMER_SCALE = {SCALE!r}")

# %% [markdown]
# ## The world in motion
#
# A clip is a sequence of Shapes World scenes with the same objects. `sample_clip` draws a scene and gives each
# object a velocity (still with probability 1/4, else left, right, up or down at 3–7 % of the image per frame);
# `simulate` moves them, reflects them off the walls and lets them collide elastically (equal masses: the velocity
# components along the line of centres are exchanged). A screen, when there is one, is drawn over everything, and
# objects behind it are hidden.
#
# **Events are read from the frames, not from the simulator**: `clip_events` looks only at the positions and finds
# where an object starts to move, bounces off a wall, hits another, goes behind the screen or comes out. Captions
# and questions are written from those events, so the same functions read any clip, a reversed one too.

# %%
WORLD = WorldConfig(image_size=48, sizes=("large",))  # the zoo towers' world
demo = sample_clip(np.random.default_rng(4), WORLD, num_frames=9, num_objects=2)
frames = render_clip(demo, 96)


display(HTML(animate_frames(frames, "a Shapes World clip")))
events = clip_events(demo)
for e in events:
    print(e)
print("caption:", describe_clip(demo))
assert events and describe_clip(demo)

# %% [markdown]
# The same clip as a strip of frames, with what happened between each frame and the next. Move the slider to step
# through a clip; pick another seed for another clip.

# %%
def show_clip(seed: int = 4, objects: int = 2) -> None:
    clip = sample_clip(np.random.default_rng(seed), WORLD, num_frames=9, num_objects=objects)
    strip = render_clip(clip, 64)
    fig, axes = plt.subplots(1, len(strip), figsize=(1.3 * len(strip), 1.7))
    for t, ax in enumerate(axes):
        ax.imshow(strip[t].permute(1, 2, 0).numpy())
        ax.set_axis_off()
        ax.set_title(f"t={t}", fontsize=8)
    fig.suptitle(f"clip {seed}: {describe_clip(clip)}", fontsize=8)
    plt.show()
    for e in clip_events(clip):
        print(f"  between frames {e.step} and {e.step + 1}: {e}")


widgets.interactive(show_clip, seed=widgets.IntSlider(4, 0, 200), objects=widgets.IntSlider(2, 1, 3))

# %% [markdown]
# ## Which questions need two frames
#
# One frame holds positions, not time. A frame of a clip $C$ is also a frame of $C$ played backwards, and for an odd
# number of frames the middle frame is the middle frame of both. The reversed clip obeys the same physics (straight
# lines and wall reflections exactly). So when a question's answer differs between $C$ and $C^{\text{rev}}$, no
# function $f$ of one frame can answer both:
#
# $$f(\text{frame}_{4}(C)) = f(\text{frame}_{4}(C^{\text{rev}})) \quad\Rightarrow\quad \text{at most one of the two
# answers is right.}$$
#
# `needs_two_frames` checks exactly that, question by question, clip by clip. Which way an object *starts* to move,
# and which of two events comes *first*, can pass it; colour, shape and counting never do. Below, the star moves up
# all along, so played backwards it starts *down*: that question needs two frames. The square starts down and,
# after bouncing off the bottom wall, ends going up, so played backwards it starts... down as well: on this clip that
# question proves nothing, and the temporal suite would not ask it.

# %%
rev = demo.reversed()
assert torch.equal(render_clip(demo)[4], render_clip(rev)[4])  # the shared middle frame
from vlm_primer.world.video import answer_temporal  # noqa: E402

asked = {q.question: q for q in (ask_temporal(demo, np.random.default_rng(i), "direction") for i in range(20))}
for q in asked.values():
    print(f"{q.question} | clip: {q.answer} | reversed: {answer_temporal(rev, q.key)} | "
          f"needs two frames: {needs_two_frames(demo, q)}")
assert len({needs_two_frames(demo, q) for q in asked.values()}) == 2  # one object's start proves it, one's does not

suites = {"standard": video_qa_set("standard", 300), "temporal": video_qa_set("temporal", 300)}  # 1-2 objects
TEMPORAL_TYPES = ("direction", "first_event", "bounces", "hit")
proved = {name: np.mean([q.qtype in TEMPORAL_TYPES and needs_two_frames(clip, q)
                         for clip, q in map(ds.item, range(len(ds)))]) for name, ds in suites.items()}
print({k: f"{v:.0%} of the questions provably need two frames" for k, v in proved.items()})
assert proved["temporal"] == 1.0 and proved["standard"] < 0.1

# %% [markdown]
# ## Video-LLaVA on Shapes World
#
# Video-LLaVA {cite:p}`lin2023videollava` and LLaVA-NeXT-Video {cite:p}`zhang2024llavanextvideo` read a video the
# way LLaVA reads an image (chapter 05): every sampled frame goes through the vision tower, its tokens through the
# connector, and the frames' tokens, in order, take the place of a placeholder in the prompt. Video-LLaVA keeps every
# token of every frame (8 frames of 257 tokens: 2,056 tokens); LLaVA-NeXT-Video averages 2 x 2 squares of each
# frame's patch grid first (a quarter of the tokens). Both equal `transformers`'
# `VideoLlavaForConditionalGeneration` and `LlavaNextVideoForConditionalGeneration` weight for weight
# (`tests/test_parity_video_llava.py`, converters in `vlm_primer.interop.video_llava`).
#
# The zoo's `video-llava-tiny` is the zoo's `llava-next-tiny` (chapter 05) read as a LLaVA-NeXT-Video: 16 tokens per
# 48 px frame, trained as LLaVA's stage 2 (connector and language model; the tower frozen) for 1,500 steps of 32 video
# conversations drawn from a pool of 40,000: questions of both suites below and captions (the shares are printed
# below), each batch at 3, 5 or 9 evenly spaced frames. The pooling, built inline, equals the package's:

# %%
from vlm_primer.video.data import frame_indices  # noqa: E402
from vlm_primer.zoo import video_recipes  # noqa: E402

video_llava = zoo.load("video-llava-tiny")
vcard = zoo.card("video-llava-tiny")
pixels = tower_tf(render_clip(demo, 48))[None, :3]  # three frames
with torch.no_grad():
    hidden = video_llava.vision_tower(pixels.flatten(0, 1), output_hidden_states=True).hidden_states[-2][:, 1:]
    pooled = rearrange(F.avg_pool2d(rearrange(hidden, "f (h w) d -> f d h w", h=8), 2), "f d h w -> f (h w) d")
    torch.testing.assert_close(video_llava.connector(pooled).reshape(1, -1, 64), video_llava.video_features(pixels))
print(f"{video_llava.cfg.tokens_per_frame} tokens per frame; {frame_indices(9, 3)} are the 3 frames of 9 it samples; "
      f"trained in {vcard['train_seconds']:.0f} s ({vcard['trained_on']})")
parts = video_recipes.PARTS  # the training pool, split evenly over these parts
share = {p: parts.count(p) / len(parts) for p in dict.fromkeys(parts)}
print(f"{video_recipes.STEPS} steps at frame counts {video_recipes.FRAME_COUNTS}; training conversations:",
      {("captions" if p == "caption" else f"{p} suite"): f"{v:.0%}" for p, v in share.items()})
assert share["caption"] == 0.25 and video_recipes.STEPS == 1500  # as the text says

# %% [markdown]
# ## Single-frame bias
#
# §5.4 of the survey: in ActivityNet-QA, MSVD-QA or MSRVTT-QA, "what sport are they playing?" is answered by any
# frame. Our two suites make the point measurable:
#
# * **standard**: what a typical video QA benchmark mixes: appearance questions (colour, shape, how many, is there)
#   and motion questions as they come (which way, how many bounces, does X hit Y), most of them answerable from one
#   frame or from the answer prior;
# * **temporal**: only questions that the reversed clip answers differently (`needs_two_frames`): which way an object
#   *starts* to move, which of two events happens *first*. By the argument above, no single frame answers both a
#   clip and its reversal: on the two together, a single-frame model is right at most once in two (exercise 08.2).
#
# Each model is read three ways: from every frame, from the **middle frame alone** (the single-frame baseline) and
# **blind** (blank frames: the text-only control, what the question and the answer prior give).

# %%
views = {"9 frames": dict(frames=9), "middle frame": dict(frames=1), "blind": dict(frames=9, blind=True)}
llava_scores = {(s, v): video_qa_eval(video_llava, tower_tf, qs, max_new_tokens=14, **kw)
                for s, qs in suites.items() for v, kw in views.items()}
for (s, v), r in llava_scores.items():
    print(f"Video-LLaVA  {s:9s} {v:13s} {r['accuracy']['all']:.3f}",
          {k: round(x, 2) for k, x in r["accuracy"].items() if k != "all"})
acc = {k: r["accuracy"]["all"] for k, r in llava_scores.items()}
assert acc["standard", "9 frames"] - acc["standard", "blind"] > 0.15  # it reads the frames
assert abs(acc["standard", "9 frames"] - acc["standard", "middle frame"]) < 0.06  # one frame does as well

# %% [markdown]
# **Chance** on the temporal suite is known exactly: a direction question has four answers, a which-first question
# two. The blind control (blank frames) sits below it there, because blank frames put the model off its answer format
# for the long which-first answers; chance is the fairer floor. The item-level interval of each difference comes from
# a paired bootstrap over the same 300 questions (chapter 07).

# %%
from vlm_primer.evaluation import paired_bootstrap_diff  # noqa: E402


def hits(suite: str, view: str) -> np.ndarray:
    r = llava_scores[suite, view]
    return np.array([p == q.answer for p, q in zip(r["predictions"], r["questions"])], dtype=float)


CHANCE_BY_TYPE = {"direction": 0.25, "first_event": 0.5, "exist": 0.5, "hit": 0.5}  # where the options are known
chance = {s: np.mean([CHANCE_BY_TYPE[q.qtype] for _, q in map(qs.item, range(len(qs)))])
          for s, qs in suites.items() if s == "temporal"}
one_frame_gap = {s: paired_bootstrap_diff(hits(s, "9 frames"), hits(s, "middle frame")) for s in suites}
for s, (d, lo, hi) in one_frame_gap.items():
    print(f"{s:9s} 9 frames minus the middle frame: {d:+.3f} (95 % interval {lo:+.3f} to {hi:+.3f})")
print(f"temporal suite: chance {chance['temporal']:.3f}")

fig, ax = plt.subplots(figsize=(6, 3))
for j, v in enumerate(views):
    ax.bar(np.arange(2) + (j - 1) * 0.27, [acc[s, v] for s in suites], 0.27, label=v)
ax.plot([0.75, 1.25], [chance["temporal"]] * 2, "k--", lw=1, label="chance (temporal suite)")
ax.set_xticks(range(2), ["standard suite", "temporal suite (needs two frames)"])
ax.set_ylabel("accuracy")
ax.set_title("Single-frame bias: Video-LLaVA from every frame, one frame, no frame")
ax.legend(fontsize=7)
plt.show()

assert one_frame_gap["standard"][1] < 0 < one_frame_gap["standard"][2]  # no measurable gain from eight more frames
assert acc["temporal", "9 frames"] < chance["temporal"] + 0.05 and acc["temporal", "middle frame"] < chance["temporal"] + 0.05

# %% [markdown]
# What this shows so far. **The standard-style suite does not measure time**: the middle frame alone scores as well as
# all nine frames, within the interval, and far above the blind control: the model reads the objects, and the motion
# questions it gets right, the answer prior gets right too. **The temporal suite cannot be gamed that way**: by
# construction no single frame answers both a clip and its reversal. But our tiny Video-LLaVA is at chance on it *with
# every frame too*: in 1,500 steps it learned to see objects, not motion. That is not yet the survey's point, which
# needs a model that reads time to beat its single-frame twin on the same questions. Is the suite unanswerable at this
# scale, or is it the model?
#
# ### A reader that sees time
#
# To answer "which way does the red square start to move?" a model must do two things: find the object the words name,
# then compare where it is in the first frames. Our probes (`benchmarks/bench_video_qa.py` says how) found the first
# step is the hard one at this budget: a MERLOT-style joint encoder trained from scratch over the tower's frame grids,
# the question given as words, learned nothing in 1,000 steps, not even colour; given the object as a (shape, colour)
# pair instead of words it learned direction. Binding words to objects is what chapter 06b's **grounder** learned (the
# zoo's `grounder-tiny`, X-VLM's recipe, 92 % referring accuracy). So the temporal reader starts there: the grounder's
# cross-modal encoder reads the question against each frame (its words are the queries, the frame's patches the keys
# and values), and those tokens, one set per frame, are that frame's input to a small `FrameQA` (a joint encoder with
# a **time embedding** per frame, answering from [CLS], as MERLOT is fine-tuned for QA). The words come
# out bound to the objects they name, so the reader only has to compare frames.
#
# `grounded_tokens` is the grounder's own fusion, unpooled: pooled where the grounder pools (the last token), it is
# `Grounder.fuse`, frame by frame. And the control that makes the single-frame arm what it says: a clip and its
# reversal give the all-frames arm different inputs, the middle-frame arm the same one.

# %%
from vlm_primer.video.frame_qa import grounded_tokens  # noqa: E402

grounder, grounder_tf = zoo.load("grounder-tiny").float().eval(), zoo.preprocess("grounder-tiny")
q_demo = tok([ask_temporal(demo, np.random.default_rng(0), "direction").question], max_length=32)
both = grounder_tf(torch.stack([render_clip(demo, 48), render_clip(demo.reversed(), 48)]))  # (2, 9, 3, 48, 48)
ids2, mask2 = q_demo["input_ids"].repeat(2, 1), q_demo["attention_mask"].repeat(2, 1)
g_tokens = grounded_tokens(grounder, both, ids2, mask2)  # (2 clips, 9 frames, L, 64)
with torch.no_grad():
    torch.testing.assert_close(g_tokens[0, :, -1], grounder.fuse(both[0], ids2[:1].expand(9, -1),
                                                                 mask2[:1].expand(9, -1)))
print(f"{tok.decode(q_demo['input_ids'][0].tolist())!r}: grounded tokens {tuple(g_tokens.shape[2:])} per frame")
print(f"clip vs its reversal, all frames: max difference {(g_tokens[0] - g_tokens[1]).abs().max():.3f}; "
      f"middle frame: {(g_tokens[0, 4] - g_tokens[1, 4]).abs().max():.1e}")
assert (g_tokens[0] - g_tokens[1]).abs().max() > 0.1 and torch.equal(g_tokens[0, 4], g_tokens[1, 4])

# %% [markdown]
# Training the reader three times (every frame, the middle frame, a blank frame: the blind control), three seeds each,
# takes a quarter of an hour on two cores, too long for this page; `benchmarks/bench_video_qa.py` ran it (with the
# frame-count and merging arms of §The cost of frames, 20 minutes), on the same test questions as above; the file
# records the command, the budget and every run:

# %%
VQA_FILE = zoo.ZOO_DIR.parents[1] / "benchmarks" / "results" / "video_qa.json"
vqa_bench = json.loads(VQA_FILE.read_text())
print(f"{VQA_FILE.name}: `{vqa_bench['command']}`\n  ({vqa_bench['date']}; {vqa_bench['machine']}; "
      f"{vqa_bench['minutes']} min; {vqa_bench['steps']} steps of {vqa_bench['batch']} on {vqa_bench['train']} "
      f"questions per suite)")
reader = {(arm, s): [r[s] for r in vqa_bench["runs"] if r["arm"] == arm] for arm in ("frames", "single", "blind")
          for s in suites}
names = {"frames": "9 frames", "single": "middle frame", "blind": "blind (blank frame)"}
by_type = {(arm, s, t): [r[f"{s}_by_type"][t] for r in vqa_bench["runs"] if r["arm"] == arm]
           for arm, s in reader for t in vqa_bench["runs"][0][f"{s}_by_type"]}
for (arm, s), xs in reader.items():
    means = {t: round(float(np.mean(v)), 2) for (a, s2, t), v in by_type.items() if (a, s2) == (arm, s)}
    print(f"grounded reader  {s:9s} {names[arm]:20s} {min(xs):.3f}-{max(xs):.3f}  mean by type {means}")
reader_verdict = {s: seed_verdict(reader["frames", s], reader["single", s]) for s in suites}
print("9 frames against the middle frame:", reader_verdict, f"(temporal chance {vqa_bench['chance']:.3f})")

fig, ax = plt.subplots(figsize=(6, 3))
for j, arm in enumerate(names):
    xs = [np.mean(reader[arm, s]) for s in suites]
    err = [np.ptp(reader[arm, s]) / 2 for s in suites]
    ax.bar(np.arange(2) + (j - 1) * 0.27, xs, 0.27, yerr=err, capsize=3, label=names[arm])
ax.plot([0.6, 1.4], [vqa_bench["chance"]] * 2, "k--", lw=1, label="chance (temporal suite)")
ax.set_xticks(range(2), ["standard suite", "temporal suite (needs two frames)"])
ax.set_ylabel("accuracy (3 seeds: mean, range)")
ax.set_title("A grounded reader from every frame, one frame, no frame")
ax.legend(fontsize=7, loc="upper left")
plt.show()

# the file keeps no question ids; the benchmark draws video_qa_set(suite, 300) as this chapter does, and the same
# number of test questions with the same chance (the same mix of question types) is what can be checked here
assert vqa_bench["eval"] == len(suites["temporal"]) and abs(vqa_bench["chance"] - chance["temporal"]) < 1e-9
assert reader_verdict["temporal"] == "higher"  # every seed of the temporal reader beats every single-frame seed
assert min(reader["frames", "temporal"]) > vqa_bench["chance"] + 0.15  # far from chance
assert max(reader["single", "temporal"]) < vqa_bench["chance"] + 0.1  # its single-frame twin near it
assert reader_verdict["standard"] == "within the seed spread"  # where time is one question type in seven
assert min(reader["single", "standard"]) > max(reader["blind", "standard"])  # the frames are read at all
# by type: the standard suite's direction questions need time too; which-first is at chance for every arm; the
# reader knows where, not what (shape near its blind level, colour far below Video-LLaVA's)
assert min(by_type["frames", "standard", "direction"]) > max(by_type["single", "standard", "direction"]) + 0.2
assert all(0.4 < x < 0.6 for arm in names for x in by_type[arm, "temporal", "first_event"])
assert np.mean(by_type["frames", "standard", "shape"]) - np.mean(by_type["blind", "standard", "shape"]) < 0.1
assert llava_scores["standard", "9 frames"]["accuracy"]["color"] - np.mean(by_type["frames", "standard", "color"]) > 0.2

# %% [markdown]
# **With a reader that sees time, both halves of §5.4's argument hold here**, three seeds each, the same reader trained
# the same way, differing only in the frames it sees:
#
# * on the **temporal suite**, nine frames beat the middle frame at every seed, by far more than the seeds' spread:
#   the reader tells which way an object starts to move about four times in five, its single-frame twin barely above
#   chance. (A little above it: the test holds forward clips only, and in this world where an object is in the middle
#   frame hints at where it came from. On clips and their reversals together no single frame passes one in two:
#   exercise 08.2.) Which of two events happened *first* stays at chance for every arm: this reader learned motion,
#   not the order of events, and we do not claim it;
# * on the **standard suite**, the nine frames' gain over the middle frame is within the seed spread, although on its
#   direction questions alone the gap is nearly as wide as on the temporal suite: one question type in seven, diluted by
#   the rest. A standard-style total can hide the one question type that needs time;
# * **blind** (the grounded question over a blank frame) is lowest on the standard suite and at chance on the
#   temporal one.
#
# What the toy shows and what it does not. Lei et al. {cite:p}`lei2023singleframe` found the real version: a model
# trained on single frames (with a vision encoder, a text encoder and a cross-attention fusion encoder, the shape of
# our grounder) matched or beat multi-frame models on the popular video-language benchmarks, their "static appearance
# bias", and they proposed retrieval tasks built from fine-grained action datasets, on which modelling time pays.
# Ours illustrates the claim in a world where the needed frames are proved, not reproduced on their data. And this
# reader is no better model than Video-LLaVA: it reads *where* the named object is, not well *what* it is (its shape
# answers are near its blind level, its colour answers far below Video-LLaVA's), where Video-LLaVA, which reads
# appearance well, never learned motion in its budget. The lesson of the probes is the one of chapter 06b: binding
# words to objects is learned first, from grounding data, and the temporal reader only had to compare frames.

# %% [markdown]
# ## Video captioning and QA by type
#
# The same Video-LLaVA describes clips (captions were a quarter of its training conversations, printed above) and
# answers each question type; the widget asks it about any test clip, from any number of frames.

# %%
from vlm_primer.video.data import CAPTION_VIDEO_REQUEST  # noqa: E402
from vlm_primer.video.recipes import ask_videos  # noqa: E402


def ask_video(clip, question: str, frames: int = 9, max_new_tokens: int = 40) -> str:
    return ask_videos(video_llava, tower_tf, [clip], [question], frames=frames, max_new_tokens=max_new_tokens)[0]


caption_clips = [suites["standard"].item(i)[0] for i in range(40)]
written = [ask_video(c, CAPTION_VIDEO_REQUEST) for c in caption_clips]
for c, w in list(zip(caption_clips, written))[:3]:
    print(f"reference: {describe_clip(c)}\nmodel:     {w}\n")
from vlm_primer.evaluation import mentioned_objects  # noqa: E402


def shapes_named(text: str) -> set:
    """The shapes a caption names, synonyms included ("disk" is a circle, "rhombus" a diamond): CHAIR's reader."""
    return set(mentioned_objects(text))


named = np.mean([len(shapes_named(w) & {o.shape for o in c.frames[0]}) / len(c.frames[0]) for c, w in
                 zip(caption_clips, written)])
invented = np.mean([len(shapes_named(w) - {o.shape for o in c.frames[0]}) / max(1, len(shapes_named(w)))
                    for c, w in zip(caption_clips, written)])
exact = np.mean([w == describe_clip(c) for c, w in zip(caption_clips, written)])
print(f"{len(caption_clips)} captions: exact {exact:.0%}; the clip's shapes named {named:.0%}; "
      f"named shapes not in the clip {invented:.0%}")
form = np.mean([w.startswith("the ") and w.endswith(".") and "starts moving" in w for w in written])
print(f"captions in the training captions' form: {form:.0%}")
assert form >= 0.8  # the form is learned; the content is what the numbers above measure
assert 0.45 < named < 0.65 and 0.3 < invented < 0.5  # ... and what the text below says of it


def ask_widget(index: int = 3, frames: int = 9, question: str = CAPTION_VIDEO_REQUEST) -> None:
    clip, q = suites["temporal"].item(index)
    print(f"reference caption: {describe_clip(clip)}\nsuite question: {q.question} -> {q.answer}")
    print(f"model, {frames} frame(s): {ask_video(clip, question or q.question, frames)}")


widgets.interactive(ask_widget, index=widgets.IntSlider(3, 0, 299), frames=widgets.SelectionSlider(
    options=[1, 2, 3, 5, 9], value=9), question=widgets.Text(CAPTION_VIDEO_REQUEST))

# %%
def answer_floor(suite: str, qtype: str) -> float:
    """The better of always giving the type's most common test answer and, where known, chance."""
    answers = [q.answer for _, q in map(suites[suite].item, range(len(suites[suite]))) if q.qtype == qtype]
    return max(max(answers.count(a) for a in set(answers)) / len(answers), CHANCE_BY_TYPE.get(qtype, 0.0))


by_type = {}  # (suite, question type) -> (9 frames, blind, floor)
for suite in ("standard", "temporal"):
    for qtype, x in llava_scores[suite, "9 frames"]["accuracy"].items():
        if qtype != "all":
            by_type[suite, qtype] = (x, llava_scores[suite, "blind"]["accuracy"][qtype], answer_floor(suite, qtype))
fig, ax = plt.subplots(figsize=(7.5, 2.8))
names = list(by_type)
for j, label in enumerate(("9 frames", "blind (blank frames)", "most common answer or chance")):
    ax.bar(np.arange(len(names)) + (j - 1) * 0.27, [by_type[n][j] for n in names], 0.27, label=label,
           color="gray" if j == 2 else None)
ax.set_xticks(range(len(names)), [f"{t}\n({s})" for s, t in names], fontsize=7)
ax.set_ylabel("accuracy")
ax.set_title("Video-LLaVA by question type: every frame, blank frames, and the answer floor")
ax.legend(fontsize=7)
plt.show()
print({f"{s} {t}": tuple(round(float(v), 2) for v in row) for (s, t), row in by_type.items()})
appearance = [("standard", t) for t in ("color", "count", "exist")]
motion = [("standard", "direction"), ("standard", "bounces"), ("standard", "hit"), ("temporal", "direction"),
          ("temporal", "first_event")]
assert all(by_type[k][0] > max(by_type[k][1], by_type[k][2]) + 0.2 for k in appearance)  # read from the frames
assert all(by_type[k][0] < by_type[k][2] + 0.05 for k in motion)  # no better than the answer floor
assert by_type["standard", "hit"][1] < 0.1 < by_type["standard", "hit"][2]  # blank frames: no floor for yes/no here

# %% [markdown]
# Appearance (colour, count, is there) is read far above both the blind control and the answer floor; the motion
# questions (which way, which first, how many bounces, does X hit Y) are at their floor, nothing more: the type's most
# common answer ("no" for does X hit Y, "zero" bounces) or chance. The blind control is no floor for them: blank
# frames throw the model off its answer format, down to 0 on "does X hit Y?", which its frames lift to the most common
# answer and no further. The captions come out in the right form (asserted above), but they name only about half of
# the clip's shapes, and about two in five of the shapes they do name are not in the clip (synonyms counted: "disk"
# names a circle): a caption is a chain of motion claims about named objects, and a model that cannot read motion
# writes plausible chains.

# %% [markdown]
# ## VideoBERT
#
# VideoBERT {cite:p}`sun2019videobert` was the first to treat video like text. A frozen visual encoder turns each
# stretch of video into a vector, k-means turns the vectors into $k$ {term}`visual words` (the paper: S3D features,
# hierarchical k-means of 4 levels of 12, $12^4 = 20{,}736$ words), and one BERT reads
#
# $$[\texttt{CLS}]\ w_1 \dots w_L\ [\texttt{>}]\ v_1 \dots v_T\ [\texttt{SEP}]$$
#
# with BERT's masked modelling on words *and* visual words (chapter 03's machinery), plus a head on
# $[\texttt{CLS}]$ that says whether the text goes with the video. Our frames' vectors are the zoo tower's patch
# tokens pooled 2 x 2 on the grid (a 4 x 4 map of 64-wide features: the *where* as well as the *what*; the tower's
# pooled embedding alone gives every frame of a clip the same word, because it describes the objects, not their
# positions).

# %%
from vlm_primer.video import VideoBert, VideoBertConfig, VisualVocabulary  # noqa: E402
from vlm_primer.video.frame_qa import grid_features  # noqa: E402
from vlm_primer.world.video import PHYSICS_KINDS  # noqa: E402



def frame_features(clips_frames: torch.Tensor) -> torch.Tensor:
    """``(N, T, 3, 48, 48)`` frames -> ``(N, T, 1024)``: the tower's patch tokens pooled 2 x 2, flattened."""
    return grid_features(tower, tower_tf(clips_frames)).flatten(2)


def physics_set(n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [physics_pair(rng, PHYSICS_KINDS[i % 2]) for i in range(n)]


train_pairs, test_pairs = physics_set(200, 0), physics_set(60, 1)
train_feats = frame_features(torch.stack([render_clip(p, 48) for p, _, _ in train_pairs]))
K = 32
vocab = VisualVocabulary.fit(train_feats.flatten(0, 1), K, seed=0)
train_words = vocab.encode(train_feats.flatten(0, 1)).reshape(len(train_pairs), -1)
print("a clip as visual words:", train_words[0].tolist())

# the joint sequence, built by hand, equals the model's
bert_cfg = VideoBertConfig.from_preset("tiny", visual_vocab_size=K)
prompt = torch.tensor([tok.encode("what happens next?", add_eos=False)[1:]])
ids, types, _ = VideoBert(bert_cfg).joint_inputs(prompt, train_words[:1], None, None)
by_hand = torch.cat([torch.tensor([[bert_cfg.cls_token_id]]), prompt, torch.tensor([[bert_cfg.boundary_token_id]]),
                     train_words[:1] + bert_cfg.vocab_size, torch.tensor([[bert_cfg.sep_token_id]])], 1)
assert torch.equal(ids, by_hand) and types[0, prompt.shape[1] + 2:].eq(1).all()

# %% [markdown]
# ## Intuitive physics
#
# A **violation-of-expectation** probe (the method of infant studies, and of IntPhys for models): show matched
# clips, identical up to one frame, one possible and one not. `physics_pair` makes two kinds: an object moves behind a
# screen and comes out on the other side, or **vanishes** behind it; two objects collide and bounce apart, or
# **pass through** each other. A model that has learned how the world goes should be more *surprised* by the
# impossible clip.
#
# Our surprise is VideoBERT's: trained on possible clips only, with the *future* masked (every visual word from a
# random frame on), it predicts frame $t$'s word from the frames before it; the surprise of a clip is the mean
# $-\log p(v_t \mid v_{<t})$ over the frames from the first one where the pair differs. The control that the test
# can see nothing without learning is the untrained model; the control that the model reads *context* and not just
# rare frames is a context-free surprise, $-\log$ of each word's frequency in the training clips.

# %%
def train_videobert(seed: int, steps: int = 250, batch: int = 32) -> VideoBert:
    torch.manual_seed(seed)
    model = VideoBert(bert_cfg)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    g = torch.Generator().manual_seed(seed)
    frames_per_clip = train_words.shape[1]
    for _ in range(steps):
        words = train_words[torch.randint(0, len(train_words), (batch,), generator=g)]
        future = torch.arange(frames_per_clip) >= torch.randint(1, frames_per_clip, (batch, 1), generator=g)
        out = model(prompt.expand(batch, -1), words.masked_fill(future, K), visual_labels=words.masked_fill(~future, -100))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return model.eval()


test_words = {side: vocab.encode(frame_features(torch.stack([render_clip(pair[side], 48) for pair in test_pairs]))
                                 .flatten(0, 1)).reshape(len(test_pairs), -1) for side in (0, 1)}
first_diff = [d for _, _, d in test_pairs]
kinds = np.array([i % 2 for i in range(len(test_pairs))])


@torch.no_grad()
def surprise(model: VideoBert | None, words: torch.Tensor) -> np.ndarray:
    """Per clip: the mean -log p(word_t | words before t) over the frames from its first differing frame on
    (``model=None``: the context-free control, -log of the word's training frequency)."""
    freq = torch.bincount(train_words.flatten(), minlength=K).float().add(1).div(train_words.numel() + K)
    out = []
    for i, d in enumerate(first_diff):
        t = torch.arange(d, words.shape[1])
        if model is None:
            out.append(-freq[words[i, t]].log().mean().item())
            continue
        masked = words[i].repeat(len(t), 1).masked_fill(torch.arange(words.shape[1]) >= t[:, None], K)
        logp = model(prompt.expand(len(t), -1), masked).visual_logits.log_softmax(-1)
        out.append(-logp[torch.arange(len(t)), t, words[i, t]].mean().item())
    return np.array(out)


def vio_table(model):
    s_possible, s_impossible = surprise(model, test_words[0]), surprise(model, test_words[1])
    return {PHYSICS_KINDS[k]: dict(possible=s_possible[kinds == k].mean(), impossible=s_impossible[kinds == k].mean(),
                                   more_surprised=(s_impossible > s_possible)[kinds == k].mean()) for k in (0, 1)}


physics = {"untrained": vio_table(VideoBert(bert_cfg).eval()), "context-free": vio_table(None)}
for seed in range(3):
    physics[f"VideoBERT seed {seed}"] = vio_table(train_videobert(seed))
for name, row in physics.items():
    print(f"{name:18s}", "  ".join(f"{k}: possible {v['possible']:.2f} impossible {v['impossible']:.2f} "
                                   f"(more surprised on {v['more_surprised']:.0%})" for k, v in row.items()))

margin = {name: {k: row[k]["impossible"] - row[k]["possible"] for k in PHYSICS_KINDS} for name, row in physics.items()}
trained = [f"VideoBERT seed {s}" for s in range(3)]
assert min(physics[n][k]["more_surprised"] for n in trained for k in PHYSICS_KINDS) >= 0.9  # nearly every pair
trained_margins = [margin[n][k] for n in trained for k in PHYSICS_KINDS]
untrained_margin = max(abs(m) for m in margin["untrained"].values())
print(f"impossible minus possible, nats per frame: trained seeds {min(trained_margins):.2f} to "
      f"{max(trained_margins):.2f}; untrained at most {untrained_margin:.2f} either way")
assert min(trained_margins) > 2 and max(trained_margins) < 3.5  # by nats, at every seed
assert untrained_margin < 0.2 and min(trained_margins) > 10 * untrained_margin  # no learned expectation, no margin
assert margin["context-free"]["vanish"] < 0 < margin["context-free"]["pass_through"] < 0.5  # rare frames, not context

fig, ax = plt.subplots(figsize=(8, 3.2))
names = list(physics)
for j, kind in enumerate(PHYSICS_KINDS):
    xs = np.arange(len(names)) + (j - 0.5) * 0.38
    ax.bar(xs - 0.09, [physics[n][kind]["possible"] for n in names], 0.18, color=f"C{2 * j}",
           label=f"{kind}: possible")
    ax.bar(xs + 0.09, [physics[n][kind]["impossible"] for n in names], 0.18, color=f"C{2 * j + 1}",
           label=f"{kind}: impossible")
ax.set_xticks(range(len(names)), [n.replace("VideoBERT ", "") for n in names], fontsize=8)
ax.set_xlabel("model (seeds: VideoBERT trained on possible clips)")
ax.set_ylabel("surprise (nats per frame)")
ax.set_title("Violation of expectation: VideoBERT's surprise on matched clips")
ax.set_ylim(0, 5.3)
ax.legend(fontsize=7, ncol=4, loc="upper center")
plt.show()

# %% [markdown]
# Every trained seed is more surprised by the impossible clip of nearly every pair, of both kinds, by about 2.5 to 3.1
# nats per frame (the range is printed above). The untrained model's mean surprise differs between the two clips by
# a tenth of a nat or so (under 0.2), less than a tenth of the trained margin: it prefers some frames to others, for
# no reason it learned, but it has no expectation to violate. Its *count* on vanishing pairs is high too (printed:
# it is more surprised by the impossible clip of every pair, by that tenth of a nat), so "more surprised on nearly
# every pair" proves nothing by itself: the evidence is the size of the margin. The context-free control tells the two kinds apart:
# an object passing through another makes frames that are rare in possible clips (two objects overlapping), so a
# model that only knows which frames are *common* is a little more surprised by them too (a tenth of the trained
# margin); an object vanishing behind the screen leaves frames that look like the common "hidden" ones, so the
# context-free control is *less* surprised by the impossible clip, and only a model that expects the object to come
# out flags it.
#
# What the toy can and cannot show: the survey (§5.4) cites GRASP {cite:p}`jassim2023grasp`, where Video-LLaMA and
# PandaGPT, *asked in words* whether a clip's ball moves plausibly, did not beat chance while people scored above
# 80 %. Our probe reads a model's surprise, not its answer, and the model was trained on 200 possible clips of exactly
# these two kinds (one screen, one motion, a 32-word vocabulary): it shows that the surprise test can see a learned
# expectation, not that any model understands physics.

# %% [markdown]
# ## Frame order: MERLOT and VideoOFA
#
# MERLOT {cite:p}`zellers2021merlot` learns from videos and their transcripts with three objectives: each frame
# matched with the text said at its time (a contrastive loss), masked language modelling in a joint encoder that sees
# every frame, and **temporal reordering**: some frames are shuffled, each one's time embedding replaced by an "unknown
# time" embedding of its own (`[image_unk_0]`, `[image_unk_1]`, ...: the frames stay apart, their times are hidden),
# and a classifier on every pair of shuffled frames says which came first. VideoOFA
# {cite:p}`chen2023videoofa` adapts an image captioner to video in an intermediate stage with captioning, video-text
# matching and **frame-order modelling** (each shuffled frame's original position). Both read order only if the
# frames *have* one: Shapes World's physics runs the same backwards (no friction, elastic bounces), so a clip played
# backwards is a valid clip with the same frames. Real video has an arrow of time; we give the world one by playing
# each clip in the direction in which its object first moves right or down.
#
# The controls: the same model on clips where nothing moves (every frame the same, so no order to find: chance, up
# to sampling noise), and on the test clips played backwards (the arrow reversed: a model that learned it should be
# systematically wrong).

# %%
from vlm_primer.video import Merlot, MerlotConfig, order_accuracy, train_merlot  # noqa: E402


def arrow_clips(seed: int, n: int, still: bool = False) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        clip = sample_clip(rng, WorldConfig(max_objects=1), num_frames=4, num_objects=1, still=float(still),
                           speed=(0.06, 0.1))
        first = next((e.detail for e in clip_events(clip) if e.kind == "move"), "right")
        out.append(clip.reversed() if first in ("left", "up") else clip)
    return out


def merlot_batch(clips: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    text = tok([describe_clip(c) for c in clips], max_length=32)
    return torch.stack([render_clip(c, 32) for c in clips]), text["input_ids"], text["attention_mask"]


frames_tr, ids_tr, mask_tr = merlot_batch(arrow_clips(0, 512))
mean, std = frames_tr.mean(), frames_tr.std()
test_clips = arrow_clips(1, 256)
probes = {"moving, arrow of time": test_clips, "moving, played backwards": [c.reversed() for c in test_clips],
          "nothing moves": arrow_clips(2, 256, still=True)}


@torch.no_grad()
def reorder_accuracy(model: Merlot, clips: list):
    frames_, ids_, mask_ = merlot_batch(clips)
    out = model((frames_ - mean) / std, ids_, mask_, generator=torch.Generator().manual_seed(1))
    return order_accuracy(out.order_logits, out.order_labels)


order = {name: [] for name in probes}  # one result per training seed
for seed in (SEED, SEED + 1, SEED + 2):
    seed_everything(seed)
    merlot = Merlot(MerlotConfig.from_preset("tiny", max_frames=4, shuffle_fraction=1.0))
    # 300 AdamW steps of 32 clips (the three losses summed), warmup over 30; see train_merlot's docstring
    merlot = train_merlot(merlot, (frames_tr - mean) / std, ids_tr, mask_tr, steps=300, batch=32, seed=seed)
    for name, clips in probes.items():
        order[name].append(reorder_accuracy(merlot, clips))
for name, results in order.items():
    print(f"{name:26s} pairwise order accuracy, 3 seeds: {', '.join(f'{r.accuracy:.3f}' for r in results)} "
          f"(chance {results[0].chance:.3f}, {results[0].count} pairs)")
assert all(r.accuracy > 0.7 for r in order["moving, arrow of time"])
assert all(abs(r.accuracy - r.chance) < 0.1 for r in order["nothing moves"])
assert all(r.accuracy < 0.4 for r in order["moving, played backwards"])

# %% [markdown]
# The reordering head reads the arrow, at every one of three training seeds (the gaps are large beside the asserted
# bounds): well above chance on held-out clips, systematically *wrong* on the same clips
# played backwards (the frames are the same set; only the direction of time changed), and at chance when nothing
# moves. MERLOT's own numbers come from 180 M YouTube segments (YT-Temporal-180M) and a 16-frame, ViT-Base-sized joint
# encoder; it is evaluated by fine-tuning on 12 video tasks, where the reordering objective helped, not by reordering
# accuracy itself. VideoOFA's frame-order head (`VideoCaptioner`, around chapter 04's BLIP captioner) is the same
# idea with one prediction per shuffled frame, its original index, instead of one per pair;
# `tests/test_video_order.py` checks that a one-frame video gives back the image captioner's loss exactly.

# %% [markdown]
# ## Video-LLaMA
#
# Video-LLaMA {cite:p}`zhang2023videollama` reuses BLIP-2 (chapter 05b) frame by frame: every frame goes through the
# frozen tower and the frozen image Q-Former (8 query tokens per frame here, 32 in the paper), a learned **temporal
# position embedding** is added to frame $t$'s tokens, and a second, **video Q-Former** reads all frames' tokens with
# its own queries. One linear layer hands its outputs to the language model as a soft prompt: a clip costs the LM the
# video Q-Former's queries, however many frames it has (up to the size of its temporal table: 32 frames in the
# released code, `num_frames` here).
#
# Why the temporal embedding: cross-attention reads a *set*. Without it the video Q-Former cannot tell the frames
# apart, and a clip played backwards gives exactly the same tokens. The control below shows it on the zoo's BLIP-2:
# with the embedding the reversed clip's tokens differ, with the embedding at zero they do not (up to float error).

# %%
from vlm_primer.video import VideoLlama  # noqa: E402

blip2 = zoo.load("blip2-tiny")
video_llama = VideoLlama.from_blip2(blip2, num_frames=9).eval()
clip_pixels = tower_tf(render_clip(demo, 48))[None]
with torch.no_grad():
    forward_tokens = video_llama.video_tokens(clip_pixels)
    backward_tokens = video_llama.video_tokens(clip_pixels.flip(1))
    saved = video_llama.temporal_emb.weight.clone()
    video_llama.temporal_emb.weight.zero_()
    no_time = (video_llama.video_tokens(clip_pixels) - video_llama.video_tokens(clip_pixels.flip(1))).abs().max().item()
    video_llama.temporal_emb.weight.copy_(saved)
with_time = (forward_tokens - backward_tokens).abs().max().item()
print(f"{clip_pixels.shape[1]} frames -> {forward_tokens.shape[1]} LM tokens; reversed clip changes the tokens by "
      f"{with_time:.2e} with temporal embeddings, {no_time:.2e} without")
assert no_time < 1e-5 < with_time

# %% [markdown]
# ## The cost of frames
#
# Survey §5.5: two consecutive frames are nearly the same image, and a language model pays for every token of both.
# Four ways to spend a context on frames, per frame and per clip:
#
# * **every token** (Video-LLaVA): CLIP ViT-L/14 at 224 px gives 257 tokens per frame, 2,056 for 8 frames;
# * **average pooling** (LLaVA-NeXT-Video): 2 x 2 squares of the 24 x 24 grid averaged, 144 tokens per frame;
# * **token merging** (MiniGPT4-Video {cite:p}`ataallah2024minigpt4video`): every 4 adjacent tokens concatenated and
#   projected by one linear layer, 256 -> 64 tokens per frame; as few tokens as pooling, but the linear layer learns
#   what to keep instead of averaging it away (pooling is the merger whose weights are fixed $\tfrac{1}{4}$ blocks);
# * **a video Q-Former** (Video-LLaMA): 32 query tokens per clip, however many frames (up to its temporal table's).
#
# Merging built inline, then checked equal to the package's:

# %%
from vlm_primer.video import merge_tokens, pool_tokens, token_budget  # noqa: E402

patch_tokens = torch.randn(2, 256, 8)
merged = rearrange(patch_tokens, "b (n m) d -> b n (m d)", m=4)  # tokens 4i..4i+3 side by side
torch.testing.assert_close(merged, merge_tokens(patch_tokens, 4))
torch.testing.assert_close(pool_tokens(patch_tokens, 4), merged.reshape(2, 64, 4, 8).mean(2))

CONTEXT, TEXT = 4096, 100  # a Llama-2 / Vicuna-7B context, a prompt and an answer
schemes = {"every token (Video-LLaVA)": (257, 1), "2x2 pooling (LLaVA-NeXT-Video)": (576, 4),
           "merge 4 (MiniGPT4-Video)": (256, 4)}
frame_counts = np.arange(1, 65)
fig, ax = plt.subplots(figsize=(6, 3.2))
for name, (per_frame, merge) in schemes.items():
    ax.plot(frame_counts, [token_budget(int(n), per_frame, merge, CONTEXT, TEXT).visual_tokens for n in frame_counts],
            label=f"{name}: {token_budget(1, per_frame, merge, CONTEXT, TEXT).max_frames} frames fit")
ax.plot(frame_counts, np.full(len(frame_counts), 32), label="video Q-Former (Video-LLaMA): 32 per clip")
ax.axhline(CONTEXT - TEXT, color="gray", ls="--", lw=1, label="context minus text")
ax.set_yscale("log")
ax.set_xlabel("frames sampled")
ax.set_ylabel("visual tokens")
ax.set_title("What frames cost a 4,096-token context")
ax.legend(fontsize=7)
plt.show()
fits = {name: token_budget(8, per_frame, merge, CONTEXT, TEXT).max_frames for name, (per_frame, merge) in schemes.items()}
assert fits == {"every token (Video-LLaVA)": 15, "2x2 pooling (LLaVA-NeXT-Video)": 27, "merge 4 (MiniGPT4-Video)": 62}

# %% [markdown]
# What more frames buy, read two ways: our Video-LLaVA from the same weights at 1 to 9 evenly spaced frames (16
# visual tokens each), and the grounded reader of §Single-frame bias trained once with every batch at one of those
# counts and scored at each (the benchmark's `sampled` arm, three seeds):

# %%
sampled = (1, 2, 3, 5, 9)
curve = {s: [llava_scores[s, "middle frame"]["accuracy"]["all"] if k == 1 else
             llava_scores[s, "9 frames"]["accuracy"]["all"] if k == 9 else
             video_qa_eval(video_llava, tower_tf, suites[s], frames=k, max_new_tokens=14)["accuracy"]["all"]
             for k in sampled] for s in suites}
reader_curve = {(s, k): [r[f"{s}_by_frames"][str(k)] for r in vqa_bench["runs"] if r["arm"] == "sampled"]
                for s in suites for k in sampled}
fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharey=True)
for ax, s in zip(axes, suites):
    ax.plot(sampled, curve[s], "o-", label="Video-LLaVA (tiny)")
    lo, hi = ([f(reader_curve[s, k]) for k in sampled] for f in (min, max))
    ax.plot(sampled, [np.mean(reader_curve[s, k]) for k in sampled], "s-", label="grounded reader (3 seeds)")
    ax.fill_between(sampled, lo, hi, color="C1", alpha=0.25)
    floor = ("blind Video-LLaVA", acc[s, "blind"]) if s == "standard" else ("chance", chance[s])
    ax.axhline(floor[1], color="gray", ls=":", lw=1, label=floor[0])
    ax.set_xticks(sampled)
    ax.set_xlabel("frames sampled (evenly spaced)")
    ax.set_title(f"{s} suite" + (" (needs two frames)" if s == "temporal" else ""), fontsize=9)
    ax.legend(fontsize=7)
axes[0].set_ylabel("accuracy")
fig.suptitle("Accuracy against frames sampled", fontsize=10)
fig.tight_layout()
plt.show()
print("Video-LLaVA:", {s: [round(x, 3) for x in c] for s, c in curve.items()})
print("grounded reader (mean of 3 seeds):",
      {s: [round(float(np.mean(reader_curve[s, k])), 3) for k in sampled] for s in suites})
assert max(curve["standard"]) - min(curve["standard"]) < 0.08  # one frame is as good as nine on this suite
assert max(curve["temporal"]) < chance["temporal"] + 0.05  # and no number of frames lifts it above chance on time
frames_verdict = {k: seed_verdict(reader_curve["temporal", k], reader_curve["temporal", 1]) for k in sampled[1:]}
print("grounded reader, temporal suite, k frames against the middle frame:", frames_verdict)
assert max(reader_curve["temporal", 1]) < chance["temporal"] + 0.1  # one frame: near chance, as proved
assert all(v == "higher" for v in frames_verdict.values())  # any second frame lifts it, at every seed
assert seed_verdict(reader_curve["standard", 9], reader_curve["standard", 1]) == "within the seed spread"

# %% [markdown]
# Video-LLaVA is flat on both suites: on the standard suite because one frame holds what it asks, on the temporal
# suite because it never learned to read motion. The grounded reader shows the other shape on the temporal suite:
# within 0.1 of chance from the middle frame alone (a few points above it, from where objects sit in forward clips),
# and at its ceiling from two frames on, the first and the last (which way an object *starts* to move is mostly
# which way it went); on the standard suite its extra frames stay within the seed spread. That is the trade-off the
# papers make where a model does read time: Video-LLaVA samples 8 frames; LLaVA-NeXT-Video pools 2 x 2, which fits
# 27 frames in a 4,096-token context (above), and reaches the 32 frames it samples per clip by stretching its
# language model's context with linear RoPE scaling; MiniGPT4-Video merges to fit more frames and subtitles in Llama
# 2's context; and frames a model cannot use buy nothing.

# %% [markdown]
# **Merging instead of dropping.** MiniGPT4-Video fits more frames by concatenating each run of four adjacent visual
# tokens into one, a linear layer then mapping it to the language model's width: a quarter of the tokens, nothing
# thrown away. The benchmark's `merged` arm does that to the grounded reader's tokens (`merge_tokens`: four
# consecutive tokens of a frame into one of 4 x 64 channels; the reader's input layer is the projection), all nine
# frames, three seeds:

# %%
def arm_runs(arm: str, key: str) -> list[float]:
    return [r[key] for r in vqa_bench["runs"] if r["arm"] == arm]


for arm in ("frames", "merged"):
    print(f"{arm:7s} {np.mean(arm_runs(arm, 'temporal_tokens_per_clip')):6.1f} tokens per temporal-suite clip, "
          f"training {np.mean(arm_runs(arm, 'seconds')):4.0f} s; accuracy standard "
          f"{min(arm_runs(arm, 'standard')):.3f}-{max(arm_runs(arm, 'standard')):.3f}, temporal "
          f"{min(arm_runs(arm, 'temporal')):.3f}-{max(arm_runs(arm, 'temporal')):.3f}")
merge_verdict = {s: seed_verdict(arm_runs("merged", s), arm_runs("frames", s)) for s in suites}
print("merged against every token:", merge_verdict)
assert np.mean(arm_runs("merged", "temporal_tokens_per_clip")) < 0.3 * np.mean(arm_runs("frames",
                                                                                        "temporal_tokens_per_clip"))
assert merge_verdict == {"standard": "within the seed spread", "temporal": "within the seed spread"}
assert np.mean(arm_runs("merged", "seconds")) < 0.3 * np.mean(arm_runs("frames", "seconds"))  # as recorded

# %% [markdown]
# A quarter of the tokens (rounding each question up to a multiple of four makes it a little more), about a fifth of
# the training time (as the benchmark recorded it), and no difference beyond the seed spread on either suite:
# concatenation loses nothing the reader needed. That is MiniGPT4-Video's bet; the price is a wider input layer,
# and in a language model, tokens that no longer line up one-to-one with image patches.

# %% [markdown]
# ## GPU-ready training
#
# `python -m vlm_primer.train video_llava` runs the same recipe at any preset. `--preset base` builds
# LLaVA-NeXT-Video-7B's shapes (CLIP ViT-L/14 at 336 px, 144 pooled tokens per frame, a 7B language model) with
# random weights unless `--set init=` loads converted ones (`vlm_primer.interop.video_llava`):
#
# ```bash
# torchrun --nproc_per_node 8 -m vlm_primer.train video_llava --preset base --precision bf16 \
#     --set init=runs/llava-next-video-7b.safetensors --set frames=4,8 --batch-size 4 --ckpt-dir runs/video-llava
# ```
#
# Here it runs two steps at `tiny`:

# %%
from vlm_primer.train import main as train_main  # noqa: E402

history = train_main(["video_llava", "--preset", "tiny", "--batch-size", "4", "--steps", "2", "--no-progress",
                      "--device", "cpu", "--precision", "fp32", "--set", "train_size=32", "--set", "frames=3,9"])
assert history[-1]["step"] == 2 and np.isfinite(history[-1]["loss"])

# %% [markdown]
# ## Summary
#
# * **Time can be proved necessary.** A clip and its reversal share their middle frame; every question of the
#   temporal suite gets a different answer on the two, so no single frame gets both a clip and its reversal right,
#   while fewer than one in ten of a standard-style suite's questions are like that (7 %).
# * **Single-frame bias.** On the standard suite, our Video-LLaVA's middle frame alone scores as well as its nine
#   frames (the paired interval of the difference holds zero), far above its blind control; on the temporal suite it
#   is at chance from one frame and from nine: at this budget it learned objects, not motion. A reader that starts
#   from chapter 06b's grounder, so that words come bound to objects, does read motion: on the temporal suite its
#   nine frames beat its middle frame at every seed (about four directions in five against near chance), while on
#   the standard suite the same gain is within the seed spread.
# * **Intuitive physics.** VideoBERT's surprise, trained on possible clips with the future masked, is higher on the
#   impossible clip by 2 nats per frame or more at every seed; the untrained model's margin is a tenth of a nat or
#   so, under a tenth of theirs (the margin is the evidence: on vanishing pairs the untrained model is more surprised
#   by the impossible clip just as often); a context-free control catches objects passing through
#   each other (rare frames) but not an object vanishing behind a screen.
# * **Frame order** is learnable only when the world has an arrow of time: MERLOT's reordering head is well above
#   chance on clips with one, systematically wrong on the same clips reversed, and at chance when nothing moves,
#   at each of three seeds.
# * **Video-LLaMA's temporal embedding** is what lets its video Q-Former tell frames apart: without it a reversed
#   clip gives the same tokens.
# * **The cost of frames**: every token leaves room for 15 frames in a 4,096-token context, pooling or merging by 4
#   for 27 to 62, a video Q-Former for any number up to its temporal table's size. Frames a model cannot use buy
#   nothing (Video-LLaVA is flat from 1 to 9); for the grounded reader the second frame is what lifts the temporal
#   suite off chance, more add little, and merging its tokens four into one keeps its accuracy within the seed spread
#   on a quarter of the tokens.

# %% [markdown]
# ## Exercises
#
# Write each answer in the cell below and run it: `check` runs hidden tests and says what is wrong, never what the
# answer is.
#
# 1. **Evenly spaced frames** (`08.1`). Write `frame_indices_answer(num_frames, k)` (the plain name is the package's,
#    imported above): `k` indices spread over the clip, first and last included, and the middle frame when `k = 1`.
# 2. **The single-frame ceiling** (`08.2`). Given each clip's answer and its reversed clip's answer, write
#    `single_frame_ceiling(answers, reversed_answers)`: the best accuracy any function of the shared middle frame can
#    reach on the clips and their reversals together.
# 3. **Frame tokens with temporal positions** (`08.3`). Write `add_frame_positions(tokens, emb)`: `(B, T, Q, D)` frame
#    tokens plus each frame's temporal embedding, concatenated into `(B, T * Q, D)` (Video-LLaMA).
# 4. **MERLOT's pairwise order targets** (`08.4`). Slot `s` holds original frame `perm[s]`; write
#    `order_targets(perm, shuffled)`: for every pair of shuffled slots `s < u`, `((s, u), label)` with label 1 when
#    `perm[s]` came before `perm[u]`.
# 5. **Token merging** (`08.5`). Write `merge_tokens_answer(tokens, m)`: every `m` adjacent tokens concatenated (the
#    plain name is the package's, imported above).
# 6. **The frames that fit** (`08.6`). Write `frames_that_fit(context_length, text_tokens, tokens_per_frame, merge)`.

# %%
from vlm_primer.exercises import check  # noqa: E402


def frame_indices_answer(num_frames, k):
    raise NotImplementedError  # your code here


def single_frame_ceiling(answers, reversed_answers):
    raise NotImplementedError


def add_frame_positions(tokens, emb):
    raise NotImplementedError


def order_targets(perm, shuffled):
    raise NotImplementedError


def merge_tokens_answer(tokens, m):
    raise NotImplementedError


def frames_that_fit(context_length, text_tokens, tokens_per_frame, merge):
    raise NotImplementedError


for exercise_id, answer in [("08.1", frame_indices_answer), ("08.2", single_frame_ceiling),
                            ("08.3", add_frame_positions), ("08.4", order_targets), ("08.5", merge_tokens_answer),
                            ("08.6", frames_that_fit)]:
    check(exercise_id, answer)

# %% [markdown]
# ## References
#
# The survey's §5 {cite:p}`bordes2024introduction`; VideoBERT {cite:p}`sun2019videobert`; MERLOT
# {cite:p}`zellers2021merlot`; VideoOFA {cite:p}`chen2023videoofa`; Video-LLaMA {cite:p}`zhang2023videollama`;
# Video-LLaVA {cite:p}`lin2023videollava`; LLaVA-NeXT-Video {cite:p}`zhang2024llavanextvideo`; MiniGPT4-Video
# {cite:p}`ataallah2024minigpt4video`; GRASP's intuitive-physics tests {cite:p}`jassim2023grasp`.

# %%
elapsed = time.time() - T_START
print(f"chapter executed in {elapsed:.0f} s at scale {SCALE!r}")
