"""The data a VLM learns from (survey §3.1): balance, web-like noise, deduplication, pruning, synthetic captions.

Explained in notebook 06. Shapes World knows the truth of every pair, so each curation step is *measured*:

* **Balance** (survey §3.1.1; notebook 06, §Diversity and balance): :class:`ConceptFrequencyDataset` draws one-object
  training scenes whose concept (a shape, a colour or a colour-shape composition) follows a chosen law
  (:func:`concept_weights`: uniform, Zipf with exponent ``s`` over a shuffled ranking (:func:`zipf_weights`), the
  rarest ``tail`` concepts never shown); :func:`frequency_table` counts what a dataset really holds. Chapter 07 reads
  accuracy against these counts (:mod:`vlm_primer.evaluation.frequency`).
* **Noise like web alt-text** (survey §3.1.2; notebook 06, §Noise like web alt-text): :func:`inject_noise` plants wrong attributes, wrong objects, unrelated
  captions and truncated ones at a known rate (chapter 04's :func:`~vlm_primer.generative.capfilt.corrupt_captions`),
  keeping each pair's label so every cleaning method gets a precision and a recall (:func:`removal_report`).
* **Deduplication** (survey §3.1.2; notebook 06, §Deduplication): :func:`plant_duplicates` adds exact copies and near
  copies (objects nudged by a pixel or two, the caption paraphrased) whose originals are known;
  :func:`exact_duplicates` hashes the rendered image with its caption; :func:`semantic_duplicates` is SemDeDup
  (Abbas et al. 2023): k-means over image embeddings, and within each cluster an item is dropped when it is
  closer than ``1 - eps`` in cosine to an item ranked before it.
* **Pruning by alignment** (survey §3.1.2, §3.1.4; notebook 06, §Pruning by alignment): CLIPScore per pair
  (:func:`~vlm_primer.evaluation.clipscore.clip_score`, equal to torchmetrics' ``CLIPScore`` divided by 40, which
  reports ``100 * cos``), then DataComp's filter: keep the top fraction by score (:func:`keep_top`), against
  :func:`keep_random` at the same fraction (the control).
* **Synthetic captions** (survey §3.1.3; notebook 06, §Synthetic captions): :func:`recaption` writes new captions with a captioner (chapter 04's BLIP);
  :func:`caption_truth` checks any caption against its scene graph.
"""

from __future__ import annotations

import hashlib
from typing import Any, Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vlm_primer.generative.capfilt import WEB_NOISE, corrupt_captions, removal_report
from vlm_primer.validate import check_int
from vlm_primer.world import ShapesCaptionDataset, WorldConfig
from vlm_primer.world.splits import split_compositions

__all__ = ["CONCEPTS", "WEB_NOISE", "ConceptFrequencyDataset", "caption_truth", "concept_of", "concept_weights",
           "duplicate_report", "embed_images", "exact_duplicates", "frequency_table", "inject_noise", "keep_random", "keep_top", "kmeans",
           "plant_duplicates", "recaption", "removal_report", "semantic_duplicates", "zipf_weights"]

CONCEPTS = ("shape", "color", "composition")


# --- balance ---------------------------------------------------------------------------------------------------

def _check_concept(concept: str) -> str:
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept {concept!r}; choose one of {CONCEPTS}")
    return concept


def _concept_key(color: str, shape: str, concept: str) -> Hashable:
    return (color, shape) if concept == "composition" else color if concept == "color" else shape


def concept_of(obj: Any, concept: str) -> Hashable:
    """The concept an object shows: its ``shape``, its ``color`` or its ``(color, shape)`` composition."""
    return _concept_key(obj.color, obj.shape, _check_concept(concept))


def zipf_weights(keys: Sequence[Hashable], exponent: float, seed: int = 0) -> dict[Hashable, float]:
    """Probabilities of ``keys`` under a Zipf law with ``exponent`` (0 = uniform): rank ``r`` of a fixed shuffle
    drawn from ``seed`` has probability proportional to ``r ** -exponent``. Most frequent first."""
    if isinstance(exponent, bool) or not isinstance(exponent, (int, float)) or exponent < 0:
        raise ValueError(f"exponent must be a number >= 0, got {exponent!r}")
    order = sorted(keys)
    order = [order[i] for i in np.random.default_rng([seed, 11]).permutation(len(order))]
    w = np.arange(1, len(order) + 1, dtype=float) ** -float(exponent)
    return dict(zip(order, w / w.sum()))


