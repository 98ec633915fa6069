"""Chapter 06b's text-reading experiment: a squeezed image, AnyRes tiles and a decoupled recognizer, by visual tokens.

    python benchmarks/bench_text_reading.py --seeds 0 1 2 --jobs 2

A quality benchmark, not a speed one. The task: one sign in a 96 px text-rich scene (``WORLD``, 0-2 objects, one
of them possibly carrying a digit too) carries a digit drawn ``TEXT_SIZE`` px high (a twelfth of the 48 px tower's
view would be 4 px); the question is "what number is written on the sign?" (ten answers, chance 0.1). Every arm
starts from the zoo's ``llava-next-tiny`` (chapter 05's LLaVA-NeXT, which has never seen text) and is scored with
exact match and ANLS on ``TEST`` held-out questions:

* ``base``: no training;
* ``squeezed``: LLaVAR's recipe, text-reading instruction data, with the image squeezed to the tower's 48 px
  (one view and its 2 x 2 tiles of the *squeezed* image: 136 visual tokens);
* ``tiles``: the same data through AnyRes tiles of the 96 px image (Monkey's and LLaVA-NeXT's high-resolution
  tiles: 336 visual tokens);
* ``recognizer``: Lumos's decoupling: a small recognizer (:mod:`vlm_primer.recipes.ocr`, trained on ``REC_SCENES``
  other scenes' texts for ``REC_STEPS`` steps) reads each text box of the 96 px image, and the LLM gets the squeezed
  image (136 visual tokens) and the line "ocr: 7 (top right)." before the question (the boxes are the scene's:
  a perfect detector).

The three trained arms get the same ``STEPS`` batches of ``BATCH`` questions (tower, connector and LM trained,
AdamW at ``LR``). Also: the blind control (the most frequent training answer), the recognizer's own accuracy, and
per arm the visual tokens and the text tokens of the prompt. It writes ``benchmarks/results/text_reading.json`` with
a reduced run (``CHECK``) that ``tests/test_bench_text_reading.py`` repeats.

The budget was chosen on probes at seed 0 from chapter 05's LLaVA-NeXT before its AnyRes training
(``tiny_llava_next``), lr 5e-4: at 400 steps both views stayed at chance (0.12; the training loss flat at the answer
prior) while the recognizer arm read every sign; at 1,200 steps the squeezed view stayed at chance (0.11) and the
tiles reached 0.18, their loss leaving the prior only near the end. A first probe with the full vocabulary (words,
letters, digits) and two texts per scene read nothing in either view after 600 steps (0.03 and 0.04).
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import seed_parser, write_seed_runs  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "text_reading.json"
ARMS = ("base", "squeezed", "tiles", "recognizer")
STEPS, BATCH, LR, TEXT_SIZE = 1200, 32, 5e-4, 10
TEST, REC_SCENES, REC_STEPS = 300, 2000, 600
WORLD = dict(image_size=96, sizes=("large",), max_objects=2)
CHECK = dict(steps=2, test=40, rec_scenes=100, rec_steps=5)


def questions(split: str, size: int, seed: int = 0):
    """The reading questions: one digit sign per scene (and perhaps a digit on an object)."""
    from vlm_primer.world import WorldConfig
    from vlm_primer.world.text_rich import DIGITS, TextVQADataset

    return TextVQADataset(split, size, WorldConfig(**WORLD), seed=seed, qtypes=("read_sign",), num_texted=(0, 1),
                          num_signs=1, vocabulary=DIGITS, text_size=TEXT_SIZE)


def recognizer(seed: int, scenes: int = REC_SCENES, steps: int = REC_STEPS):
    """The Lumos arm's recognizer, trained on the texts of ``scenes`` training scenes drawn with another seed."""
    from vlm_primer.recipes.ocr import train_recognizer
    from vlm_primer.world.text_rich import DIGITS, render_text_scene

    data = questions("train", scenes, seed=1000 + seed)
    return train_recognizer([(render_text_scene(ts), ts) for ts in (data.text_scene(i)[0] for i in range(scenes))],
                            DIGITS, steps=steps, seed=seed)


