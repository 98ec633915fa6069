"""Chapter 08's single-frame bias with a reader that sees time: every frame, the middle frame alone, or no frame.

    python benchmarks/bench_video_qa.py --seeds 0 1 2 --jobs 2

A quality benchmark, not a speed one. Every arm is a :class:`~vlm_primer.video.frame_qa.FrameQA` (a joint encoder
over frame tokens in time, answering from [CLS], as MERLOT is fine-tuned for QA) over the same frozen
front end: the zoo's ``grounder-tiny`` (chapter 06b's X-VLM) reads the question against each 48 px frame of a
9-frame Shapes World clip with one or two objects, and its cross-modal encoder's tokens of the question are that
frame's tokens (:func:`~vlm_primer.video.frame_qa.grounded_tokens`: the words already bound to the objects they
name). The arms differ only in which frames they see, in training and in test:

* ``frames``: all 9 frames (the temporal model);
* ``single``: the middle frame, the one a clip shares with its reversal (the single-frame model of §5.4);
* ``blind``: a blank frame, the question alone (the text-only control);
* ``sampled``: each batch at one of ``FRAME_COUNTS`` evenly spaced frames (1 is the middle frame), scored at each
  count: what more frames buy one reader (the chapter's cost-of-frames plot);
* ``merged``: all 9 frames, each frame's tokens merged ``MERGE`` at a time as MiniGPT4-Video merges visual tokens
  (:func:`~vlm_primer.video.token_merging.merge_tokens`: consecutive tokens concatenated, a quarter of the tokens).

Why grounded tokens: probes before this benchmark (not kept) gave the same reader the zoo tower's pooled patch grid
(:func:`~vlm_primer.video.frame_qa.grid_features`) and the question as words of its own. It learned nothing in 1,000
steps of 64 on 4,000 questions per suite, not even appearance (colour 10 %, direction 30 %); told the object as a
(shape, colour) pair instead of words, it reached 52 % on direction in 300 steps (one or two objects). The frames
carry the motion; what a small reader cannot learn in this budget is which words name which object, and that is what
the grounder learned (92 % referring accuracy).

Each arm trains ``STEPS`` batches of ``BATCH`` on ``TRAIN`` questions of each suite mixed (``standard``: what a
typical video QA benchmark asks, appearance and motion as they come; ``temporal``: only questions that the reversed
clip answers differently), AdamW at ``LR``, and is scored by exact-match accuracy per suite and question type on
``EVAL`` held-out questions of each suite (the chapter's test questions), beside the temporal suite's chance (a
quarter for a direction, a half for a which-first question). The budget was fixed before the seeds were run, after
one probe (all frames, 400 steps: 0.68 on the temporal suite). It writes ``benchmarks/results/video_qa.json`` with a
reduced run (``CHECK``) that ``tests/test_bench_video_qa.py`` repeats.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import seed_parser, write_seed_runs  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "video_qa.json"
TRAIN, EVAL, STEPS, BATCH, LR = 3000, 300, 600, 64, 1e-3
ARMS = ("frames", "sampled", "merged", "single", "blind")  # the long runs first
FRAME_COUNTS = (1, 2, 3, 5, 9)
SUITES = ("standard", "temporal")
MIDDLE = 4  # of 9 frames
WIDTH = 48  # question tokens, padded
MERGE = 4  # tokens merged into one by the merged arm
CHECK = dict(train=48, eval=24, steps=3)


@lru_cache(maxsize=4)
def data(split: str, size: int) -> dict:
    """``size`` questions of each suite of ``split``: the grounded tokens of every frame and of a blank frame, the
    question's mask, the answer classes and the question types."""
    from vlm_primer import zoo
    from vlm_primer.text import Tokenizer
    from vlm_primer.video.frame_qa import answer_index, grounded_tokens
    from vlm_primer.video.recipes import video_qa_set
    from vlm_primer.world.video import render_clip

    grounder, transform = zoo.load("grounder-tiny").float().eval(), zoo.preprocess("grounder-tiny")
    tok, out = Tokenizer.load(), {}
    for suite in SUITES:
        qa = video_qa_set(suite, size, split=split, seed=0 if split == "test" else 10)
        items = [qa.item(i) for i in range(size)]
        enc = {k: torch.nn.functional.pad(v, (0, WIDTH - v.shape[1]))  # one width for both suites
               for k, v in tok([q.question for _, q in items], max_length=WIDTH).items()}
        frames = transform(torch.stack([render_clip(c, 48) for c, _ in items]))
        blank = transform(torch.zeros_like(frames[:, :1]))
        tokens = {view: torch.cat([grounded_tokens(grounder, f[i:i + 256], enc["input_ids"][i:i + 256],
                                                   enc["attention_mask"][i:i + 256]) for i in range(0, size, 256)])
                  for view, f in (("frames", frames), ("blank", blank))}
        out[suite] = dict(tokens, mask=enc["attention_mask"].bool(), answers=[answer_index(c, q) for c, q in items],
                          qtypes=[q.qtype for _, q in items])
        if suite == "temporal":
            out[suite]["chance"] = float(np.mean([0.25 if q.qtype == "direction" else 0.5 for _, q in items]))
    return out


