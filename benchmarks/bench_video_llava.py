"""Training-step time of our Video-LLaVA vs ``transformers``' VideoLlavaForConditionalGeneration.

    python benchmarks/bench_video_llava.py [--threads 1] [--batch 8] [--frames 4] [--repeats 10]

Same config and weights on both sides (the ``transformers`` model is made from ours with
``vlm_primer.interop.video_llava``; both use SDPA attention). Two 48 px CLIP towers (image and video, 4 x 128, 65
tokens per frame with its CLS) and a Llama-style LM (4 x 256, GQA 8/4 heads); ``--frames`` frames per clip, 42 text
tokens after the video. One training step = forward with the loss + backward + ``AdamW.step()`` + ``zero_grad``
(both towers frozen, connector and LM trained); timed alternately, 3 warm-up steps, the median of ``--repeats``.
Prints the ratio ours / theirs (goal <= 1.0).
"""

from __future__ import annotations

import argparse

import torch
from common import median_alternating


def build(side: str, frames: int):
    from vlm_primer.interop.video_llava import video_llava_to_hf
    from vlm_primer.video import VideoLlava, VideoLlavaConfig

    torch.manual_seed(0)
    cfg = VideoLlavaConfig.from_preset("tiny", num_frames=frames)
    cfg = cfg.replace(vision=cfg.vision.replace(dim=128, depth=4),
                      text=cfg.text.replace(dim=256, heads=8, kv_heads=4, mlp_dim=688, context_length=1024))
    ours = VideoLlava(cfg)
    ours.set_stage(2)
    ours.video_tower.requires_grad_(False)
    if side == "ours":
        return ours.train()
    theirs = video_llava_to_hf(ours)
    theirs.model.image_tower.requires_grad_(False)
    theirs.model.video_tower.requires_grad_(False)
    return theirs.train()


def batch(b: int, frames: int, video_id: int = 5):
    gen = torch.Generator().manual_seed(0)
    slots = frames * 65
    ids = torch.randint(10, 800, (b, slots + 43), generator=gen)
    ids[:, 0], ids[:, 1:1 + slots] = 2, video_id
    labels = ids.clone()
    labels[:, :1 + slots + 21] = -100  # the answer is the last 21 tokens
    return ids, torch.rand(b, frames, 3, 48, 48, generator=gen), labels


def stepper(side: str, frames: int):
    model = build(side, frames)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(ids, videos, labels) -> float:
        out = model(ids, pixel_values_videos=videos, labels=labels) if side == "ours" else \
            model(input_ids=ids, pixel_values_videos=videos, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.item()

    return step


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    import transformers

    print(f"Video-LLaVA, CPU, {a.threads} thread(s), batch {a.batch}, {a.frames} frames x 65 tokens + 43 text tokens; "
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    t = median_alternating({side: stepper(side, a.frames) for side in ("ours", "theirs")},
                           batch(a.batch, a.frames), a.repeats)
    print(f"training step   ours {1e3 * t['ours']:8.1f} ms  theirs {1e3 * t['theirs']:8.1f} ms  "
          f"ratio {t['ours'] / t['theirs']:5.2f}")
    return t


if __name__ == "__main__":
    main()