def concept_weights(concept: str, exponent: float = 0.0, *, tail: int = 0, rank_seed: int = 0,
                    config: WorldConfig | None = None) -> dict[Hashable, float]:
    """Training probabilities of every ``concept`` of the ``train`` split of ``config``: a Zipf law with ``exponent``
    (0 = uniform) over a ranking shuffled by ``rank_seed``, the ``tail`` last-ranked concepts at 0 (never shown).
    Most frequent first."""
    cfg = config or WorldConfig()
    allowed, _ = split_compositions("train", cfg, None)
    keys = sorted({_concept_key(c, s, _check_concept(concept)) for c, s in allowed})
    check_int(tail, "tail", 0, len(keys) - 1, hint=f"{len(keys)} {concept}s")
    w = zipf_weights(keys, exponent, rank_seed)
    shown = list(w)[:len(keys) - tail]
    total = sum(w[k] for k in shown)
    return {k: (float(w[k] / total) if k in shown else 0.0) for k in w}


class ConceptFrequencyDataset(ShapesCaptionDataset):
    """One-object ``train`` scenes whose ``concept`` follows :func:`concept_weights` (``exponent``, ``tail``,
    ``rank_seed``); the other attributes, the place and the size are drawn as usual, within the split's allowed
    compositions. Other arguments as :class:`~vlm_primer.world.ShapesCaptionDataset`'s (``distinct`` is not
    supported: a skewed law repeats its head). Explained in notebook 06, §Diversity and balance."""

    def __init__(self, size: int, config: WorldConfig | None = None, *, concept: str = "shape", exponent: float = 0.0,
                 tail: int = 0, rank_seed: int = 0, **kwargs: Any) -> None:
        if kwargs.pop("num_objects", 1) != 1 or kwargs.get("distinct") is not None:
            raise ValueError("a ConceptFrequencyDataset draws one-object scenes, without distinct blocks")
        super().__init__("train", size, config, num_objects=1, **kwargs)
        self.concept = concept
        self.weights = concept_weights(concept, exponent, tail=tail, rank_seed=rank_seed, config=self.config)
        allowed, _ = split_compositions("train", self.config, self.held_out)
        # Every allowed composition, weighted by its concept's probability shared among the concept's compositions.
        self._pairs = sorted(allowed)
        keys = [_concept_key(c, s, concept) for c, s in self._pairs]
        p = np.array([self.weights.get(k, 0.0) / keys.count(k) for k in keys])
        self._p = p / p.sum()

    def scene(self, index: int):
        scene, rng = super().scene(index)
        pick = np.random.default_rng([self.seed, index, 17]).choice(len(self._pairs), p=self._p)
        color, shape = self._pairs[pick]
        return scene.replace(0, color=color, shape=shape), rng


def frequency_table(dataset: ConceptFrequencyDataset) -> dict[Hashable, int]:
    """How many of ``dataset``'s scenes show each concept (zeros included), most frequent first."""
    counts = dict.fromkeys(dataset.weights, 0)
    for i in range(len(dataset)):
        counts[concept_of(dataset.scene(i)[0].objects[0], dataset.concept)] += 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


# --- noise ------------------------------------------------------------------------------------------------------

def inject_noise(items: Sequence[dict[str, Any]], fraction: float, kinds: Sequence[str] = WEB_NOISE, seed: int = 0
                 ) -> list[dict[str, Any]]:
    """Copies of ``items`` (with ``caption`` and ``scene``) where ``fraction`` of the captions are made false or
    useless the way web alt-text is, the ``kinds`` taking turns (:data:`WEB_NOISE`: a wrong ``attribute``, a wrong
    ``object``, an ``unrelated`` caption, a ``truncated`` one). Each copy gets ``corruption``: its kind or ``""``."""
    return corrupt_captions(items, fraction, kinds, seed)


# --- deduplication -----------------------------------------------------------------------------------------------

def _nudge(scene: Any, rng: np.random.Generator, pixels: float, image_size: int) -> Any:
    for i, obj in enumerate(scene.objects):
        dx, dy = rng.uniform(-pixels, pixels, size=2) / image_size
        scene = scene.replace(i, x=float(np.clip(obj.x + dx, 0.0, 1.0)), y=float(np.clip(obj.y + dy, 0.0, 1.0)))
    return scene


