"""The zoo's Video-LLaVA: ``llava-next-tiny`` fine-tuned on Shapes World clips, for notebook 08.

Explained in notebook 08, §Video-LLaVA on Shapes World. The model is the zoo's ``llava-next-tiny`` read as a
LLaVA-NeXT-Video (one tower, every frame's patch tokens pooled 2 x 2: 16 tokens per 48 px frame), trained as stage 2
(connector + LM, tower frozen) on video QA of both suites and on video captions, each batch at 3, 5 or 9 evenly
spaced frames of a 9-frame clip. Kept in its own module so that the other zoo models keep their recipe hashes.
"""

from __future__ import annotations

from typing import Any

from torch import nn

SOURCES = ("vlm_primer.video.recipes:tiny_video_llava", "vlm_primer.video.recipes:video_chat_data",
           "vlm_primer.video.recipes:video_qa_set", "vlm_primer.video.recipes:train_video",
           "vlm_primer.video.data:VideoChatDataset", "vlm_primer.video.data:video_collate",
           "vlm_primer.world.video_qa:VideoQADataset", "vlm_primer.world.video:sample_clip")
STEPS, FRAME_COUNTS = 1500, (3, 5, 9)
PARTS = ("standard", "temporal", "temporal", "caption")


def measure(name: str, model: nn.Module) -> dict[str, float]:
    """Exact-match accuracy on 300 held-out clips of each suite, from all 9 frames, from the middle frame alone, and
    blind (9 blank frames)."""
    from vlm_primer.video.recipes import video_qa_eval, video_qa_set
    from vlm_primer.zoo import preprocess

    model, transform = model.float().eval(), preprocess("clip-tiny-pairs")
    out = {}
    for suite in ("standard", "temporal"):
        questions = video_qa_set(suite, 300)
        for view, kw in (("9f", dict(frames=9)), ("1f", dict(frames=1)), ("blind", dict(frames=9, blind=True))):
            acc = video_qa_eval(model, transform, questions, max_new_tokens=14, **kw)["accuracy"]
            out |= {f"{suite}_{view}_{k}": round(v, 4) for k, v in acc.items()}
    return out


def video_llava_tiny(steps: int | None = None, progress: bool = True, seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """``llava-next-tiny`` as a LLaVA-NeXT-Video, 1,500 steps of 32 video conversations (QA of the standard and the
    temporal suite, captions; 3, 5 or 9 frames per batch), connector and LM trained, tower frozen."""
    from vlm_primer.utils import seed_everything
    from vlm_primer.video.recipes import tiny_video_llava, train_video, video_chat_data

    seed_everything(seed)
    model, transform = tiny_video_llava()
    data = video_chat_data(40_000, transform, seed=seed, parts=PARTS)
    train_video(model, data, steps or STEPS, frame_counts=FRAME_COUNTS, seed=seed, progress=progress)
    return model, measure("video-llava-tiny", model)


RECIPES = {"video-llava-tiny": video_llava_tiny}
