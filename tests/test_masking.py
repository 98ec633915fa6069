"""The masking utilities: BERT's 80/10/10 corruption (frequencies, special tokens never picked), MAE's shuffle (the
kept count, the restore order), block and span masks, and clear errors on bad input; MAE's model pieces."""

from __future__ import annotations

import pytest
import torch

from vlm_primer.masking import (IGNORE_INDEX, MAE, MAEConfig, bert_mask_tokens, block_mask, mask_to_noise, patchify,
                                random_masking, span_mask, unpatchify)

VOCAB, MASK = 814, 4


def _ids(b=400, n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, VOCAB, (b, n), generator=g)
    ids[:, 0], ids[:, -1], ids[:, -4:-1] = 2, 3, 0  # <bos> first, <eos> last, three <pad> (specials, never picked)
    return ids


def test_bert_corruption_is_15_percent_then_80_10_10_and_never_touches_specials():
    ids = _ids()
    corrupted, labels = bert_mask_tokens(ids, mask_token_id=MASK, vocab_size=VOCAB,
                                         generator=torch.Generator().manual_seed(0))
    special = torch.isin(ids, torch.tensor([0, 1, 2, 3]))
    picked = labels != IGNORE_INDEX
    assert not (picked & special).any() and torch.equal(corrupted[special], ids[special])
    assert abs(picked.sum() / (~special).sum() - 0.15) < 0.01
    assert torch.equal(labels[picked], ids[picked]) and torch.equal(corrupted[~picked], ids[~picked])
    n = picked.sum().item()
    as_mask = (corrupted[picked] == MASK).sum().item() / n
    kept = (corrupted[picked] == ids[picked]).sum().item() / n
    replaced = 1 - as_mask - kept
    assert abs(as_mask - 0.8) < 0.03 and abs(kept - 0.1) < 0.02 and abs(replaced - 0.1) < 0.02
    # a random replacement is an ordinary token, never a special one or <mask>
    rnd = picked & (corrupted != MASK) & (corrupted != ids)
    assert not torch.isin(corrupted[rnd], torch.tensor([0, 1, 2, 3, MASK])).any()


