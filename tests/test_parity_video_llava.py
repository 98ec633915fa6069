"""Video-LLaVA against ``transformers``' ``VideoLlavaForConditionalGeneration`` (tiny random config, every weight
perturbed): logits and loss with an image, with a video and with both in one batch, greedy generation from a video,
both conversion directions, and the bad inputs that must fail with a clear error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from vlm_primer.interop.video_llava import video_llava_from_hf, video_llava_to_hf
from vlm_primer.video import VideoLlava, VideoLlavaConfig

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))
from tiny_hf import tiny_llava_hf  # noqa: E402

IMG, VID, FRAMES = 98, 99, 3


def _tiny_hf(name: str, **extra):
    """A tiny random ``transformers`` ``{name}ForConditionalGeneration``, every weight moved off its init."""
    return tiny_llava_hf(name, IMG, max_position_embeddings=512, video_token_index=VID, **extra)


@pytest.fixture(scope="module")
def hf_video_llava():
    return _tiny_hf("VideoLlava", image_seq_length=16, video_seq_length=FRAMES * 17)


def _inputs(images: bool, videos: bool):
    g = torch.Generator().manual_seed(1)
    prompt = [1, 7] + [IMG] * 16 * images + [8] + [VID] * (FRAMES * 17) * videos + [9, 10]
    ids = torch.tensor([prompt + [12, 13, 2]] * 2)
    ids[1, 1] = 20
    labels = torch.full_like(ids, -100)
    labels[:, -3:] = ids[:, -3:]
    kw = {}
    if images:
        kw["pixel_values"] = torch.randn(2, 3, 32, 32, generator=g)
    if videos:
        kw["pixel_values_videos"] = torch.randn(2, FRAMES, 3, 32, 32, generator=g)
    return ids, labels, kw


@pytest.mark.parametrize("images, videos", [(True, False), (False, True), (True, True)])
def test_logits_and_loss_match_transformers(hf_video_llava, images, videos):
    ours = video_llava_from_hf(hf_video_llava, num_frames=FRAMES)
    ids, labels, kw = _inputs(images, videos)
    with torch.no_grad():
        want = hf_video_llava(input_ids=ids, labels=labels, **kw)
        got = ours(ids, labels=labels, **kw)
        fresh = VideoLlava(ours.cfg).eval()(ids, **kw)  # the comparison can fail: an unconverted model differs
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, want.loss, atol=1e-5, rtol=1e-5)
    assert (fresh.logits - want.logits).abs().max() > 1e-2


def test_video_tokens_keep_cls_and_the_towers_are_separate(hf_video_llava):
    ours = video_llava_from_hf(hf_video_llava, num_frames=FRAMES)
    assert ours.cfg.tokens_per_frame == 17 and ours.tokens_per_video == FRAMES * 17 and ours.tokens_per_image == 16
    _, _, kw = _inputs(False, True)
    with torch.no_grad():
        swapped = ours.video_features(kw["pixel_values_videos"])
        ours.video_tower.load_state_dict(ours.vision_tower.state_dict())
        assert not torch.allclose(swapped, ours.video_features(kw["pixel_values_videos"]))


def test_greedy_generation_from_a_video_matches_transformers(hf_video_llava):
    ours = video_llava_from_hf(hf_video_llava, num_frames=FRAMES)
    ids, _, kw = _inputs(False, True)
    ids, kw = ids[:1, :-3], {"pixel_values_videos": kw["pixel_values_videos"][:1]}
    want = hf_video_llava.generate(input_ids=ids, max_new_tokens=6, do_sample=False, eos_token_id=-1, pad_token_id=0,
                                   **kw)[:, ids.shape[1]:]
    got = ours.generate(ids, max_new_tokens=6, **kw)
    assert torch.equal(got, want)


def test_round_trip_to_transformers(hf_video_llava):
    back = video_llava_to_hf(video_llava_from_hf(hf_video_llava, num_frames=FRAMES))
    for k, v in hf_video_llava.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, msg=k)


def test_bad_input_is_refused_with_a_clear_message(hf_video_llava):
    ours = video_llava_from_hf(hf_video_llava, num_frames=FRAMES)
    ids, _, kw = _inputs(False, True)
    videos = kw["pixel_values_videos"]
    with pytest.raises(ValueError, match="frames per video"):  # more frames than num_frames
        ours(ids, pixel_values_videos=torch.cat([videos, videos[:, :1]], 1))
    with pytest.raises(ValueError, match="video placeholders"):  # fewer frames than the prompt has placeholders for
        ours(ids, pixel_values_videos=videos[:, :2])
    with pytest.raises(ValueError, match=r"\(videos, frames, 3, H, W\)"):
        ours(ids, pixel_values_videos=kw["pixel_values_videos"][0])
    with pytest.raises(ValueError, match="video placeholders"):
        ours(ids[:, 5:], pixel_values_videos=kw["pixel_values_videos"])
    shared = VideoLlava(VideoLlavaConfig.from_preset("tiny", num_frames=2))
    with pytest.raises(ValueError, match="share one placeholder"):
        shared(torch.tensor([[2, 5]]), pixel_values=torch.zeros(1, 3, 48, 48),
               pixel_values_videos=torch.zeros(1, 2, 3, 48, 48))
    four = VideoLlava(VideoLlavaConfig.from_preset("tiny", num_frames=4))  # 4 x 65 tokens: over the 256 of context
    with pytest.raises(ValueError, match="sample fewer frames"):
        four(torch.tensor([[2] + [5] * four.tokens_per_video + [3]]), pixel_values_videos=torch.zeros(1, 4, 3, 48, 48))
    with pytest.raises(ValueError, match="video_token_id"):
        VideoLlavaConfig.from_preset("tiny", video_token_id=10_000)


# --------------------------------------------------------------------------- LLaVA-NeXT-Video

PINPOINTS = [[32, 64], [64, 32], [64, 64]]


@pytest.fixture(scope="module")
def hf_next_video():
    return _tiny_hf("LlavaNextVideo", image_grid_pinpoints=PINPOINTS, spatial_pool_mode="average",
                    spatial_pool_stride=2, image_seq_length=16, video_seq_length=FRAMES * 4)


def test_llava_next_video_logits_match_transformers_with_a_video_and_with_an_image(hf_next_video):
    from vlm_primer.backbones import anyres_tiles
    from vlm_primer.interop.video_llava import llava_next_video_from_hf, llava_next_video_to_hf
    from vlm_primer.video import LlavaNextVideo

    ours = llava_next_video_from_hf(hf_next_video, num_frames=FRAMES)
    assert isinstance(ours, LlavaNextVideo) and ours.cfg.tokens_per_frame == 4  # a 4 x 4 grid pooled 2 x 2
    g = torch.Generator().manual_seed(3)
    videos = torch.randn(2, FRAMES, 3, 32, 32, generator=g)
    ids = torch.tensor([[1, 7] + [VID] * ours.tokens_per_video + [9, 10, 12]] * 2)
    ids[1, 1] = 20
    labels = torch.where(torch.arange(ids.shape[1]) >= ids.shape[1] - 2, ids, -100)
    with torch.no_grad():
        want = hf_next_video(input_ids=ids, pixel_values_videos=videos, labels=labels)
        got = ours(ids, pixel_values_videos=videos, labels=labels)
        fresh = LlavaNextVideo(ours.cfg).eval()(ids, pixel_values_videos=videos)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, want.loss, atol=1e-5, rtol=1e-5)
    assert (fresh.logits - want.logits).abs().max() > 1e-2
    image = torch.rand(3, 40, 70, generator=g)  # and an AnyRes image in the same model
    tiles = anyres_tiles(image, 32, PINPOINTS)[None]
    ids = torch.tensor([ours.expand_image_tokens([1, 7, IMG, 9], [ours.num_image_tokens((40, 70))])])
    with torch.no_grad():
        want = hf_next_video(input_ids=ids, pixel_values=tiles, image_sizes=torch.tensor([[40, 70]])).logits
        got = ours(ids, tiles, image_sizes=torch.tensor([[40, 70]])).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    back = llava_next_video_to_hf(ours)
    for k, v in hf_next_video.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, msg=k)


def test_llava_next_video_pooling_by_hand_and_its_token_budget():
    from vlm_primer.video import LlavaNextVideo, LlavaNextVideoConfig

    torch.manual_seed(0)
    model = LlavaNextVideo(LlavaNextVideoConfig.from_preset("tiny", num_frames=2)).eval()
    video = torch.randn(1, 2, 3, 48, 48)
    hidden = model.vision_tower(video[0], output_hidden_states=True).hidden_states[-2][:, 1:]  # (2, 64, dim)
    grid = hidden.reshape(2, 8, 8, -1)
    pooled = (grid[:, 0::2, 0::2] + grid[:, 1::2, 0::2] + grid[:, 0::2, 1::2] + grid[:, 1::2, 1::2]) / 4
    want = model.connector(pooled.reshape(2, 16, -1)).reshape(1, 32, -1)
    torch.testing.assert_close(model.video_features(video), want, atol=1e-5, rtol=1e-5)
    assert model.tokens_per_video == 2 * 16 and model.tokens_per_image == 64  # a frame costs a quarter of an image
    with pytest.raises(ValueError, match="pool_stride"):
        LlavaNextVideoConfig.from_preset("tiny", pool_stride=3)
    with pytest.raises(ValueError, match="no pixel_values_videos"):
        VideoLlava(VideoLlavaConfig.from_preset("tiny", video_token_id=4))(torch.tensor([[2, 4, 3]]))
