"""Worked solutions of the book's exercises (kept out of the package and the notebooks on purpose).

``tests/test_exercises.py`` asserts that each one passes ``vlm_primer.exercises.check``.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------- chapter 00

BY_FAMILY = {
    "contrastive": ["CLIP", "SigLIP", "Llip"],
    "masking": ["FLAVA", "MaskVLM", "VisualBERT"],
    "generative": ["CoCa", "Parti", "Stable Diffusion"],
    "pretrained backbones": ["LLaVA", "BLIP-2", "Flamingo", "MiniGPT-4", "Frozen"],
}
FAMILIES = {model: family for family, models in BY_FAMILY.items() for model in models}


def num_patches(image_size: int, patch_size: int) -> int:
    return (image_size // patch_size) ** 2


def vit_params(cfg) -> int:
    d, p, c = cfg.dim, cfg.patch_size, cfg.channels
    hidden = int(cfg.mlp_ratio * d)
    n = num_patches(cfg.image_size, p) + (1 if cfg.cls_token else 0)
    total = c * p * p * d + d + n * d + (d if cfg.cls_token else 0)   # patch conv (+bias), positions, class token
    block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (hidden * d + d)
    total += cfg.depth * block
    total += 2 * d * (int(cfg.pre_norm) + int(cfg.final_norm))
    return total


def adamw_memory(n_params: int) -> int:
    return 16 * n_params  # fp32 weights, gradients, and AdamW's two moments: 4 bytes each


# ---------------------------------------------------------------- chapter 01


def relation(a, b, rel: str, margin: float) -> bool:
    dx, dy = a.x - b.x, a.y - b.y
    return {"left": dx < -margin, "right": dx > margin, "above": dy < -margin, "below": dy > margin}[rel]


def winoground(a: str, b: str) -> bool:
    return Counter(a.split()) == Counter(b.split())


def held_out(colors, shapes, held):
    return [(c, s) for c in colors for s in shapes if (c, s) not in set(held)]


def coverage(cx: float, cy: float, r: float, size: int) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    return np.clip(0.5 - (np.hypot(xs - cx, ys - cy) - r), 0.0, 1.0)


# ---------------------------------------------------------------- chapter 02


def clip_multi_positive(img, txt, logit_scale, labels):
    logits = logit_scale * img @ txt.t()
    same = labels[:, None] == labels[None, :]
    i2t = torch.logsumexp(logits.masked_fill(~same, -math.inf), 1) - torch.logsumexp(logits, 1)
    t2i = torch.logsumexp(logits.t().masked_fill(~same, -math.inf), 1) - torch.logsumexp(logits.t(), 1)
    return -(i2t.mean() + t2i.mean()) / 2


def siglip(img, txt, t, b):
    z = 2 * torch.eye(img.shape[0], dtype=img.dtype) - 1
    return -F.logsigmoid(z * (t * img @ txt.t() + b)).sum() / img.shape[0]


def siglip_bias(n: int) -> float:
    return -math.log(n - 1)  # σ(b) = 1/n exactly: one positive among n candidates at the start


def chance_loss(n: int) -> float:
    return math.log(n)


def expected_repeats(batch: int, k: int) -> float:
    return batch - k * (1 - (1 - 1 / k) ** batch)


def recall_at_1(sim: torch.Tensor) -> float:
    return (sim.argmax(dim=1) == torch.arange(sim.shape[0])).float().mean().item()


def ensemble(prompts: torch.Tensor) -> torch.Tensor:
    return F.normalize(F.normalize(prompts, dim=-1).mean(dim=1), dim=-1)


def blind_accuracy(train, test):
    by_question = defaultdict(Counter)
    for question, answer in train:
        by_question[question][answer] += 1
    overall = Counter(a for _, a in train).most_common(1)[0][0]
    hits = [(by_question[q].most_common(1)[0][0] if q in by_question else overall) == a for q, a in test]
    return sum(hits) / len(hits)


def splice(embeds, ids, features, image_id):
    out = embeds.clone()
    out[ids == image_id] = features.to(out.dtype)  # boolean indexing reads row by row: the placeholders in order
    return out


def image_tokens(image_size, patch_size, keep_cls):
    return (image_size // patch_size) ** 2 + int(keep_cls)


def mlp_connector_params(vision_dim, text_dim):
    return (vision_dim + 1) * text_dim + (text_dim + 1) * text_dim


def anyres_tokens(g, rows, cols, size):
    h, w = rows * g, cols * g  # the tiles' feature map, before unpadding
    oh, ow = size
    if ow / oh > w / h:  # wider than the map: padding rows above and below
        pad = (h - int(round(oh * (w / ow), 7))) // 2
        h -= 2 * pad
    else:
        pad = (w - int(round(ow * (h / oh), 7))) // 2
        w -= 2 * pad
    return g * g + h * (w + 1)


def fact_f1(a, b):
    if not a and not b:
        return 1.0
    shared = sum((a & b).values())
    if shared == 0:
        return 0.0
    p, r = shared / sum(a.values()), shared / sum(b.values())
    return 2 * p * r / (p + r)


def pixel_shuffle(x, factor):
    b, n, d = x.shape
    side = int(round(n ** 0.5))
    x = x.view(b, side // factor, factor, side // factor, factor, d)  # (b, h, s1, w, s2, d)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, n // factor**2, factor * factor * d)


def qformer_masks(kind, num_queries, num_text):
    n = num_queries + num_text
    is_q = torch.arange(n) < num_queries
    row, col = is_q[:, None], is_q[None, :]
    if kind == "bidirectional":
        return torch.ones(n, n, dtype=torch.bool)
    if kind == "unimodal":
        return row == col
    return (row & col) | (~row & (col | torch.ones(n, n, dtype=torch.bool).tril()))


def itc_scores(image_embeds, text_embeds):
    zi, zt = F.normalize(image_embeds, dim=-1), F.normalize(text_embeds, dim=-1)
    return torch.einsum("iqd,td->iqt", zi, zt).amax(1)


def negative_probs(scores):
    return torch.softmax(scores.masked_fill(torch.eye(len(scores), dtype=torch.bool), float("-inf")), dim=1)


def latest_image(ids, image_id, eos_id):
    out, current, seen = [], -1, -1
    for tok in ids:
        if tok == image_id:
            seen += 1
            current = seen
        out.append(current)
        if tok == eos_id:
            current = -1  # cut off after this token, until the next image
    return out


def gated_layer_params(dim, vision_dim, heads, dim_head, mlp_dim, alpha_type):
    inner = heads * dim_head
    xattn = dim * inner + 2 * vision_dim * inner + inner * dim
    gates = 2 * (dim if alpha_type == "vector" else 1)
    return 2 * dim + xattn + 3 * dim * mlp_dim + gates


# --------------------------------------------------------------------------- chapter 03


def mae_keep(noise, ratio):
    return noise.argsort(1)[:, : int(noise.shape[1] * (1 - ratio))]


def norm_pix(patches):
    return (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6) ** 0.5


def masked_mse(pred, target, mask):
    return ((pred - target).pow(2).mean(-1) * mask).sum() / mask.sum()


def code_entropy(ids, k):
    p = torch.bincount(ids, minlength=k).double() / len(ids)
    p = p[p > 0]
    return float(-(p * p.log2()).sum())


def mlm_accuracy(logits, labels):
    picked = labels != -100
    return (logits.argmax(-1)[picked] == labels[picked]).float().mean()


# --------------------------------------------------------------------------- chapter 04


def smoothed_ce(logits, target, eps):
    logp = logits.log_softmax(-1)
    one_hot = torch.nn.functional.one_hot(target, logits.shape[-1]).to(logp.dtype)
    return -((1 - eps) * one_hot + eps / logits.shape[-1]).mul(logp).sum(-1).mean()


def nucleus_keep(probs, p):
    order = probs.argsort(descending=True)
    before = probs[order].cumsum(0) - probs[order]  # mass of the more likely tokens
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order] = before < p
    return keep


def beam_step(scores, logp, k):
    total = (scores[:, None] + logp).flatten()
    best = total.topk(k).indices
    return [(int(i) // logp.shape[1], int(i) % logp.shape[1]) for i in best]


def soft_targets(sim, alpha):
    return alpha * sim.softmax(1) + (1 - alpha) * torch.eye(len(sim))


def attentional_pool(tokens, queries, wq, wk, wv):
    q, k, v = queries @ wq.T, tokens @ wk.T, tokens @ wv.T
    return torch.softmax(torch.einsum("qd,bnd->bqn", q, k) / q.shape[-1] ** 0.5, -1) @ v


def perplexity(indices, k):
    p = torch.bincount(indices, minlength=k).double() / len(indices)
    return float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))


def noisy(x0, noise, abar_t):
    a = abar_t.view(-1, *([1] * (x0.dim() - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def guide(uncond, cond, scale):
    return uncond + scale * (cond - uncond)


def predict_x0(x_t, eps, abar_t):
    return (x_t - (1 - abar_t) ** 0.5 * eps) / abar_t ** 0.5


def class_posterior(log_lik, log_prior):
    return (log_lik + log_prior).softmax(-1)


# ---------------------------------------------------------------- chapter 07

def vqa_acc(pred, answers):
    subsets = [answers[:i] + answers[i + 1:] for i in range(len(answers))]
    return sum(min(sub.count(pred) / 3, 1) for sub in subsets) / len(subsets)


def boot_ci(values, idx):
    return np.percentile(np.asarray(values)[idx].mean(1), [2.5, 97.5])


def wino(s):
    s = np.asarray(s)
    text = (s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])
    image = (s[:, 0, 0] > s[:, 1, 0]) & (s[:, 1, 1] > s[:, 0, 1])
    return text.mean(), image.mean(), (text & image).mean()


def pope(pred, label):
    pred, label = np.asarray(pred, bool), np.asarray(label, bool)
    tp, fp, fn = (pred & label).sum(), (pred & ~label).sum(), (~pred & label).sum()
    return (2 * tp / (2 * tp + fp + fn) if tp else 0.0), pred.mean()


def chair_i(mentions, present):
    total = sum(len(m) for m in mentions)
    bad = sum(shape not in p for m, p in zip(mentions, present) for shape in m)
    return bad / total if total else 0.0


def weat_d(X, Y, A, B):
    def unit(m):
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    def s(W):
        return (unit(W) @ unit(A).T).mean(1) - (unit(W) @ unit(B).T).mean(1)

    sx, sy = s(X), s(Y)
    return (sx.mean() - sy.mean()) / np.concatenate([sx, sy]).std(ddof=1)


def clip_s(cos, w=2.5):
    return w * cos.clamp(min=0)


def zipf(n, s):
    p = np.arange(1, n + 1, dtype=float) ** -s
    return p / p.sum()


def precision_recall(removed, bad):
    tp = sum(r and b for r, b in zip(removed, bad))
    return tp / max(1, sum(removed)), tp / max(1, sum(bad))


def keep_top06(scores, fraction):
    order = np.argsort(-np.asarray(scores), kind="stable")[:round(fraction * len(scores))]
    keep = np.zeros(len(scores), bool)
    keep[order] = True
    return keep


def semdedup(x, centroid, eps):
    order = (x @ centroid).argsort().tolist()
    removed = [False] * len(x)
    for pos, j in enumerate(order):
        removed[j] = any(float(x[i] @ x[j]) > 1 - eps for i in order[:pos])
    return removed


def train_flops(params, tokens, layers, width, batch):
    return 3 * batch * (2 * params * tokens + 4 * layers * tokens ** 2 * width)


def gpu_hours(flops, peak_tflops, mfu):
    return flops / (peak_tflops * 1e12 * mfu) / 3600


# ---------------------------------------------------------------- chapter 06b

def giou(a, b):
    area = lambda r: max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])  # noqa: E731
    inter = area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = area(a) + area(b) - inter
    enclosing = area((min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])))
    return inter / union - (enclosing - union) / enclosing


def location_tokens(box, bins):
    x0, y0, x1, y1 = box
    return (math.floor(y0 * bins) * bins + math.floor(x0 * bins),
            math.ceil(y1 * bins - 1) * bins + math.ceil(x1 * bins - 1))


def dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -F.logsigmoid(margin).mean()


def lora_forward(x, W, b, A, B, alpha):
    r = A.shape[0]
    return x @ W.T + b + (alpha / r) * (x @ A.T @ B.T)


def nf4_block(x, levels):
    absmax = x.abs().max()
    if absmax == 0:
        return torch.zeros_like(x)
    return levels[(x[:, None] / absmax - levels).abs().argmin(dim=1)] * absmax


def clip_adapter_blend(f, W1, W2, alpha):
    return alpha * torch.relu(torch.relu(f @ W1.T) @ W2.T) + (1 - alpha) * f


def accumulated_loss(losses, items):
    return sum(loss * n for loss, n in zip(losses, items)) / sum(items)


# ---------------------------------------------------------------- chapter 08

def frame_indices(num_frames, k):
    if k == 1:
        return [num_frames // 2]
    return [round(i * (num_frames - 1) / (k - 1)) for i in range(k)]


def single_frame_ceiling(answers, reversed_answers):
    return sum(1.0 if a == b else 0.5 for a, b in zip(answers, reversed_answers)) / len(answers)


def add_frame_positions(tokens, emb):
    b, t, q, d = tokens.shape
    return (tokens + emb[:t, None, :]).reshape(b, t * q, d)


def order_targets(perm, shuffled):
    slots = [s for s, moved in enumerate(shuffled) if moved]
    return [((s, u), int(perm[s] < perm[u])) for i, s in enumerate(slots) for u in slots[i + 1:]]


def merge_tokens(tokens, m):
    b, n, d = tokens.shape
    return tokens.reshape(b, n // m, m * d)


def frames_that_fit(context_length, text_tokens, tokens_per_frame, merge):
    return max(context_length - text_tokens, 0) // (tokens_per_frame // merge)


SOLUTIONS = {
    "00.1": FAMILIES, "00.2": num_patches, "00.3": vit_params, "00.4": adamw_memory,
    "01.1": relation, "01.2": winoground, "01.3": held_out, "01.4": coverage, "01.5": blind_accuracy,
    "02.1": clip_multi_positive, "02.2": siglip, "02.3": siglip_bias, "02.4": chance_loss,
    "02.5": expected_repeats, "02.6": recall_at_1, "02.7": ensemble,
    "03.1": mae_keep, "03.2": norm_pix, "03.3": masked_mse, "03.4": code_entropy, "03.5": mlm_accuracy,
    "04b.1": perplexity, "04b.2": noisy, "04b.3": guide, "04b.4": predict_x0, "04b.5": class_posterior,
    "04.1": smoothed_ce, "04.2": nucleus_keep, "04.3": beam_step, "04.4": soft_targets, "04.5": attentional_pool,
    "05.1": splice, "05.2": image_tokens, "05.3": mlp_connector_params, "05.4": anyres_tokens, "05.5": fact_f1,
    "05.6": pixel_shuffle,
    "05b.1": qformer_masks, "05b.2": itc_scores, "05b.3": negative_probs, "05b.4": latest_image,
    "05b.5": gated_layer_params,
    "06.1": zipf, "06.2": precision_recall, "06.3": keep_top06, "06.4": semdedup, "06.5": train_flops,
    "06.6": gpu_hours,
    "06b.1": giou, "06b.2": location_tokens, "06b.3": dpo, "06b.4": lora_forward, "06b.5": nf4_block,
    "06b.6": clip_adapter_blend, "06b.7": accumulated_loss,
    "08.1": frame_indices, "08.2": single_frame_ceiling, "08.3": add_frame_positions, "08.4": order_targets,
    "08.5": merge_tokens, "08.6": frames_that_fit,
    "07.1": vqa_acc, "07.2": boot_ci, "07.3": wino, "07.4": pope, "07.5": chair_i, "07.6": weat_d, "07.7": clip_s,
}
