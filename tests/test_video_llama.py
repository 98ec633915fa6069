"""Video-LLaMA's vision branch (vlm_primer.video.video_llama): the video Q-Former reads every frame's BLIP-2 tokens
plus a temporal embedding, frame order only matters because of that embedding, the LM loss is the answer's
cross-entropy, from_blip2 reuses the zoo's BLIP-2, cached generation, and the bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlm_primer import zoo
from vlm_primer.backbones import QFormer
from vlm_primer.text import Tokenizer
from vlm_primer.video.video_llama import VideoLlama, VideoLlamaConfig, video_qformer_config
from vlm_primer.world.video import describe_clip, render_clip, sample_clip


@pytest.fixture(scope="module")
def blip2():
    return zoo.load("blip2-tiny")


@pytest.fixture(scope="module")
def model(blip2):
    torch.manual_seed(0)
    return VideoLlama.from_blip2(blip2).eval()


def _clips(n=2, frames=8, seed=0):
    """``n`` rendered Shapes World clips (normalised as blip2-tiny expects), every object moving, and their captions."""
    norm, rng = zoo.preprocess("blip2-tiny"), np.random.default_rng(seed)
    clips = [sample_clip(rng, num_frames=frames, still=0.0) for _ in range(n)]
    pixels = torch.stack([norm(render_clip(c, 48)) for c in clips])
    return pixels, [describe_clip(c) for c in clips]


def _text(captions, tok):
    """Prompt "<bos> video:" then the caption; labels only on the caption."""
    prompt = tok.encode("video:", add_bos=True, add_eos=False)
    rows = [prompt + tok.encode(c)[:20] for c in captions]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_id)
    mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for r, row in enumerate(rows):
        ids[r, :len(row)], mask[r, :len(row)] = torch.tensor(row), 1
        labels[r, len(prompt):len(row)] = ids[r, len(prompt):len(row)]
    return ids, mask, labels


def test_video_qformer_reads_frame_tokens_plus_temporal_embedding(model):
    frames, _ = _clips()
    assert isinstance(model.video_qformer, QFormer) and model.video_qformer.cfg.cross_attention_freq == 1
    seen = {}
    handle = model.video_qformer.register_forward_pre_hook(lambda m, args: seen.update(image=args[0]))
    try:
        video = model.video_tokens(frames)
    finally:
        handle.remove()
    q = model.cfg.tokens_per_frame
    assert seen["image"].shape == (2, 8 * q, model.cfg.qformer.dim)
    with torch.no_grad():
        for t in range(8):  # frame t's tokens, by hand: the image Q-Former on that frame alone + temporal_emb[t]
            alone = model.qformer(model.vision_tower(frames[:, t]).last_hidden_state)
            torch.testing.assert_close(seen["image"][:, t * q:(t + 1) * q], alone + model.temporal_emb.weight[t],
                                       atol=1e-5, rtol=1e-5)
        by_hand = model.language_projection(model.video_qformer(seen["image"]))
    torch.testing.assert_close(video, by_hand)
    assert video.shape == (2, model.cfg.tokens_per_video, model.cfg.text.dim)


def test_frame_order_matters_only_through_the_temporal_embedding(model):
    frames, _ = _clips()
    assert not torch.equal(frames, frames.flip(1))
    with torch.no_grad():
        forward, backward = model.video_tokens(frames), model.video_tokens(frames.flip(1))
        # reversed clip, different video (weakly at init: near-uniform attention averages the positions away)
        assert (forward - backward).abs().max() > 1e-3
        saved = model.temporal_emb.weight.clone()
        try:  # the control: without temporal positions the video Q-Former reads a set of tokens
            model.temporal_emb.weight.zero_()
            shuffled = frames[:, torch.randperm(8, generator=torch.Generator().manual_seed(3))]
            torch.testing.assert_close(model.video_tokens(shuffled), model.video_tokens(frames), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(model.video_tokens(frames.flip(1)), model.video_tokens(frames),
                                       atol=1e-5, rtol=1e-5)
        finally:
            model.temporal_emb.weight.copy_(saved)


def test_loss_counts_only_labelled_positions_and_equals_hand_cross_entropy(model):
    frames, captions = _clips()
    ids, mask, labels = _text(captions, Tokenizer.load())
    out = model(frames, ids, attention_mask=mask, labels=labels)
    nv = model.cfg.tokens_per_video
    assert out.logits.shape == (2, nv + ids.shape[1], model.cfg.text.vocab_size)
    # by hand: the logit at sequence position nv + i - 1 predicts text token i; only labelled tokens count
    terms = [-F.log_softmax(out.logits[b, nv + i - 1], -1)[labels[b, i]]
             for b in range(2) for i in range(1, ids.shape[1]) if labels[b, i] != -100]
    torch.testing.assert_close(out.loss, torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)
    everything = model(frames, ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
    assert abs(everything.item() - out.loss.item()) > 1e-4  # the prompt is not learned


def test_only_the_video_branch_trains(model):
    frames, captions = _clips()
    ids, mask, labels = _text(captions, Tokenizer.load())
    model.zero_grad()
    model(frames, ids, mask, labels).loss.backward()
    trainable = {id(p) for p in model.trainable_parameters()}
    expected = {id(p) for m in (model.temporal_emb, model.video_qformer, model.language_projection)
                for p in m.parameters()}
    assert trainable == expected
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (id(p) in trainable), name
    assert model.temporal_emb.weight.grad.abs().sum() > 0 and model.language_projection.weight.grad.abs().sum() > 0
    model.zero_grad()
    model.train()
    assert not model.vision_tower.training and not model.qformer.training and model.video_qformer.training
    model.eval()


def test_from_blip2_gives_blip2s_frame_tokens(blip2, model):
    frames, _ = _clips(frames=5)
    with torch.no_grad():
        ours = model.frame_tokens(frames)
        for t in range(5):
            theirs = blip2.qformer(blip2.vision_tower(frames[:, t]).last_hidden_state)
            torch.testing.assert_close(ours[:, t], theirs, atol=1e-6, rtol=1e-6)
    for name in ("vision_tower", "qformer", "language_model", "language_projection"):
        mine, ref = getattr(model, name).state_dict(), getattr(blip2, name).state_dict()
        assert all(torch.equal(mine[k], ref[k]) for k in ref), name
    assert model.cfg.video_qformer == video_qformer_config(blip2.cfg.qformer)


def test_generate_with_cache_equals_without_and_an_argmax_loop(model):
    frames, _ = _clips()
    tok = Tokenizer.load()
    ids = torch.tensor([tok.encode("video:", add_bos=True, add_eos=False)] * 2)
    cached = model.generate(frames, ids, 6, eos_token_id=-1)
    assert torch.equal(cached, model.generate(frames, ids, 6, eos_token_id=-1, use_cache=False))
    seq = ids
    with torch.no_grad():
        for _ in range(6):
            seq = torch.cat([seq, model(frames, seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, seq[:, ids.shape[1]:])


def test_presets():
    tiny, base = VideoLlamaConfig.from_preset("tiny"), VideoLlamaConfig.from_preset("base")
    assert (tiny.tokens_per_frame, tiny.tokens_per_video, tiny.num_frames) == (8, 8, 8)
    assert tiny.video_qformer == video_qformer_config(tiny.qformer)
    assert base.video_qformer == video_qformer_config(base.qformer)
    assert (base.vision.dim, base.qformer.num_queries, base.tokens_per_video, base.text.dim) == (1408, 32, 32, 4096)
    vq = base.video_qformer
    assert (vq.depth, vq.cross_attention_freq, vq.vision_dim, vq.num_queries) == (2, 1, 768, 32)


def test_bad_input(model, blip2):
    frames, _ = _clips(n=1)
    ids = torch.tensor([[2, 10, 11]])
    cases = [
        (frames[0], ids, ValueError, "shape"),                                    # one clip without its batch dim
        (torch.cat([frames, frames[:, :1]], 1), ids, ValueError, "num_frames=8"),  # 9 frames, 8 temporal positions
        (frames[:, :, :1], ids, ValueError, "channels"),
        (frames[..., :40, :40], ids, ValueError, "48x48"),
        ((frames * 255).to(torch.uint8), ids, TypeError, "floating"),
        (frames.tolist(), ids, TypeError, "torch.Tensor"),
        (frames, torch.ones(1, 256 - 8 + 1, dtype=torch.long), ValueError, "context of 256"),
        (frames, torch.ones(2, 3, dtype=torch.long), ValueError, "1 clips but 2 texts"),
        (frames, torch.tensor([[2, 10, 9999]]), ValueError, "outside"),
    ]
    for f, i, error, words in cases:
        with pytest.raises(error, match=words):
            model(f, i)
    with pytest.raises(ValueError, match="shape"):
        model(frames, ids, labels=torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match="exceeds the model's context"):
        model.generate(frames, torch.ones(1, 240, dtype=torch.long), 20)
    with pytest.raises(TypeError, match="Blip2"):
        VideoLlama.from_blip2(model)
    with pytest.raises(ValueError, match="vision_dim"):
        VideoLlamaConfig.from_preset("tiny", video_qformer=dict(VideoLlamaConfig.PRESETS["tiny"]["video_qformer"],
                                                                vision_dim=32))
    with pytest.raises(ValueError, match="text_input"):
        VideoLlama.from_blip2(blip2, video_qformer=dict(text_input=True))
