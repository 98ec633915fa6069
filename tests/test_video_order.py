"""Frame order from shuffled frames: the shared machinery (vlm_primer.video.order), MERLOT and the VideoOFA-style
video captioner. Explained in notebook 08, §Frame order: MERLOT and VideoOFA."""

import numpy as np
import pytest
import torch

from vlm_primer.contrastive.losses import ClipLoss, clip_loss
from vlm_primer.generative import Blip
from vlm_primer.masking.masks import IGNORE_INDEX
from vlm_primer.video.merlot import Merlot, MerlotConfig, train_merlot
from vlm_primer.video.order import (FramePositionHead, OrderPairs, gather_frames, order_accuracy, order_loss,
                                    pairwise_order_targets, position_targets, shuffle_frames)
from vlm_primer.video.videoofa import VideoCaptioner, VideoCaptionerConfig

IGN = IGNORE_INDEX


def _merlot(**kw) -> Merlot:
    return Merlot(MerlotConfig.from_preset("tiny", **kw)).eval()


def _ids(b: int, n: int = 8) -> torch.Tensor:
    ids = torch.randint(10, 800, (b, n))
    ids[:, 0], ids[:, -1] = 2, 3   # <bos> ... <eos>
    return ids


# --------------------------------------------------------------------------- (a) shuffling and targets by hand


def test_pairwise_targets_of_a_fixed_permutation():
    # clip 0: slots 1-4 shuffled, frames (2, 4, 3, 1) sit there; clip 1: slots 0 and 1 swapped
    perm = torch.tensor([[0, 2, 4, 3, 1, 5], [1, 0, 2, 3, 4, 5]])
    shuffled = torch.tensor([[0, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]]).bool()
    pairs = pairwise_order_targets(perm, shuffled)
    got = list(zip(pairs.batch.tolist(), pairs.first.tolist(), pairs.second.tolist(), pairs.labels.tolist()))
    assert got == [(0, 1, 2, 1), (0, 1, 3, 1), (0, 1, 4, 0), (0, 2, 3, 0), (0, 2, 4, 0), (0, 3, 4, 0), (1, 0, 1, 0)]
    assert position_targets(perm, shuffled).tolist() == [[IGN, 2, 4, 3, 1, IGN], [1, 0, IGN, IGN, IGN, IGN]]
    x = torch.arange(12.0).reshape(2, 6)
    assert gather_frames(x, perm).tolist() == [[0, 2, 4, 3, 1, 5], [7, 6, 8, 9, 10, 11]]