def plant_duplicates(items: Sequence[dict[str, Any]], *, exact: int, near: int, seed: int = 0, pixels: float = 1.5,
                     image_size: int | None = None) -> list[dict[str, Any]]:
    """``items`` (each with ``image`` ``(3, H, W)`` in [0, 1], ``caption``, ``captions`` paraphrases and ``scene``)
    followed by ``exact`` exact copies and ``near`` near copies of distinct originals drawn with ``seed``; a near
    copy re-renders the scene with every object moved by up to ``pixels`` and takes another paraphrase as caption.
    Every item gets ``duplicate`` (``""``, ``"exact"`` or ``"near"``) and ``duplicate_of`` (the original's index or
    -1), so that a deduplication method can be scored with :func:`duplicate_report`."""
    from vlm_primer.world import render

    check_int(exact, "exact", 0)
    check_int(near, "near", 0)
    if exact + near > len(items):
        raise ValueError(f"cannot plant {exact} + {near} duplicates of distinct originals among {len(items)} items")
    rng = np.random.default_rng([seed, 23])
    originals = rng.permutation(len(items))[:exact + near]
    out = [dict(it, duplicate="", duplicate_of=-1) for it in items]
    for j, i in enumerate(originals.tolist()):
        src = items[i]
        if j < exact:
            out.append(dict(src, duplicate="exact", duplicate_of=i))
            continue
        size = image_size or src["image"].shape[-1]
        scene = _nudge(src["scene"], rng, pixels, size)
        others = [c for c in src.get("captions", []) if c != src["caption"]] or [src["caption"]]
        out.append(dict(src, image=render(scene, size), scene=scene, caption=others[int(rng.integers(len(others)))],
                        duplicate="near", duplicate_of=i))
    return out


def _image_bytes(image: Any) -> bytes:
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.dtype != np.uint8:  # a float image in [0, 1] hashes as the uint8 image it would be saved as
        array = np.round(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)
    return array.tobytes()


def exact_duplicates(images: Sequence[Any], captions: Sequence[str]) -> list[bool]:
    """``True`` for every pair whose image bytes and caption equal an earlier pair's (SHA-1 of both): what an
    exact-match deduplication removes. Images are tensors or arrays; a float image hashes as its uint8 rendering."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions: one caption per image")
    seen: set[str] = set()
    out = []
    for image, caption in zip(images, captions):
        if not isinstance(caption, str):
            raise TypeError(f"captions must be str, got {type(caption).__name__}")
        key = hashlib.sha1(_image_bytes(image) + b"\0" + caption.encode()).hexdigest()
        out.append(key in seen)
        seen.add(key)
    return out


def duplicate_report(removed: Sequence[bool], items: Sequence[dict[str, Any]]) -> dict[str, float]:
    """A deduplication against :func:`plant_duplicates`' pairs. A planted pair is *found* when either of its two
    items is removed (which one a method keeps is its choice); a removal is *right* when it is the first removal
    within a planted pair. Returns ``precision`` (right removals / removals), ``recall`` (found pairs / planted
    pairs) and ``recall_<kind>`` per kind of duplicate, and ``clean_kept`` (items of no planted pair kept)."""
    removed = [bool(r) for r in removed]
    if len(removed) != len(items):
        raise ValueError(f"{len(removed)} removal flags but {len(items)} items: one flag per item")
    pairs = [(it["duplicate_of"], i, it["duplicate"]) for i, it in enumerate(items) if it.get("duplicate")]
    paired = {j for o, c, _ in pairs for j in (o, c)}
    found = {c: removed[o] or removed[c] for o, c, _ in pairs}
    out = {"precision": sum(found.values()) / max(1, sum(removed)), "recall": sum(found.values()) / max(1, len(pairs)),
           "clean_kept": sum(not removed[i] for i in range(len(items)) if i not in paired)
           / max(1, len(items) - len(paired))}
    for kind in sorted({k for _, _, k in pairs}):
        rows = [found[c] for _, c, k in pairs if k == kind]
        out[f"recall_{kind}"] = sum(rows) / len(rows)
    return out


@torch.no_grad()
def embed_images(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Unit-norm image embeddings ``(N, D)`` from any model with ``encode_image`` (a CLIP of the book)."""
    model.eval()
    out = [model.encode_image(images[s:s + batch_size]).float() for s in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(out), dim=-1)