def run(job: tuple, *, test: int = TEST, rec_scenes: int = REC_SCENES, rec_steps: int = REC_STEPS) -> dict:
    """One arm at one seed, ``job = (arm, seed, steps)``; the other arguments shrink the stored reduced run."""
    import torch

    torch.set_num_threads(1)
    from vlm_primer import zoo
    from vlm_primer.backbones.data import AnyResVQADataset
    from vlm_primer.backbones.stages import train_stage, vqa_eval
    from vlm_primer.evaluation import anls_score
    from vlm_primer.recipes.ocr import OCRQuestions
    from vlm_primer.text import Tokenizer
    from vlm_primer.utils import seed_everything
    from vlm_primer.world.text_rich import render_text_scene

    arm, seed, steps = job
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    start = time.perf_counter()
    seed_everything(seed)
    model, transform = zoo.load("llava-next-tiny"), zoo.preprocess("llava-next-tiny")
    train, held = questions("train", max(steps, 1) * BATCH, seed), questions("test", test)
    rec_acc = None
    if arm == "recognizer":
        rec = recognizer(seed, rec_scenes, rec_steps)
        train, held = OCRQuestions(train, rec), OCRQuestions(held, rec)
        scenes = [held.questions.text_scene(i)[0] for i in range(test)]
        read = [rec.read(render_text_scene(ts), ts.boxes()) for ts in scenes]
        rec_acc = sum(r == [t.text for t in ts.texts] for r, ts in zip(read, scenes)) / test  # every text right
    squeeze = arm != "tiles"
    if arm != "base":
        data = AnyResVQADataset(train, model.cfg, transform, squeeze=float(squeeze), seed=seed)
        train_stage(model, 2, data, steps, train_vision=True, lr=LR, seed=seed)
    res = vqa_eval(model, transform, held, squeeze=squeeze)
    qs = res["questions"]
    tok = Tokenizer.load()
    size = (WORLD["image_size"],) * 2
    visual = model.cfg.num_image_tokens(size if not squeeze else (model.cfg.vision.image_size,) * 2)
    out = {"arm": arm, "seed": seed, "steps": 0 if arm == "base" else steps, "accuracy": round(res["accuracy"]["all"], 4),
           "anls": round(anls_score(res["predictions"], [[q.answer] for q in qs]), 4), "visual_tokens": visual,
           "text_tokens": round(sum(len(tok.encode(q.question)) for q in qs) / len(qs), 2),
           "recognizer_accuracy": rec_acc, "seconds": round(time.perf_counter() - start, 1)}
    print(f"  done {arm} seed {seed}: accuracy {out['accuracy']:.3f}, ANLS {out['anls']:.3f}, "
          f"{visual} visual + {out['text_tokens']} text tokens in {out['seconds']} s", flush=True)
    return out


def blind(test: int = TEST) -> float:
    """The blind control: every test question answered with the most frequent answer of 2,000 training questions."""
    from collections import Counter

    train, held = questions("train", 2000, seed=1), questions("test", test)
    top = Counter(train.question(i).answer for i in range(len(train))).most_common(1)[0][0]
    return sum(held.question(i).answer == top for i in range(test)) / test


def main() -> None:
    ap = seed_parser(__doc__)
    args = ap.parse_args()
    start = time.perf_counter()
    reduced = dict(test=CHECK["test"], rec_scenes=CHECK["rec_scenes"], rec_steps=CHECK["rec_steps"])
    order = ("tiles", "recognizer", "squeezed", "base")  # longest first
    with ProcessPoolExecutor(args.jobs) as pool:
        full = [pool.submit(run, (a, s, STEPS)) for a in order for s in args.seeds]
        check = [pool.submit(run, (a, 0, CHECK["steps"]), **reduced) for a in ARMS]
        runs = sorted((f.result() for f in full), key=lambda r: (ARMS.index(r["arm"]), r["seed"]))
        check = [f.result() for f in check]
    write_seed_runs(OUT, "bench_text_reading.py", args.seeds, args.jobs, start, runs, steps=STEPS, batch=BATCH, lr=LR,
                    text_size=TEXT_SIZE, world=WORLD, test=TEST, rec_scenes=REC_SCENES, rec_steps=REC_STEPS,
                    blind=blind(), check=[{k: v for k, v in r.items() if k != "seconds"} for r in check],
                    check_size=CHECK)
    print(f"{'arm':11s} {'tokens':>14s} {'accuracy':>13s} {'ANLS':>13s}")
    for arm in ARMS:
        rs = [r for r in runs if r["arm"] == arm]
        acc, anls = [r["accuracy"] for r in rs], [r["anls"] for r in rs]
        print(f"{arm:11s} {rs[0]['visual_tokens']:4d} + {rs[0]['text_tokens']:5.1f} {min(acc):6.3f}-{max(acc):6.3f} "
              f"{min(anls):6.3f}-{max(anls):6.3f}")


if __name__ == "__main__":
    main()