def test_shuffle_frames_moves_only_the_picked_slots():
    g = torch.Generator().manual_seed(0)
    perm, shuffled = shuffle_frames(64, 6, 0.5, g)
    assert (shuffled.sum(1) == 3).all()
    assert (perm.sort(1).values == torch.arange(6)).all()                     # each row a permutation
    assert (perm[~shuffled] == torch.arange(6).expand(64, 6)[~shuffled]).all()  # the others stay put
    assert (perm != torch.arange(6)).any()
    again = shuffle_frames(64, 6, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(again.perm, perm) and torch.equal(again.shuffled, shuffled)
    with pytest.raises(ValueError, match="fraction"):
        shuffle_frames(2, 4, 1.5)


def test_order_accuracy_reports_the_chance_level_and_the_loss_handles_no_pairs():
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    acc = order_accuracy(logits, torch.tensor([1, 1, 1, 0]))
    assert (acc.accuracy, acc.chance, acc.count) == (0.5, 0.75, 4)
    position = order_accuracy(torch.eye(3)[None], torch.tensor([[0, 1, IGN]]))
    assert (position.accuracy, position.chance, position.count) == (1.0, 0.5, 2)
    empty = torch.zeros(0, 2, requires_grad=True)
    loss = order_loss(empty, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0 and loss.requires_grad


# --------------------------------------------------------------------------- (b, c) MERLOT's losses


def test_merlot_contrastive_loss_is_clips_loss_and_all_losses_run():
    model = _merlot()
    frames, ids, local = torch.rand(3, 4, 3, 32, 32), _ids(3), torch.randint(10, 800, (3, 4, 5))
    masked, labels = model.mask_text(ids, generator=torch.Generator().manual_seed(0))
    labels[:, 1] = ids[:, 1]   # at least one masked word
    out = model(frames, masked, local_ids=local, mlm_labels=labels, generator=torch.Generator().manual_seed(0))
    logits = out.logit_scale * out.frame_embeds @ out.text_embeds.t()
    assert torch.allclose(out.contrastive_loss, clip_loss(logits), atol=1e-6)
    assert torch.allclose(out.contrastive_loss, ClipLoss()(out.frame_embeds, out.text_embeds, out.logit_scale))
    assert out.frame_embeds.shape == (12, 64)
    total = out.contrastive_loss + out.mlm_loss + out.order_loss
    assert torch.allclose(out.loss, total)
    out.loss.backward()
    assert model.frame_encoder.patch_embed.weight.grad.abs().sum() > 0
    # the contrastive pairs are frame t with text t whether or not the frames were shuffled for the order loss
    plain = model(frames, masked, local_ids=local, shuffle=False)
    assert torch.allclose(plain.contrastive_loss, out.contrastive_loss)


def test_no_shuffle_and_fraction_zero_leave_the_order_alone():
    frames, ids = torch.rand(2, 4, 3, 32, 32), _ids(2)
    out = _merlot()(frames, ids, shuffle=False)
    assert out.order_loss is None and out.loss is None
    assert out.order_logits.shape == (0, 2) and out.order_labels.numel() == 0
    assert torch.equal(out.shuffle.perm, torch.arange(4).expand(2, 4)) and not out.shuffle.shuffled.any()
    still = _merlot(shuffle_fraction=0.0)(frames, ids, generator=torch.Generator().manual_seed(0))
    assert torch.equal(still.shuffle.perm, torch.arange(4).expand(2, 4)) and not still.shuffle.shuffled.any()
    assert still.order_loss.item() == 0.0 and still.order_labels.numel() == 0


# --------------------------------------------------------------------------- (d) what the order head can see


def test_time_embeddings_break_permutation_equivariance_and_unknown_times_hide_the_order():
    torch.manual_seed(0)
    model = _merlot()
    with torch.no_grad():
        model.time_emb.weight.normal_()   # make the time embeddings clearly different from each other
    vectors, ids = torch.randn(2, 5, 64), _ids(2)
    perm = torch.tensor([[3, 0, 4, 1, 2], [1, 2, 0, 4, 3]])
    unknown = torch.tensor([[True, True, False, True, False], [False, False, False, False, False]])
    # every slot its own row: times 0..T-1, and the paper's [image_unk_t] (rows max_frames + t) where unknown
    assert model.time_ids(unknown).tolist() == [[8, 9, 2, 11, 4], [0, 1, 2, 3, 4]]
    with torch.no_grad():
        timed, _ = model.joint_states(vectors, ids, None)
        timed_moved, _ = model.joint_states(gather_frames(vectors, perm), ids, None)
        # with time embeddings the states of moved frames change: the order head's input sees the slots
        assert not torch.allclose(timed_moved, gather_frames(timed, perm), atol=1e-3)
        # unknown times replace the times (the shuffled states differ from the timed ones) ...
        hidden, _ = model.joint_states(vectors, ids, None, torch.ones(2, 5, dtype=torch.bool))
        assert not torch.allclose(hidden, timed, atol=1e-3)
        # ... and stay apart: two copies of one frame in two unknown slots get two states
        twins, _ = model.joint_states(vectors[:, :1].expand(2, 5, 64), ids, None, torch.ones(2, 5, dtype=torch.bool))
        assert not torch.allclose(twins[:, 0], twins[:, 1], atol=1e-3)


def test_unknown_time_rows_say_nothing_of_a_frames_time():
    """What the order head could read from a slot's row: over 40,000 shuffles of 4 frames, every frame (original
    time) lands on every unknown row equally often, so the row a frame gets carries no information about its time."""
    model = _merlot(shuffle_fraction=1.0, max_frames=4)
    sh = shuffle_frames(40_000, 4, 1.0, torch.Generator().manual_seed(0))
    rows = model.time_ids(sh.shuffled)
    counts = torch.zeros(4, 8)
    counts.index_put_((sh.perm.flatten(), rows.flatten()), torch.ones(sh.perm.numel()), accumulate=True)
    assert counts[:, :4].sum() == 0                              # every frame shuffled: no time row is used
    share = counts[:, 4:] / counts[:, 4:].sum(1, keepdim=True)  # P(row | original time)
    assert (share - 0.25).abs().max() < 0.01, share             # binomial sd at 10,000 draws: 0.004


def test_identical_frames_give_pair_logits_that_do_not_depend_on_the_shuffle():
    """Five copies of one frame, all shuffled: the pair logits depend only on the slots (each slot has its own
    unknown row), so two different shuffles give the same logits but different labels: no label can be read."""
    model = _merlot(shuffle_fraction=1.0, max_frames=5)
    frames, ids = torch.rand(1, 1, 3, 32, 32).expand(1, 5, 3, 32, 32), _ids(1)
    with torch.no_grad():
        a = model(frames, ids, generator=torch.Generator().manual_seed(0))
        b = model(frames, ids, generator=torch.Generator().manual_seed(1))
    assert a.order_logits.shape == (10, 2)
    assert torch.allclose(a.order_logits, b.order_logits, atol=1e-5)
    assert not torch.equal(a.order_labels, b.order_labels)


# --------------------------------------------------------------------------- (e) a short fit on moving shapes


def test_merlot_learns_frame_order_of_moving_shapes():
    """MERLOT's reordering objective on rendered Shapes World clips (one moving object, 4 frames at 32 px, every frame
    shuffled), 300 steps. Shapes World's physics is time-symmetric: a clip played backwards is a valid clip with the
    same frames, so no model can order frames above chance without something that breaks the symmetry (real videos
    have an arrow of time). The world gets one: each clip is played in the direction in which its object first
    moves right or down (``Clip.reversed()`` otherwise). Ordering by the object's x + y gets 0.90 of these pairs right
    (bounces off walls reverse it); the model reaches about 0.86 after 300 steps (0.83-0.89 over twelve seeds; after
    200 steps 0.70-0.87, the unknown-time rows being still there to learn to ignore)."""
    from vlm_primer.text import Tokenizer
    from vlm_primer.world.scene import WorldConfig
    from vlm_primer.world.video import clip_events, describe_clip, render_clip, sample_clip

    def arrow(clip):
        first = next(e.detail for e in clip_events(clip) if e.kind == "move")
        return clip.reversed() if first in ("left", "up") else clip

    tok = Tokenizer.load()

    def data(seed, n):
        rng = np.random.default_rng(seed)
        clips = [arrow(sample_clip(rng, WorldConfig(max_objects=1), num_frames=4, num_objects=1, still=0.0,
                                   speed=(0.06, 0.1))) for _ in range(n)]
        text = tok([describe_clip(c) for c in clips], max_length=32)
        return torch.stack([render_clip(c, 32) for c in clips]), text["input_ids"], text["attention_mask"]

    (frames, ids, mask), (test_frames, test_ids, test_mask) = data(0, 512), data(1, 256)
    mean, std = frames.mean(), frames.std()   # standardised pixels, as image encoders are fed
    torch.manual_seed(0)
    model = train_merlot(Merlot(MerlotConfig.from_preset("tiny", max_frames=4, shuffle_fraction=1.0)),
                         (frames - mean) / std, ids, mask, steps=300, batch=32, seed=0)
    with torch.no_grad():
        out = model((test_frames - mean) / std, test_ids, test_mask, generator=torch.Generator().manual_seed(1))
    acc = order_accuracy(out.order_logits, out.order_labels)
    print(f"held-out pairwise order accuracy {acc.accuracy:.3f} (chance {acc.chance:.3f}, {acc.count} pairs)")
    assert acc.count == 256 * 6
    assert acc.chance < 0.55
    assert acc.accuracy > 0.7, acc


# --------------------------------------------------------------------------- (f) VideoOFA: a wrapped captioner


def _captioner():
    cfg = VideoCaptionerConfig.from_preset("tiny", max_frames=4)
    blip = Blip(cfg.captioner).eval()
    return VideoCaptioner(cfg, captioner=blip).eval(), blip


def test_video_captioner_wraps_the_captioner_without_copies():
    model, blip = _captioner()
    assert model.captioner is blip
    ours = {id(p) for p in model.parameters()}
    assert all(id(p) in ours for p in blip.parameters())
    assert model.captioner.vision.patch_embed.weight is blip.vision.patch_embed.weight
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in blip.parameters())
    assert extra == sum(p.numel() for p in (*model.order_head.parameters(), model.time_emb))
    with pytest.raises(TypeError, match="Blip"):
        VideoCaptioner(captioner=torch.nn.Linear(2, 2))


def test_one_frame_video_is_the_image_captioner():
    model, blip = _captioner()
    images, ids = torch.rand(3, 3, 32, 32), _ids(3)
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0
    with torch.no_grad():
        video = model(images[:, None], ids, mask, shuffle=False, generator=torch.Generator().manual_seed(0))
        image = blip(images, ids, mask, generator=torch.Generator().manual_seed(0))
    assert torch.equal(video.caption_loss, image["lm"])
    assert torch.equal(model.generate(images[:, None], max_new_tokens=6), blip.generate(images, max_new_tokens=6))
    with torch.no_grad():
        model.time_emb.normal_()
        moved = model(images[:, None], ids, mask, shuffle=False)
    assert not torch.allclose(moved.caption_loss, image["lm"])


def test_frame_order_targets_and_inputs():
    model, _ = _captioner()
    frames, ids = torch.rand(2, 4, 3, 32, 32), _ids(2)
    with torch.no_grad():
        out = model(frames, ids, generator=torch.Generator().manual_seed(3))
        expected = shuffle_frames(2, 4, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(out.perm, expected.perm)
    assert torch.equal(out.order_labels, out.perm)   # every frame shuffled: every slot's target is its frame
    assert out.order_logits.shape == (2, 4, 4) and out.match_logits.shape == (4, 2)
    # the head read the frames as if they had been shuffled before encoding, each with its new slot's time
    with torch.no_grad():
        model.time_emb.normal_()
        out = model(frames, ids, generator=torch.Generator().manual_seed(3))
        moved = model.frame_tokens(gather_frames(frames, out.perm))[:, :, 0] + model.time_emb[:4]
        assert torch.allclose(out.order_logits, model.order_head(moved), atol=1e-5)
    half = VideoCaptioner(VideoCaptionerConfig.from_preset("tiny", max_frames=4, shuffle_fraction=0.5)).eval()
    with torch.no_grad():
        out = half(frames, ids, generator=torch.Generator().manual_seed(3))
    assert ((out.order_labels != IGN).sum(1) == 2).all()
    assert torch.equal(out.order_labels, position_targets(out.perm, out.order_labels != IGN))
    assert isinstance(FramePositionHead(8, 4)(torch.randn(1, 3, 8)), torch.Tensor)


def test_video_captioner_without_itm_head_gets_a_small_one():
    cfg = VideoCaptionerConfig.from_preset("tiny", max_frames=4)
    model = VideoCaptioner(cfg, captioner=Blip(cfg.captioner.replace(heads=False)))
    assert model.match_head is not None
    out = model(torch.rand(2, 3, 3, 32, 32), _ids(2), shuffle=False)
    assert out.match_logits.shape == (4, 2) and out.order_loss is None
    out.loss.backward()
    assert model.match_head.weight.grad is not None


# --------------------------------------------------------------------------- (g) bad input


@pytest.mark.parametrize("which", ["merlot", "videoofa"])
def test_bad_input_is_named(which):
    model = _merlot(max_frames=4) if which == "merlot" else _captioner()[0]
    ids = _ids(2)
    with pytest.raises(ValueError, match=r"frames must have shape \(B, T, 3, H, W\)"):
        model(torch.rand(2, 3, 32, 32), ids)
    with pytest.raises(ValueError, match="5 frames per clip.*max_frames=4"):
        model(torch.rand(2, 5, 3, 32, 32), ids)
    with pytest.raises(ValueError, match="mismatched batch sizes|2 images but 3 captions"):
        model(torch.rand(2, 4, 3, 32, 32), _ids(3))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.randint(0, 255, (2, 4, 3, 32, 32), dtype=torch.uint8), ids)
    with pytest.raises(TypeError, match="torch.Tensor"):
        model(np.zeros((2, 4, 3, 32, 32), dtype=np.float32), ids)
    with pytest.raises(ValueError, match="32x32 pixels"):
        model(torch.rand(2, 4, 3, 16, 16), ids)
    with pytest.raises(TypeError, match="integer"):
        model(torch.rand(2, 4, 3, 32, 32), ids.float())


def test_bad_local_texts_are_named():
    model = _merlot(max_frames=4)
    with pytest.raises(ValueError, match=r"local_ids must have shape \(B, T, Lt\) = \(2, 4, Lt\)"):
        model(torch.rand(2, 4, 3, 32, 32), _ids(2), local_ids=torch.randint(5, 10, (2, 3, 5)))
    with pytest.raises(ValueError, match="mlm_labels"):
        model(torch.rand(2, 4, 3, 32, 32), _ids(2), mlm_labels=torch.zeros(2, 3, dtype=torch.long))
    assert isinstance(OrderPairs(*[torch.zeros(0)] * 4), tuple)