def kmeans(x: torch.Tensor, k: int, iters: int = 30, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical k-means (cosine) on the rows of ``x`` with k-means++ seeding: ``(centroids (k, D), labels (N,))``."""
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty (N, D) tensor, got shape {tuple(x.shape)}")
    check_int(k, "k", 1, len(x), hint="at most the number of rows")
    x = F.normalize(x.float(), dim=-1)
    g = torch.Generator().manual_seed(seed)
    centers = [x[torch.randint(len(x), (1,), generator=g)].squeeze(0)]
    for _ in range(1, k):  # k-means++: the next centre far (in cosine) from those chosen
        p = (1 - x @ torch.stack(centers).T).amin(1).clamp(min=0) ** 2
        centers.append(x[torch.multinomial(p / p.sum() if p.sum() > 0 else torch.ones_like(p), 1, generator=g)]
                       .squeeze(0))
    c = torch.stack(centers)
    for _ in range(iters):
        labels = (x @ c.T).argmax(1)
        new = torch.zeros_like(c).index_add_(0, labels, x)
        empty = new.norm(dim=1) == 0
        new[empty] = c[empty]
        new = F.normalize(new, dim=-1)
        if torch.allclose(new, c):
            break
        c = new
    return c, (x @ c.T).argmax(1)


def semantic_duplicates(embeddings: torch.Tensor, *, clusters: int, eps: float, seed: int = 0) -> list[bool]:
    """SemDeDup (Abbas et al. 2023): ``True`` for every item SemDeDup removes. The embeddings are clustered by
    :func:`kmeans`; within a cluster the items are ranked from farthest to nearest their centroid (the paper keeps
    the least prototypical), and an item is removed when its cosine to an item ranked before it exceeds ``1 - eps``.
    """
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 <= eps < 1:
        raise ValueError(f"eps must be a number in [0, 1), got {eps!r}")
    x = F.normalize(embeddings.float(), dim=-1)
    centroids, labels = kmeans(x, clusters, seed=seed)
    removed = torch.zeros(len(x), dtype=torch.bool)
    for c in range(clusters):
        idx = (labels == c).nonzero().squeeze(1)
        if len(idx) < 2:
            continue
        # farthest from the centroid first; a row-wise sum (not a matmul) gives identical rows identical values, so
        # an exact copy ranks right after its original (ties keep the dataset's order)
        idx = idx[(x[idx] * centroids[c]).sum(-1).argsort(stable=True)]
        sim = torch.triu(x[idx] @ x[idx].T, diagonal=1)          # sim[i, j], i ranked before j
        removed[idx] = sim.amax(0) > 1 - eps
    return removed.tolist()


# --- pruning ----------------------------------------------------------------------------------------------------

def _check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction (of pairs kept) must be a number in (0, 1], got {fraction!r}")
    return float(fraction)


def keep_top(scores: torch.Tensor | Sequence[float], fraction: float) -> list[bool]:
    """DataComp's filter: ``True`` for the ``round(fraction * N)`` pairs with the highest score (CLIPScore), ties
    broken by position. DataComp thresholds the raw cosine and keeps every pair at or above it; CLIPScore clamps
    negative cosines to 0, so the two differ only where the cut falls among those (or by one tied pair)."""
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if len(s) == 0 or not torch.isfinite(s).all():
        raise ValueError("scores must be a non-empty sequence of finite numbers")
    keep = torch.zeros(len(s), dtype=torch.bool)
    keep[torch.argsort(-s, stable=True)[:round(_check_fraction(fraction) * len(s))]] = True
    return keep.tolist()


def keep_random(n: int, fraction: float, seed: int = 0) -> list[bool]:
    """The control of :func:`keep_top`: ``round(fraction * n)`` of ``n`` pairs kept at random."""
    check_int(n, "n")
    keep = np.zeros(n, dtype=bool)
    keep[np.random.default_rng([seed, 29]).permutation(n)[:round(_check_fraction(fraction) * n)]] = True
    return keep.tolist()


# --- synthetic captions -----------------------------------------------------------------------------------------

@torch.no_grad()
def recaption(captioner: torch.nn.Module, images: torch.Tensor, tokenizer: Any, *, batch_size: int = 128,
              max_new_tokens: int = 20) -> list[str]:
    """A synthetic caption for every image: ``captioner.captions`` (chapter 04's BLIP or CoCa), greedy."""
    captioner.eval()
    out: list[str] = []
    for s in range(0, len(images), batch_size):
        out += captioner.captions(images[s:s + batch_size], tokenizer, max_new_tokens=max_new_tokens)
    return out


def caption_truth(captions: Sequence[str], scenes: Sequence[Any]) -> list[bool]:
    """Whether each caption names every object of its scene with its colour and mentions nothing absent
    (chapter 07's CHAIR reading with colours: synonyms and plurals count; sizes and relations are not read)."""
    from vlm_primer.evaluation.hallucination import chair

    per = chair(list(captions), list(scenes), with_color=True)["per_caption"]
    return [not row["hallucinated"] and all(f"{o.color} {o.shape}" in row["mentioned"] for o in scene.objects)
            for row, scene in zip(per, scenes)]