def test_bert_corruption_candidates_restrict_and_generator_reproduces():
    ids = _ids(50)
    only = torch.zeros_like(ids, dtype=torch.bool)
    only[:, 5] = True
    _, labels = bert_mask_tokens(ids, mask_token_id=MASK, vocab_size=VOCAB, prob=1.0, candidates=only)
    assert torch.equal(labels != IGNORE_INDEX, only)
    a = bert_mask_tokens(ids, mask_token_id=MASK, vocab_size=VOCAB, generator=torch.Generator().manual_seed(3))
    b = bert_mask_tokens(ids, mask_token_id=MASK, vocab_size=VOCAB, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("kwargs, match", [
    (dict(prob=1.5), "prob"), (dict(mask_frac=0.9, random_frac=0.2), "mask_frac \\+ random_frac"),
    (dict(mask_token_id=9999), "mask_token_id"), (dict(candidates=torch.ones(2, 2, dtype=torch.bool)), "candidates"),
])
def test_bert_corruption_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bert_mask_tokens(_ids(4), **{"mask_token_id": MASK, "vocab_size": VOCAB, **kwargs})
    with pytest.raises(ValueError, match="outside"):
        bert_mask_tokens(torch.tensor([[2, 5000]]), mask_token_id=MASK, vocab_size=VOCAB)


def test_random_masking_keeps_int_n_times_one_minus_ratio_and_restores_order():
    x = torch.arange(2 * 10, dtype=torch.float).view(2, 10, 1).expand(2, 10, 3).contiguous()
    out = random_masking(x, 0.75, generator=torch.Generator().manual_seed(0))
    assert out.kept.shape == (2, 2, 3) and torch.equal(out.mask.sum(1), torch.tensor([8.0, 8.0]))
    # the kept tokens are the unmasked ones, in shuffle order; ids_restore undoes the shuffle
    for b in range(2):
        assert torch.equal(out.kept[b, :, 0], x[b, out.ids_keep[b], 0])
        assert set(out.ids_keep[b].tolist()) == set((out.mask[b] == 0).nonzero().flatten().tolist())
    shuffled = torch.cat([out.kept, torch.full((2, 8, 3), -1.0)], dim=1)
    restored = torch.gather(shuffled, 1, out.ids_restore[..., None].expand(-1, -1, 3))
    assert torch.equal(restored[..., 0] >= 0, out.mask == 0)
    assert torch.equal(restored[out.mask == 0], x[out.mask == 0])


def test_block_mask_hides_exactly_the_target_and_mask_to_noise_reproduces_it():
    mask = block_mask(4, 8, 0.4, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (4, 64) and torch.equal(mask.sum(1), torch.full((4,), 64 - int(64 * 0.6)))
    noise = mask_to_noise(mask, generator=torch.Generator().manual_seed(1))
    out = random_masking(torch.randn(4, 64, 2), 0.4, noise=noise)
    assert torch.equal(out.mask.bool(), mask)
    with pytest.raises(ValueError, match="same number"):
        mask_to_noise(torch.tensor([[True, False], [True, True]]))


def test_span_mask_hides_contiguous_spans_inside_each_length():
    m = span_mask([10, 6, 0], 12, 0.3, span=3, generator=torch.Generator().manual_seed(0))
    assert m.shape == (3, 12)
    assert m[0].sum() == 3 and m[1].sum() == 2 and m[2].sum() == 0
    assert not m[0, 10:].any() and not m[1, 6:].any()
    with pytest.raises(ValueError, match="lengths"):
        span_mask([13], 12, 0.3)


def test_patchify_round_trip_and_order():
    img = torch.randn(2, 3, 12, 12)
    p = patchify(img, 4)
    assert p.shape == (2, 9, 48)
    assert torch.equal(p[0, 1, :3], img[0, :, 0, 4])  # patch 1 = row 0, column 1; (p, q, c) order
    assert torch.equal(unpatchify(p, 4), img)
    with pytest.raises(ValueError, match="multiples"):
        patchify(torch.randn(1, 3, 10, 12), 4)


def test_mae_loss_is_on_hidden_patches_only_and_bad_input_is_named():
    torch.manual_seed(0)
    model = MAE(MAEConfig.from_preset("tiny")).eval()
    img = torch.randn(2, 3, 48, 48)
    out = model(img, generator=torch.Generator().manual_seed(0))
    assert out.mask.sum(1).tolist() == [48.0, 48.0] and out.latent.shape == (2, 17, 64)
    per_patch = (out.logits - out.target).pow(2).mean(-1)
    torch.testing.assert_close(out.loss, per_patch[out.mask.bool()].mean())
    assert model.features(img).shape == (2, 64) and model.reconstruct(img, out).shape == img.shape
    with pytest.raises(ValueError, match="pixel_values"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="mask ratio"):
        model(img, mask_ratio=1.0)
    with pytest.raises(ValueError, match="noise"):
        model(img, noise=torch.rand(2, 5))
    with pytest.raises(ValueError, match="sincos"):
        MAEConfig.from_preset("tiny", encoder=dict(MAEConfig.PRESETS["tiny"]["encoder"], pos_emb="learned"))
    with pytest.raises(ValueError, match="mask_ratio=0 hides no patch"):  # the loss would be 0 / 0
        MAEConfig.from_preset("tiny", mask_ratio=0.0)
    with pytest.raises(ValueError, match="MAE rebuilds every pixel from patches: image_size=50 must be"):
        MAEConfig.from_preset("tiny", encoder=dict(MAEConfig.PRESETS["tiny"]["encoder"], image_size=50))


def test_mae_learns_to_reconstruct():
    torch.manual_seed(0)
    model = MAE(MAEConfig.from_preset("tiny", norm_pix_loss=False))
    img = torch.randn(4, 3, 1, 1).expand(4, 3, 48, 48)  # one colour per image: the visible patches tell the rest
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        loss = model(img, generator=torch.Generator().manual_seed(step)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_patch_codebook_encodes_to_the_nearest_code_and_paints_it_back():
    from vlm_primer.masking.codebook import PatchCodebook

    g = torch.Generator().manual_seed(0)
    colours = torch.rand(4, 3, generator=g)
    # images made of 4x4 patches, each one of four flat colours: k-means with k=4 finds them exactly
    ids = torch.randint(4, (6, 9), generator=g)
    images = colours[ids].view(6, 3, 3, 3).permute(0, 3, 1, 2).repeat_interleave(4, 2).repeat_interleave(4, 3)
    book = PatchCodebook.fit(images, 4, 4, seed=0)
    assert torch.allclose(book.decode(book.encode(images)), images, atol=1e-6)
    coarse = PatchCodebook.fit(images, 2, 4, seed=0)
    assert (coarse.decode(coarse.encode(images)) - images).pow(2).mean() > 1e-3  # fewer codes, more distortion
    with pytest.raises(ValueError, match="k >= 2"):
        PatchCodebook.fit(images, 1, 4)
    with pytest.raises(ValueError, match="channels"):
        book.encode(images[:, :1])


def test_region_features_pool_the_patches_inside_each_box():
    from vlm_primer.masking import region_features

    tokens = torch.arange(2 * 16 * 2, dtype=torch.float).view(2, 16, 2)  # 4 x 4 grid of 4 px patches
    boxes = [torch.tensor([[0.0, 0.0, 7.0, 7.0]]), torch.tensor([[8.0, 8.0, 15.0, 15.0], [5.0, 5.0, 5.5, 5.5]])]
    feats, mask = region_features(tokens, boxes, 4, whole=torch.ones(2, 2) * -1)
    assert feats.shape == (2, 3, 2) and mask.tolist() == [[1, 0, 1], [1, 1, 1]]
    assert torch.equal(feats[0, 0], tokens[0, [0, 1, 4, 5]].mean(0))       # the top-left 2 x 2 patches
    assert torch.equal(feats[1, 0], tokens[1, [10, 11, 14, 15]].mean(0))
    assert torch.equal(feats[1, 1], tokens[1, 5])                          # no centre inside: the nearest patch
    assert torch.equal(feats[:, 2], -torch.ones(2, 2)) and torch.equal(feats[0, 1], torch.zeros(2))
    with pytest.raises(ValueError, match="max_regions"):
        region_features(tokens, boxes, 4, max_regions=1)


def test_bert_random_replacements_are_uniform_over_the_ordinary_ids():
    """The r-th ordinary id, found without a value read (searchsorted on the sorted special ids), is what indexing
    the list of ordinary ids gives: for random vocabularies and special sets, the same draws."""
    import random

    rng = random.Random(0)
    for trial in range(100):
        vocab = rng.randint(8, 60)
        special = rng.sample(range(vocab), rng.randint(0, vocab - 3))
        mask_id = rng.choice([i for i in range(vocab) if i not in special])
        ids = torch.randint(0, vocab, (3, 9), generator=torch.Generator().manual_seed(trial))
        got, labels = bert_mask_tokens(ids, mask_token_id=mask_id, vocab_size=vocab, prob=1.0, special_ids=special,
                                       mask_frac=0.0, random_frac=1.0, generator=torch.Generator().manual_seed(trial))
        g = torch.Generator().manual_seed(trial)
        torch.rand(ids.shape, generator=g), torch.rand(ids.shape, generator=g)  # the picks and the 80/10/10 draws
        pool = torch.tensor([i for i in range(vocab) if i not in set(special) | {mask_id}])
        want = pool[torch.randint(len(pool), ids.shape, generator=g)]
        picked = labels != IGNORE_INDEX
        assert torch.equal(got[picked], want[picked]) and torch.equal(got[~picked], ids[~picked]), trial
