"""VideoBERT: the k-means visual vocabulary against a hand-computed nearest centroid; the model weight for weight
against ``transformers``' ``BertForPreTraining`` over the joint vocabulary (every parameter perturbed); the masked
losses against cross-entropy by hand; a short fit on Shapes World clips; bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlm_primer.masking.codebook import kmeans
from vlm_primer.text import Tokenizer
from vlm_primer.video.videobert import VideoBert, VideoBertConfig, VisualVocabulary
from vlm_primer.world.video import describe_clip, render_clip, sample_clip

V, K = 50, 12  # words, visual words
TOL = dict(atol=1e-5, rtol=1e-5)
SMALL = dict(vocab_size=V, visual_vocab_size=K, dim=32, depth=2, heads=4, mlp_dim=64, max_positions=40,
             cls_token_id=2, sep_token_id=3, mask_token_id=4, pad_token_id=0, boundary_token_id=5,
             special_token_ids=tuple(range(10)))


def _inputs(batch=3, length=7, frames=5):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, V, (batch, length), generator=g)
    vis = torch.randint(0, K, (batch, frames), generator=g)
    vis[0, 2] = K  # a visual [MASK]
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 4:] = 0
    vmask = torch.ones(batch, frames, dtype=torch.long)
    vmask[2, 3:] = 0
    return ids, vis, mask, vmask


# --------------------------------------------------------------------------- the visual vocabulary

def test_visual_vocabulary_is_kmeans_and_encodes_to_the_nearest_centroid():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(4, 9, 6, generator=g)  # (clips, frames, D)
    vocab = VisualVocabulary.fit(feats, k=5, iters=10, seed=3)
    torch.testing.assert_close(vocab.centroids, kmeans(feats.reshape(-1, 6), 5, 10, 3))  # the one k-means
    assert vocab.k == 5
    ids = vocab.encode(feats)
    want = torch.cdist(feats.reshape(-1, 6), vocab.centroids).argmin(1).reshape(4, 9)
    assert ids.shape == (4, 9) and torch.equal(ids, want)
    torch.testing.assert_close(vocab.decode(ids), vocab.centroids[want])
    # every feature is at least as close to its own centroid as to any other
    d = torch.cdist(feats.reshape(-1, 6), vocab.centroids)
    assert bool((d.gather(1, ids.reshape(-1, 1)) <= d + 1e-6).all())


# --------------------------------------------------------------------------- parity with transformers' BERT

def _perturbed_bert(seed=0, scale=0.1):
    from transformers import BertConfig, BertForPreTraining

    config = BertConfig(vocab_size=V + K + 1, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-12,
                        attn_implementation="eager")
    torch.manual_seed(seed)
    hf = BertForPreTraining(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * scale)
    return hf


def _ours_from(hf) -> VideoBert:
    pairs = {"word_emb.weight": "bert.embeddings.word_embeddings.weight",
             "pos_emb.weight": "bert.embeddings.position_embeddings.weight",
             "type_emb.weight": "bert.embeddings.token_type_embeddings.weight",
             "lm_head.bias": "cls.predictions.bias"}
    wb = {"ln_embed": "bert.embeddings.LayerNorm", "align_head.pooler.dense": "bert.pooler.dense",
          "lm_head.dense": "cls.predictions.transform.dense", "lm_head.ln": "cls.predictions.transform.LayerNorm"}
    names = {"attn.q": "attention.self.query", "attn.k": "attention.self.key", "attn.v": "attention.self.value",
             "attn.out": "attention.output.dense", "ln1": "attention.output.LayerNorm", "mlp.fc1": "intermediate.dense",
             "mlp.fc2": "output.dense", "ln2": "output.LayerNorm"}
    wb |= {f"encoder.blocks.{i}.{o}": f"bert.encoder.layer.{i}.{t}" for i in range(2) for o, t in names.items()}
    pairs |= {f"{o}.{s}": f"{t}.{s}" for o, t in wb.items() for s in ("weight", "bias")}
    theirs = hf.state_dict()
    sd = {o: theirs[t] for o, t in pairs.items()}
    sd["lm_head.word_emb.weight"] = sd["word_emb.weight"]
    assert torch.equal(theirs["cls.predictions.decoder.weight"], sd["word_emb.weight"])  # tied in both
    for s in ("weight", "bias"):  # their class 0 = IsNext, ours 1 = the text goes with the video
        sd[f"align_head.classifier.{s}"] = theirs[f"cls.seq_relationship.{s}"].flip(0)
    ours = VideoBert(VideoBertConfig(**SMALL)).eval()
    ours.load_state_dict(sd, strict=True)
    return ours


@torch.no_grad()
def test_videobert_matches_bert_for_pretraining_over_the_joint_vocabulary():
    hf = _perturbed_bert()
    ours = _ours_from(hf)
    ids, vis, mask, vmask = _inputs()
    b, n, t = *ids.shape, vis.shape[1]
    # [CLS] words [>] visual words (after the text vocabulary) [SEP], written out by hand
    col = lambda i: torch.full((b, 1), i)  # noqa: E731
    joint = torch.cat([col(2), ids, col(5), vis + V, col(3)], 1)
    types = torch.cat([torch.zeros(b, n + 2), torch.ones(b, t + 1)], 1).long()
    joint_mask = torch.cat([col(1), mask, col(1), vmask, col(1)], 1)
    want = hf(input_ids=joint, token_type_ids=types, attention_mask=joint_mask)
    text_labels = torch.full((b, n), -100)
    text_labels[:, 1:3] = ids[:, 1:3]
    visual_labels = torch.full((b, t), -100)
    visual_labels[:, 2] = torch.tensor([7, 1, 11])
    align = torch.tensor([1, 0, 1])
    got = ours(ids, vis, mask, vmask, text_labels=text_labels, visual_labels=visual_labels, align_labels=align)

    hidden = hf.bert(input_ids=joint, token_type_ids=types, attention_mask=joint_mask).last_hidden_state
    torch.testing.assert_close(got.hidden, hidden, **TOL)
    text_logits = want.prediction_logits[:, 1:1 + n, :V]
    visual_logits = want.prediction_logits[:, n + 2:n + 2 + t, V:V + K]
    torch.testing.assert_close(got.text_logits, text_logits, **TOL)
    torch.testing.assert_close(got.visual_logits, visual_logits, **TOL)
    torch.testing.assert_close(got.align_logits, want.seq_relationship_logits.flip(-1), **TOL)
    text_loss = F.cross_entropy(text_logits[:, 1:3].flatten(0, 1), ids[:, 1:3].flatten())
    visual_loss = F.cross_entropy(visual_logits[:, 2], visual_labels[:, 2])
    align_loss = F.cross_entropy(want.seq_relationship_logits, 1 - align)  # theirs: 0 = goes together
    torch.testing.assert_close(got.loss, text_loss + visual_loss + align_loss, **TOL)
    torch.testing.assert_close(ours.joint_inputs(ids, vis, mask.bool(), vmask.bool())[0], joint)
    # the comparison can fail: one visual word's embedding nudged moves the video positions
    ours.word_emb.weight[V + int(vis[1, 0])] += 0.5
    assert (ours(ids, vis, mask, vmask).visual_logits - visual_logits).abs().max() > 1e-3


# --------------------------------------------------------------------------- masking and the masked losses

def test_masked_losses_count_only_masked_positions():
    torch.manual_seed(0)
    model = VideoBert(VideoBertConfig(**SMALL)).eval()
    ids, vis, mask, vmask = _inputs(batch=6, length=9, frames=8)
    vis[0, 2] = 1
    batch = model.mask_inputs(ids, vis, mask, vmask, prob=0.5, generator=torch.Generator().manual_seed(0))
    tl, vl = batch["text_labels"], batch["visual_labels"]
    assert (tl != -100).any() and (vl != -100).any()
    # labels are the originals where picked, -100 elsewhere; never on padding; only picked tokens change
    assert torch.equal(tl[tl != -100], ids[tl != -100]) and torch.equal(vl[vl != -100], vis[vl != -100])
    assert not (tl != -100)[mask == 0].any() and not (vl != -100)[vmask == 0].any()
    assert torch.equal(batch["input_ids"][tl == -100], ids[tl == -100])
    assert torch.equal(batch["visual_ids"][vl == -100], vis[vl == -100])
    assert (batch["visual_ids"] == K).any()  # the visual [MASK]
    with torch.no_grad():
        out = model(**batch, attention_mask=mask, visual_mask=vmask)
    for logits, labels, loss in ((out.text_logits, tl, out.text_loss), (out.visual_logits, vl, out.visual_loss)):
        picked = labels != -100
        by_hand = -logits[picked].log_softmax(-1).gather(1, labels[picked][:, None]).mean()
        torch.testing.assert_close(loss, by_hand)
    torch.testing.assert_close(out.loss, out.text_loss + out.visual_loss)
    assert out.align_loss is None
    # nothing labelled: a zero loss, not NaN
    nothing = model(ids, vis, text_labels=torch.full_like(ids, -100))
    assert nothing.text_loss.item() == 0.0 and nothing.visual_loss is None


# --------------------------------------------------------------------------- a short fit on Shapes World clips

N_CLIPS, STEPS = 8, 80


def test_fit_on_shapes_world_clips_lowers_the_loss():
    tok = Tokenizer.load()
    assert VideoBertConfig.from_preset("tiny").vocab_size == tok.vocab_size
    clips = [sample_clip(i, num_frames=6) for i in range(N_CLIPS)]
    frames = torch.stack([render_clip(c, 32) for c in clips])  # (N_CLIPS, 6, 3, 32, 32)
    # a frozen "visual encoder": 8x8 average-pooled pixels per frame, then 16 visual words
    feats = F.avg_pool2d(frames.flatten(0, 1), 4).flatten(1).reshape(N_CLIPS, 6, -1)
    vocab = VisualVocabulary.fit(feats, k=16, seed=0)
    vis = vocab.encode(feats)
    text = tok([describe_clip(c) for c in clips], max_length=32, add_eos=False)
    ids, mask = text["input_ids"], text["attention_mask"]
    # positives (caption, its clip) and negatives (caption, another clip)
    ids, mask, vis = ids.repeat(2, 1), mask.repeat(2, 1), torch.cat([vis, vis.roll(1, 0)])
    align = torch.cat([torch.ones(N_CLIPS), torch.zeros(N_CLIPS)]).long()

    torch.manual_seed(0)
    model = VideoBert(VideoBertConfig.from_preset("tiny", visual_vocab_size=vocab.k))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    eval_batch = model.mask_inputs(ids, vis, mask, generator=torch.Generator().manual_seed(1))

    def eval_loss():
        model.eval()
        with torch.no_grad():
            out = model(**eval_batch, attention_mask=mask, align_labels=align)
        model.train()
        return out

    before = eval_loss()
    g = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        out = model(**model.mask_inputs(ids, vis, mask, generator=g), attention_mask=mask, align_labels=align)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    after = eval_loss()
    assert after.loss < 0.5 * before.loss, (before.loss, after.loss)
    assert after.text_loss < 0.5 * before.text_loss and after.visual_loss < 0.75 * before.visual_loss
    model.eval()
    with torch.no_grad():
        scores = model.align_scores(ids, vis, mask)
    torch.testing.assert_close(scores, model(ids, vis, mask).align_logits.softmax(-1)[:, 1])


# --------------------------------------------------------------------------- bad input

def test_bad_input_gets_a_clear_error():
    model = VideoBert(VideoBertConfig(**SMALL))
    ids, vis, mask, vmask = _inputs()
    cases = [
        (ValueError, "visual_ids must be visual words in \\[0, 12\\)", dict(visual_ids=vis + K)),
        (ValueError, "visual_ids must be visual words", dict(visual_ids=vis - 20)),
        (ValueError, "mismatched batch sizes: input_ids=3, visual_ids=2", dict(visual_ids=vis[:2])),
        (TypeError, "visual_ids must be an integer tensor", dict(visual_ids=vis.float())),
        (TypeError, "input_ids must be an integer tensor", dict(input_ids=ids.float())),
        (ValueError, "7 \\+ 31 \\+ 3 = 41 tokens, longer than max_positions=40",
         dict(visual_ids=torch.zeros(3, 31, dtype=torch.long))),
        (ValueError, "input_ids has ids outside \\[0, 50\\)", dict(input_ids=ids + V)),
        (ValueError, "visual_mask must have shape \\(B, T\\)", dict(visual_mask=vmask[:, :2])),
        (ValueError, "visual_labels must hold ids in \\[0, 12\\)", dict(visual_labels=torch.full_like(vis, K))),
        (ValueError, "text_labels must have shape", dict(text_labels=ids[:, :3])),
        (ValueError, "align_labels must be 0", dict(align_labels=torch.tensor([0, 1, 2]))),
        (TypeError, "align_labels must be integers", dict(align_labels=torch.tensor([0.0, 1.0, 1.0]))),
        (ValueError, "align_labels must have shape", dict(align_labels=torch.tensor([0, 1]))),
    ]
    for error, match, bad in cases:
        with pytest.raises(error, match=match):
            model(**{**dict(input_ids=ids, visual_ids=vis, attention_mask=mask, visual_mask=vmask), **bad})
    vocab = VisualVocabulary(torch.randn(4, 6))
    with pytest.raises(ValueError, match="features must have shape \\(..., 6\\)"):
        vocab.encode(torch.randn(2, 5))
    with pytest.raises(TypeError, match="features must be a float tensor"):
        vocab.encode(torch.ones(2, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="centroids must be a float \\(k, D\\)"):
        VisualVocabulary(torch.randn(6))
    for fields, match in ((dict(heads=5), "divisible by heads"), (dict(visual_vocab_size=1), "k >= 2"),
                          (dict(boundary_token_id=V), "boundary_token_id=50 is outside"),
                          (dict(dim=0), "dim must be a positive int"), (dict(max_positions=4), "max_positions=4")):
        with pytest.raises(ValueError, match=match):
            VideoBertConfig(**{**SMALL, **fields})
    base, large = VideoBertConfig.from_preset("base"), VideoBertConfig.from_preset("large")
    assert base.joint_vocab_size == 30522 + 12**4 + 1 and (large.dim, large.depth, large.heads) == (1024, 24, 16)
