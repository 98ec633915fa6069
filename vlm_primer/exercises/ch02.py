"""Checks for the exercises of chapter 02 (contrastive VLMs). Explained in notebook 02, §Exercises."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vlm_primer.exercises import Wrong, close, exercise, number


def _pairs(n: int = 6, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(img + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    return img, txt


def _scalar(x, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise Wrong(f"{what} should return a torch tensor, got {type(x).__name__}")
    if x.ndim != 0:
        raise Wrong(f"{what} should return a scalar (a 0-d tensor), got shape {tuple(x.shape)}: average over the batch")
    return x.double()


def _multi_positive(img, txt, scale, labels):
    logits = scale * img @ txt.t()
    pos = labels[:, None] == labels[None, :]
    rows = torch.logsumexp(logits.masked_fill(~pos, -torch.inf), 1) - torch.logsumexp(logits, 1)
    cols = torch.logsumexp(logits.t().masked_fill(~pos.t(), -torch.inf), 1) - torch.logsumexp(logits.t(), 1)
    return -0.5 * (rows.mean() + cols.mean())


@exercise("02.1", "CLIP's loss without false negatives")
def clip_multi_positive(fn) -> str:
    img, txt = _pairs(6)
    scale = torch.tensor(10.0, dtype=torch.float64)
    distinct = torch.arange(6)
    repeated = torch.tensor([0, 1, 0, 2, 1, 3])
    plain = F.cross_entropy(scale * img @ txt.t(), distinct)
    got = _scalar(fn(img, txt, scale, repeated), "your loss")
    want = _multi_positive(img, txt, scale, repeated)
    if torch.allclose(got, 0.5 * (plain + F.cross_entropy(scale * txt @ img.t(), distinct))):
        raise Wrong("with repeated labels this is the ordinary CLIP loss: every column with the same label is a positive too")
    rows_only = -(torch.logsumexp((scale * img @ txt.t()).masked_fill(repeated[:, None] != repeated[None, :], -torch.inf), 1)
                  - torch.logsumexp(scale * img @ txt.t(), 1)).mean()
    if torch.allclose(got, rows_only):
        raise Wrong("only the image→text direction: average it with the text→image direction")
    close(got, want, "your loss with repeated labels [0, 1, 0, 2, 1, 3]")
    close(_scalar(fn(img, txt, scale, distinct), "your loss"), _multi_positive(img, txt, scale, distinct),
          "with all labels distinct it should equal CLIP's loss")
    return "with distinct labels it reduces to CLIP's loss"


@exercise("02.2", "SigLIP's loss from its formula")
def siglip(fn) -> None:
    img, txt = _pairs(5, seed=1)
    t, b = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
    got = _scalar(fn(img, txt, t, b), "your loss")
    z = 2 * torch.eye(5, dtype=torch.float64) - 1
    total = -F.logsigmoid(z * (t * img @ txt.t() + b)).sum()
    if torch.allclose(got, total / 25):
        raise Wrong("normalised by N² pairs: SigLIP divides the sum by the number of images N")
    if torch.allclose(got, total):
        raise Wrong("not normalised: divide the sum over all pairs by the number of images N")
    if torch.allclose(got, -F.logsigmoid(z * (img @ txt.t() / t + b)).sum() / 5):
        raise Wrong("t divides the cosines here: SigLIP's t is a logit scale, it multiplies them")
    close(got, total / 5, "your loss (t = 10, b = -10, 5 pairs)")


@exercise("02.3", "Where SigLIP's bias -10 comes from")
def siglip_bias(fn) -> str:
    for n in (2, 16, 512, 32768):
        b = number(fn(n), "b₀")
        p = 1 / (1 + math.exp(-b))
        if abs(p - 1 / n) > 2 / n**2:
            raise Wrong(f"for a batch of {n} the initial P(match) = σ(b) should be about 1/{n}, got {p:.3g}")
    return (f"for the paper's batch of 32,768 your b₀ = {number(fn(32768), 'b₀'):.2f}, close to the -10 the paper "
            "initialises with")


@exercise("02.4", "The CLIP loss of a model that knows nothing")
def chance_loss(fn) -> None:
    for n in (2, 8, 100):
        got = number(fn(n), "the loss")
        if abs(got - math.log2(n)) < 1e-9 and n != 1:
            raise Wrong("that is log base 2: cross-entropy uses the natural log")
        if abs(got - math.log(n)) > 1e-6:
            raise Wrong(f"for a batch of {n} pairs with equal similarities the value is off")


@exercise("02.5", "How many false negatives does a random batch hold?")
def expected_repeats(fn) -> str:
    for b, k in ((32, 42), (8, 42), (128, 42), (5, 1000)):
        got = number(fn(b, k), "the expected repeats")
        distinct = k * (1 - (1 - 1 / k) ** b)
        if abs(got - distinct) < 1e-6:
            raise Wrong("that is the expected number of *distinct* compositions; the question asks for the repeats")
        if abs(got - (b - distinct)) > 1e-6:
            raise Wrong(f"batch {b} from {k} equally likely compositions: the expectation is off")
    return f"batch 32 from 42 compositions: {number(fn(32, 42), 'the expected repeats'):.1f} repeats on average"


@exercise("02.6", "Recall@1, image to text")
def recall_at_1(fn) -> None:
    from vlm_primer.evaluation.retrieval import recall_at_k

    g = torch.Generator().manual_seed(3)
    sim = 0.1 * torch.randn(7, 7, generator=g) + 2 * torch.eye(7)
    sim[1, 4], sim[4, 4] = 9.0, 10.0  # image 1's best caption is 4 (an image->text miss); caption 4 still finds image 4
    want = round(recall_at_k(sim, ks=1)["i2t_R@1"] * 7) / 7  # 6/7 exactly; a float32 answer is within 1e-7
    got = number(fn(sim), "Recall@1")
    if abs(got - recall_at_k(sim, ks=1)["t2i_R@1"]) < 1e-9 and abs(got - want) > 1e-9:
        raise Wrong("that is text→image: rank the captions (columns) of each image (row)")
    if abs(got - 7 * want) < 1e-9:
        raise Wrong("return a fraction in [0, 1], not a count")
    if abs(got - want) > 1e-6:
        raise Wrong("the fraction of images whose own caption scores highest is off")


@exercise("02.7", "A prompt-ensemble classifier")
def ensemble(fn) -> None:
    g = torch.Generator().manual_seed(4)
    prompts = torch.randn(5, 3, 8, generator=g) * torch.tensor([1.0, 5.0, 0.2]).view(1, 3, 1)
    want = F.normalize(F.normalize(prompts, dim=-1).mean(1), dim=-1)
    got = fn(prompts)
    if not isinstance(got, torch.Tensor):
        raise Wrong(f"return a torch tensor, got {type(got).__name__}")
    if got.shape != (5, 8):
        raise Wrong(f"expected a (classes, dim) = (5, 8) tensor, got shape {tuple(got.shape)}")
    if torch.allclose(got, F.normalize(prompts.mean(1), dim=-1), atol=1e-5):
        raise Wrong("normalise each prompt embedding before averaging, or long prompts outvote short ones")
    if torch.allclose(got, F.normalize(prompts, dim=-1).mean(1), atol=1e-5):
        raise Wrong("the class weights should be unit vectors again: normalise the mean")
    close(got, want, "your class weights", atol=1e-5)