def view(d: dict, arm: str, rows=slice(None), k: int = 9) -> tuple[torch.Tensor, list[int]]:
    """What ``arm`` sees of the questions ``rows`` of ``d``: frame tokens ``(B, T, L, D)`` and their frame ids
    (``sampled``: ``k`` evenly spaced frames)."""
    from vlm_primer.video.data import frame_indices

    if arm == "blind":
        return d["blank"][rows], [MIDDLE]
    ids = [MIDDLE] if arm == "single" else frame_indices(9, k) if arm == "sampled" else list(range(9))
    return d["frames"][rows][:, ids], ids


def inputs(d: dict, arm: str, rows=slice(None), k: int = 9, n: int = WIDTH):
    """The reader's inputs for ``arm`` (:func:`view`) on the first ``n`` question tokens: frame tokens, frame ids and
    the tokens' mask; the ``merged`` arm's tokens merged ``MERGE`` at a time (a merged token is real when any of its
    tokens is)."""
    from vlm_primer.video.token_merging import merge_tokens

    tokens, ids = view(d, arm, rows, k)
    m = MERGE if arm == "merged" else 1
    n = -(-n // m) * m
    tokens, mask = tokens[:, :, :n], d["mask"][rows][:, :n]
    if m > 1:
        tokens = merge_tokens(tokens.flatten(0, 1), m).unflatten(0, tokens.shape[:2])
        mask = mask.unflatten(1, (-1, m)).any(-1)
    return tokens, ids, mask


def run(job: tuple[str, int], *, train: int = TRAIN, eval_size: int = EVAL, steps: int = STEPS) -> dict:
    """One arm at one seed, on one thread: train, then score both suites."""
    from vlm_primer.utils import seed_everything
    from vlm_primer.video.frame_qa import FrameQA, FrameQAConfig

    arm, seed = job
    torch.set_num_threads(1)
    tr, te = data("train", train), data("test", eval_size)
    classes = sorted({a for s in SUITES for d in (tr, te) for a in d[s]["answers"]})
    pool = {k: torch.cat([tr[s][k] for s in SUITES]) for k in ("frames", "blank", "mask")}
    labels = torch.tensor([classes.index(a) for s in SUITES for a in tr[s]["answers"]])
    seed_everything(seed)
    m = MERGE if arm == "merged" else 1
    model = FrameQA(FrameQAConfig.from_preset("tiny", num_answers=len(classes), tokens_per_frame=WIDTH // m,
                                              feature_dim=64 * m))
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(labels), (BATCH,), generator=g)
        n = int(pool["mask"][idx].sum(1).max())  # the batch's longest question
        tokens, frame_ids, mask = inputs(pool, arm, idx, FRAME_COUNTS[step % len(FRAME_COUNTS)], n)
        loss = model(tokens, labels=labels[idx], frame_ids=frame_ids, feature_mask=mask).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    result = {"arm": arm, "seed": seed, "seconds": round(time.perf_counter() - start, 1)}
    with torch.no_grad():
        for suite in SUITES:
            qtypes = np.array(te[suite]["qtypes"])
            for k in FRAME_COUNTS if arm == "sampled" else (9,):
                tokens, frame_ids, mask = inputs(te[suite], arm, k=k)
                pred = model(tokens, frame_ids=frame_ids, feature_mask=mask).logits.argmax(-1)
                hits = np.array([classes[p] == a for p, a in zip(pred.tolist(), te[suite]["answers"])])
                if arm == "sampled":
                    result.setdefault(f"{suite}_by_frames", {})[str(k)] = round(float(hits.mean()), 4)
            result[suite] = round(float(hits.mean()), 4)  # all the frames it sees (the last count)
            result[f"{suite}_tokens_per_clip"] = round(float(mask.sum(1).float().mean()) * len(frame_ids), 1)
            result[f"{suite}_by_type"] = {str(t): round(float(hits[qtypes == t].mean()), 4)
                                          for t in sorted(set(qtypes))}
    return result


def main() -> None:
    args = seed_parser(__doc__).parse_args()
    start = time.perf_counter()
    torch.set_num_threads(1)  # no thread pool yet when the workers fork
    data("train", TRAIN), data("test", EVAL)  # computed once, inherited by the workers
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(run, [(a, s) for a in ARMS for s in args.seeds]))
    check = [{k: v for k, v in run((a, 0), train=CHECK["train"], eval_size=CHECK["eval"], steps=CHECK["steps"]).items()
              if k != "seconds"} for a in ARMS]
    write_seed_runs(OUT, "bench_video_qa.py", args.seeds, args.jobs, start, runs, train=TRAIN, eval=EVAL,
                    steps=STEPS, batch=BATCH, lr=LR, chance=data("test", EVAL)["temporal"]["chance"], check=check,
                    check_size=CHECK)
    chance = data("test", EVAL)["temporal"]["chance"]
    print(f"{'arm':8s} {'standard':>14s} {'temporal':>14s}  (temporal chance {chance:.3f})")
    for arm in ARMS:
        rs = [r for r in runs if r["arm"] == arm]
        print(f"{arm:8s}", *(f"{min(r[s] for r in rs):6.3f}-{max(r[s] for r in rs):6.3f}" for s in SUITES))


if __name__ == "__main__":
    main()
