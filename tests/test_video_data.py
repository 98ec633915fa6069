"""Chapter 08's Video-LLaVA pipeline: evenly sampled frames, video conversations, the collate that expands the
video placeholder per batch, the read-out at any number of frames (or blind), and ``python -m vlm_primer.train
video_llava``."""

from __future__ import annotations

import contextlib
import io
import math
import re

import pytest
import torch

from vlm_primer.backbones.llava import IMAGE_TOKEN_ID
from vlm_primer.text import Tokenizer
from vlm_primer.video import LlavaNextVideo, LlavaNextVideoConfig
from vlm_primer.video.data import CAPTION_VIDEO_REQUEST, VideoChatDataset, frame_indices, video_collate
from vlm_primer.video.recipes import ask_videos, tiny_video_llava, video_chat_data, video_qa_eval, video_qa_set
from vlm_primer.world.video import describe_clip


def test_frame_indices_are_even_and_one_frame_is_the_middle():
    assert frame_indices(9, 1) == [4]  # the frame a clip shares with its reversal
    assert frame_indices(9, 2) == [0, 8]
    assert frame_indices(9, 3) == [0, 4, 8]
    assert frame_indices(9, 5) == [0, 2, 4, 6, 8]
    assert frame_indices(9, 9) == list(range(9))
    for bad in (0, 10, 2.0, True):
        with pytest.raises((ValueError, TypeError), match=r"k must be an int in \[1, 9\]"):
            frame_indices(9, bad)


def test_chat_items_and_collate_expand_the_placeholder_per_batch():
    qa = video_qa_set("temporal", 6, split="train")
    tok = Tokenizer.load()
    ds = VideoChatDataset(qa, lambda x: x * 2)
    item = ds[0]
    assert item["input_ids"].count(IMAGE_TOKEN_ID) == 1 and item["frames"].shape == (9, 3, 48, 48)
    torch.testing.assert_close(item["frames"], qa[0]["frames"] * 2)
    answer = [t for t, m in zip(item["input_ids"], item["target"]) if m]
    assert tok.decode(answer).startswith(qa[0]["answer"])  # the answer (and its end token) is the only target
    captions = VideoChatDataset(qa, captions=True)[1]
    assert CAPTION_VIDEO_REQUEST in tok.decode(captions["input_ids"]) and captions["qtype"] == "caption"
    assert tok.decode([t for t, m in zip(captions["input_ids"], captions["target"]) if m]).startswith(
        describe_clip(qa.item(1)[0]))

    collate = video_collate(16, (1, 3))
    for items in ([ds[0], ds[1]], [ds[0], ds[2]]):  # index sums 1 and 2: three frames, then one
        batch = collate(items)
        k = (1, 3)[sum(it["index"] for it in items) % 2]
        assert batch["pixel_values_videos"].shape == (2, k, 3, 48, 48)
        torch.testing.assert_close(batch["pixel_values_videos"][0], items[0]["frames"][frame_indices(9, k)])
        assert ((batch["input_ids"] == IMAGE_TOKEN_ID).sum(1) == k * 16).all()
        assert (batch["labels"][batch["input_ids"] == IMAGE_TOKEN_ID] == -100).all()
    with pytest.raises(ValueError, match="frame_counts"):
        video_collate(16, ())


def test_a_video_model_reads_fewer_frames_than_its_maximum():
    cfg = LlavaNextVideoConfig.from_preset("tiny", num_frames=4, text=dict(LlavaNextVideoConfig.PRESETS["tiny"]["text"],
                                                                           context_length=512))
    model = LlavaNextVideo(cfg).eval()
    for frames in (1, 2, 4):
        ids = torch.tensor([[2] + [cfg.video_token_id] * (frames * cfg.tokens_per_frame) + [7, 8]])
        out = model(ids, pixel_values_videos=torch.rand(1, frames, 3, 48, 48))
        assert out.logits.shape[1] == ids.shape[1]
    with pytest.raises(ValueError, match="frames per video"):
        model(ids, pixel_values_videos=torch.rand(1, 5, 3, 48, 48))


def test_tiny_video_llava_is_llava_next_tiny_and_reads_blind_and_any_frame_count():
    from vlm_primer import zoo

    model, transform = tiny_video_llava()
    base = zoo.load("llava-next-tiny")
    for k, v in base.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, msg=k)
    qa = video_qa_set("standard", 4)
    for frames in (1, 9):
        out = video_qa_eval(model, transform, qa, frames=frames, max_new_tokens=2)
        assert len(out["predictions"]) == 4 and 0 <= out["accuracy"]["all"] <= 1
    blind = video_qa_eval(model, transform, qa, frames=3, blind=True, max_new_tokens=2)
    assert len(blind["questions"]) == 4
    clip, q = qa.item(0)  # the evaluation's replies are ask_videos' on the same clips, one at a time or batched
    assert ask_videos(model, transform, [clip], [q.question], frames=1, max_new_tokens=2) == [
        video_qa_eval(model, transform, qa, frames=1, max_new_tokens=2, batch_size=1)["predictions"][0]]
    with pytest.raises(ValueError, match="one question per clip"):
        ask_videos(model, transform, [clip], [], frames=1)
    data = video_chat_data(6, transform, parts=("temporal", "caption"))
    assert len(data) == 6
    with pytest.raises(ValueError, match="part"):
        video_chat_data(6, transform, parts=("sports",))


def test_cli_video_llava(tmp_path):
    from vlm_primer.train import main

    common = ["video_llava", "--preset", "tiny", "--batch-size", "4", "--steps", "2", "--no-progress", "--device",
              "cpu", "--precision", "fp32", "--set", "train_size=12"]
    h = main([*common, "--set", "frames=1,3", "--ckpt-dir", str(tmp_path / "v"), "--ckpt-every", "2"])
    assert h[-1]["step"] == 2 and math.isfinite(h[-1]["loss"])
    h = main([*common, "--set", f"init={tmp_path / 'v'}"])
    assert h[-1]["step"] == 2
    with pytest.raises(SystemExit, match="^2$"), contextlib.redirect_stderr(io.StringIO()) as err:
        main([*common, "--set", "frames=12"])
    assert re.search("frames", err.getvalue()), err.getvalue()
    with pytest.raises(SystemExit, match="^2$"), contextlib.redirect_stderr(io.StringIO()) as err:
        main([*common, "--set", "stage=2"])
    assert re.search(r"unknown --set option\(s\) \['stage'\]", err.getvalue()), err.getvalue()


def test_animation_is_offline_with_alt_text():
    import re

    from vlm_primer.video.display import animate_frames

    html = animate_frames(torch.rand(3, 3, 8, 8), 'a "clip"')
    assert not re.findall(r"https?://", html) and "fa fa-" not in html
    assert re.findall(r"<img[^>]*>", html)[0].startswith('<img alt="a clip"')
    assert html.count("data:image/png;base64") == 3
    with pytest.raises(ValueError, match="frames"):
        animate_frames(torch.rand(3, 8, 8), "x")
