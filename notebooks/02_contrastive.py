# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (vlm-primer)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Contrastive VLMs: CLIP, SigLIP, Llip and zero-shot transfer
#
# A contrastive vision–language model has two encoders, one for images and one for text, and one
# job: put an image and a caption that describes it **close together** in a shared embedding space,
# and pairs that do not match **far apart**. Nothing is generated; the model only learns to *score*
# pairs. That is enough for a surprising amount: CLIP {cite:p}`radford2021clip`, trained on 400 M web
# image–caption pairs, classifies ImageNet {term}`zero-shot <zero-shot classification>`: its largest
# model (ViT-L/14 at 336 px) reaches 76.2 % top-1, matching the original supervised ResNet-50
# trained on ImageNet's 1.28 M labelled images.
#
# This chapter follows §2.2 of the survey (and §4.1.5–4.1.6 for zero-shot classification and
# compositional reasoning). We derive the losses from the energy-based view, write them in a few lines
# and check them against the package, train a tiny CLIP live on Shapes World, and then measure what it
# learned — and what it did not.
#
# **After this chapter you can**
#
# * fit a density with noise-contrastive estimation, and say what its noise term is for;
# * derive InfoNCE and SigLIP's sigmoid loss from the energy-based view, and say how they differ;
# * write both losses in a few lines and match them to a distributed-ready implementation;
# * train a tiny CLIP on a CPU and measure zero-shot classification and retrieval;
# * explain why false negatives slow contrastive learning, and build batches without them;
# * test whether a contrastive model binds attributes to objects, with a control that shows the test works;
# * read a comparison (SigLIP vs CLIP, Llip vs CLIP, robustness under shift) against its seed spread.

# %%
import math
import os
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from vlm_primer import get_scale, get_seed, seed_everything

seed_everything(0)
SCALE = get_scale()
SEED = get_seed()  # the seed of the live CLIP run (VLM_PRIMER_SEED); the zoo's models were trained from seed 0
T_START = time.time()
print(f"VLM_PRIMER_SCALE = {SCALE!r}")

# %% [markdown]
# ## The energy-based view
#
# {term}`Contrastive learning <contrastive learning>` is easiest to understand through
# {term}`energy-based models <energy-based model>` (EBMs; LeCun et al., 2006). A model $E_\theta(x)$ assigns an *energy* to every input: low for things we observe, high for
# everything else. The energy defines a probability through the Boltzmann (Gibbs) distribution
#
# $$p_\theta(x) = \frac{e^{-E_\theta(x)}}{Z_\theta}, \qquad Z_\theta = \int e^{-E_\theta(x')}\,dx'.$$
#
# Maximum likelihood, $\arg\min_\theta \mathbb{E}_{x\sim P_D}[-\log p_\theta(x)]$, has the gradient
#
# $$\nabla_\theta\, \mathbb{E}_{x \sim P_D}[-\log p_\theta(x)] =
#   \mathbb{E}_{x^+ \sim P_D}\big[\nabla_\theta E_\theta(x^+)\big] -
#   \mathbb{E}_{x^- \sim p_\theta}\big[\nabla_\theta E_\theta(x^-)\big]:$$
#
# push the energy of **positive** samples $x^+$ (data) down and the energy of **negative** samples
# $x^-$ (drawn from the model) up. The second expectation needs samples from the model, which is
# what makes EBMs hard to train. The survey names three ways around it. **MCMC** draws the negatives
# from the model after all, by running a Markov chain (Gibbs sampling, or Langevin dynamics that
# follows $-\nabla_x E_\theta$ plus noise); contrastive divergence {cite:p}`hinton2002cd` runs the chain
# only a few steps from the data. {term}`Score matching <score matching>` {cite:p}`hyvarinen2005score` fits the *score*
# $\nabla_x \log p_\theta(x) = -\nabla_x E_\theta(x)$, in which $Z_\theta$ does not appear at all; its
# denoising form is what diffusion models train (chapter 04b). **Contrastive methods**, the subject of
# this chapter, replace the model's samples with cheap negatives and change the question into a
# classification.
#
# ### From NCE to InfoNCE
#
# {term}`Noise-contrastive estimation <noise-contrastive estimation>` (NCE; {cite:t}`gutmann2010nce`)
# turns density estimation into binary classification: tell data samples from samples of a known noise
# distribution $p_n$, drawn $\nu$ times as often, with a logistic regression whose logit is
# $\log p_\theta(x) - \log\big(\nu\, p_n(x)\big) = -E_\theta(x) + c - \log\big(\nu\, p_n(x)\big)$, where a
# learned offset $c$ stands in for $-\log Z$. Dropping the noise term is only right when $\nu\,p_n$ is
# constant, i.e. uniform noise.
#
# **NCE in one dimension.** The data are $x \sim \mathcal N(1, 0.5^2)$, which the model does not know;
# the model is an unnormalised Gaussian energy $E_\theta(x) = (x-\mu)^2 / 2\sigma^2$ with a free offset
# $c$, and the noise is $p_n = \mathcal N(0, 2^2)$, one noise sample per data sample ($\nu = 1$).
# Logistic regression with NCE's logit recovers $\mu$, $\sigma$ *and* the normaliser: $c$ converges to
# $-\log Z = -\log(\sigma\sqrt{2\pi})$, a number maximum likelihood would have to integrate for. The
# control is the same fit with the noise term dropped: it then learns the density *ratio*
# $p_D / p_n$ (a Gaussian of variance $(1/0.5^2 - 1/2^2)^{-1}$ centred at $16/15$), not $p_D$.

# %%
def fit_nce(data: torch.Tensor, noise: torch.distributions.Distribution, nu: float = 1.0,
            noise_term: bool = True, steps: int = 500) -> dict[str, float]:
    """NCE for the energy (x - mu)^2 / 2 sigma^2 with a learned offset c = -log Z."""
    x_noise = noise.sample((int(nu * len(data)),))
    mu, log_sigma, c = (torch.zeros((), requires_grad=True) for _ in range(3))
    opt = torch.optim.Adam([mu, log_sigma, c], lr=0.05)

    def logit(x):  # log p_theta(x) - log(nu p_n(x)), with log p_theta = -E - log Z = -E + c
        log_p = -0.5 * ((x - mu) / log_sigma.exp()) ** 2 + c
        return log_p - math.log(nu) - (noise.log_prob(x) if noise_term else 0)

    for _ in range(steps):  # data are the class "1", noise samples the class "0"
        loss = F.softplus(-logit(data)).mean() + nu * F.softplus(logit(x_noise)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"mu": mu.item(), "sigma": log_sigma.exp().item(), "c": c.item()}


torch.manual_seed(0)
data_1d = 1.0 + 0.5 * torch.randn(4000)
noise_1d = torch.distributions.Normal(0.0, 2.0)
nce = fit_nce(data_1d, noise_1d)
ratio_fit = fit_nce(data_1d, noise_1d, noise_term=False)
true_c = -math.log(0.5 * math.sqrt(2 * math.pi))
ratio_sigma = (1 / 0.5**2 - 1 / 2.0**2) ** -0.5
print(f"NCE:              mu {nce['mu']:.3f}  sigma {nce['sigma']:.3f}  c {nce['c']:.3f}   "
      f"(truth: 1, 0.5, -log Z = {true_c:.3f})")
print(f"no noise term:    mu {ratio_fit['mu']:.3f}  sigma {ratio_fit['sigma']:.3f}  c {ratio_fit['c']:.3f}   "
      f"(the ratio p_D/p_n: {16 / 15:.3f}, {ratio_sigma:.3f})")
xs = torch.linspace(-3, 4, 300)
fig, ax = plt.subplots(figsize=(7, 3))
ax.hist(data_1d.numpy(), bins=60, density=True, color="#cbd5e1", label="data")
ax.plot(xs, noise_1d.log_prob(xs).exp(), "k:", label="noise $p_n$")
for fit, style, name in [(nce, "C0-", "NCE"), (ratio_fit, "C3--", "no noise term")]:
    ax.plot(xs, torch.exp(-0.5 * ((xs - fit["mu"]) / fit["sigma"]) ** 2 + fit["c"]), style,
            label=f"{name}: exp(-E + c)")
ax.set_xlabel("x")
ax.legend(fontsize=8)
ax.set_title("NCE learns the density and its normaliser")
plt.tight_layout()
plt.show()
assert abs(nce["mu"] - 1) < 0.05 and abs(nce["sigma"] - 0.5) < 0.03 and abs(nce["c"] - true_c) < 0.05
assert abs(ratio_fit["sigma"] - ratio_sigma) < 0.03 and abs(ratio_fit["c"] - true_c) > 1, "the control misses Z"

# %% [markdown]
# {term}`InfoNCE` {cite:p}`oord2018cpc` makes NCE a multi-class problem: given one positive and
# $N-1$ negatives, pick the positive. The negatives are no longer drawn from a noise distribution we
# can evaluate; they are the other samples of the batch, and the normaliser is the batch's sum.
#
# For vision–language pairs the energy is a negative scaled cosine similarity,
# $E_\theta(x, y) = -\cos(f(x), g(y))/\tau$ with image encoder $f$ and text encoder $g$. In a batch
# of $N$ pairs $(x_i, y_i)$ every other caption $y_k$, $k\neq i$, is a negative for image $x_i$, and
# InfoNCE is a softmax over the row of the batch similarity matrix (survey eq. 2):
#
# $$\mathcal{L}_{i\to t} = -\frac1N\sum_{i=1}^N \log
#   \frac{\exp(\cos(z_i^{img}, z_i^{txt})/\tau)}{\sum_{k=1}^N \exp(\cos(z_i^{img}, z_k^{txt})/\tau)}.$$
#
# **CLIP** uses it in both directions — each image picks its caption among the batch's captions, and
# each caption picks its image — and averages:
# $\mathcal{L}_{\text{CLIP}} = \tfrac12(\mathcal{L}_{i\to t} + \mathcal{L}_{t\to i})$.
# The {term}`temperature` $\tau$ is learned (CLIP stores $\log(1/\tau)$, starts at $\tau = 0.07$ and
# clamps $1/\tau \le 100$): a small $\tau$ makes the softmax sharp, a large one makes it flat.
#
# In code this is a cross-entropy over the rows and over the columns of the logit matrix, with the
# diagonal as the labels — a handful of lines:


# %%
def my_clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE; ``img``/``txt`` are L2-normalised (N, D), ``logit_scale`` = 1/tau."""
    logits = logit_scale * img @ txt.t()          # (N, N) scaled cosine similarities
    labels = torch.arange(img.shape[0])           # the positive of row i is column i
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


from vlm_primer.contrastive import ClipLoss, SigLipLoss

g = torch.Generator().manual_seed(0)
img = F.normalize(torch.randn(16, 32, generator=g), dim=-1)
txt = F.normalize(img + 0.8 * torch.randn(16, 32, generator=g), dim=-1)
scale = torch.tensor(1 / 0.07)
ours, package = my_clip_loss(img, txt, scale), ClipLoss()(img, txt, scale)
print(f"inline CLIP loss {ours:.6f}   vlm_primer ClipLoss {package:.6f}")
assert torch.allclose(ours, package, atol=1e-6)

# %% [markdown]
# ### SimCLR: positives by augmentation
#
# The same loss works inside one modality. **SimCLR** {cite:p}`chen2020simclr` has no captions: the
# positive of an image is a second *augmented view* of it (random crop and resize, flip, colour
# jitter, blur), and the negatives are the views of every other image. With $B$ images and two views
# each, every one of the $2B$ views is classified against the other $2B - 1$ (NT-Xent, "normalised
# temperature-scaled cross-entropy"):
#
# $$\ell_{i} = -\log \frac{\exp(\cos(z_i, z_{i'})/\tau)}{\sum_{k \neq i} \exp(\cos(z_i, z_k)/\tau)},$$
#
# where $i'$ is the other view of the same image. Two differences from CLIP: a view's negatives
# include views *of its own modality* (CLIP scores images only against captions), and what the model
# learns to ignore is chosen by hand — the augmentations. A colour-jittered positive teaches
# invariance to colour, which is right for ImageNet objects and wrong for "a red circle". CLIP lets
# language say what matters, which is why the survey presents it as the bridge from self-supervised
# vision to vision–language models.


# %%
def my_nt_xent(view1: torch.Tensor, view2: torch.Tensor, tau: float) -> torch.Tensor:
    z = F.normalize(torch.cat([view1, view2]), dim=-1)              # (2B, D)
    logits = z @ z.t() / tau
    logits.fill_diagonal_(float("-inf"))                            # a view is not its own negative
    b = view1.shape[0]
    targets = torch.cat([torch.arange(b) + b, torch.arange(b)])     # view i's positive is view i'
    return F.cross_entropy(logits, targets)


from vlm_primer.contrastive import nt_xent_loss

ours, package = my_nt_xent(img, txt, 0.1), nt_xent_loss(img, txt, 0.1)
print(f"inline NT-Xent {ours:.6f}   vlm_primer nt_xent_loss {package:.6f}")
assert torch.allclose(ours, package, atol=1e-6)

# %% [markdown]
# The augmentations decide what counts as "the same image". We can see it without training anything:
# take the image tower of the zoo's `clip-tiny` (trained below, §Training a tiny CLIP) and score two
# views of 64 Shapes World images with NT-Xent. With views that **shift and flip** the image, the
# trained tower recognises the pairs; a randomly initialised tower of the same shape is the control,
# and sits at the loss of a model that knows nothing, $\log(2B - 1)$. With views that also **permute
# the colour channels** (a crude colour jitter), the same trained tower does worse than chance: it
# learned from captions that colour matters, and these positives say it does not.

# %%
from vlm_primer import zoo
from vlm_primer.contrastive import CLIP
from vlm_primer.world import ShapesCaptionDataset, WorldConfig

zoo_card = zoo.card("clip-tiny")
zoo_tower, zoo_norm = zoo.load("clip-tiny"), zoo.preprocess("clip-tiny")
seed_everything(0)
random_tower = CLIP(zoo_tower.cfg).eval()
views_ds = ShapesCaptionDataset("val", 64, WorldConfig(**zoo_card["preprocess"]["world"]), num_objects=1,
                                statements=False)
view_images = torch.stack([views_ds[i]["image"] for i in range(64)])
view_gen = torch.Generator().manual_seed(0)


def augment(images: torch.Tensor, colour: bool = False) -> torch.Tensor:
    """One random view per image: a shift of up to 4 px and a flip (and a channel permutation)."""
    out = []
    for im in images:
        dy, dx = torch.randint(-4, 5, (2,), generator=view_gen).tolist()
        im = torch.roll(im, (dy, dx), dims=(1, 2))
        if torch.rand((), generator=view_gen) < 0.5:
            im = im.flip(2)
        if colour:
            im = im[torch.randperm(3, generator=view_gen)]
        out.append(im)
    return zoo_norm(torch.stack(out))


simclr_chance = math.log(2 * len(view_images) - 1)
simclr = {}
for colour in (False, True):
    v1, v2 = augment(view_images, colour), augment(view_images, colour)
    with torch.no_grad():
        for name, tower in (("clip-tiny", zoo_tower), ("random init", random_tower)):
            simclr[name, colour] = nt_xent_loss(tower.encode_image(v1), tower.encode_image(v2), 0.1).item()
print(f"NT-Xent (tau = 0.1, {len(view_images)} images); a model that knows nothing: log(2B - 1) = {simclr_chance:.2f}")
for colour in (False, True):
    print(f"  views: shift + flip{' + colour permutation' if colour else '':22s} clip-tiny {simclr['clip-tiny', colour]:.2f}"
          f"   random init {simclr['random init', colour]:.2f}")
assert abs(simclr["random init", False] - simclr_chance) < 0.1, "the control sits at chance"
assert simclr["clip-tiny", False] < simclr_chance - 1 and simclr["clip-tiny", True] > simclr_chance

# %% [markdown]
# ### SigLIP: the sigmoid loss
#
# The softmax couples every pair in the batch through its normaliser: the loss of one image depends on
# all the captions, so across GPUs every device gathers the embeddings of all the others to compute
# its rows of the softmax. **SigLIP** {cite:p}`zhai2023siglip` goes back to a *binary*, NCE-like
# classification (without NCE's noise-ratio correction $\log(\nu\,p_n)$; its learned bias $b$ plays
# that part): every image–caption pair of the batch is an independent yes/no question, "do these
# match?", with label $\ell_{ij} = +1$ on the diagonal and $-1$ elsewhere:
#
# $$\mathcal{L}_{\text{SigLIP}} = -\frac1N \sum_{i=1}^N\sum_{j=1}^N
#   \log \sigma\!\big(\ell_{ij}\,(t\, \cos(z_i^{img}, z_j^{txt}) + b)\big).$$
#
# Mind the two names. CLIP's **temperature** $\tau$ *divides* the cosines ($\tau = 0.07$ means a
# scale of about 14); SigLIP's $t$ *multiplies* them: it is a **logit scale**, an inverse temperature,
# and this book never calls it a temperature. The learned scale $t$ starts at 10 and the learned
# **bias** $b$ at $-10$: with $N^2 - N$
# negatives and only $N$ positives, a strongly negative prior keeps the start of training from being
# dominated by the easy negatives. No normaliser over the batch means no all-to-all gather and —
# the paper's and the survey's claim, which we test below — better results at small batch sizes.


# %%
def my_siglip_loss(img: torch.Tensor, txt: torch.Tensor, t: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    logits = t * img @ txt.t() + b
    ell = 2 * torch.eye(img.shape[0]) - 1         # the labels ℓ_ij: +1 on the diagonal, -1 elsewhere
    return -F.logsigmoid(ell * logits).sum() / img.shape[0]


t, b = torch.tensor(10.0), torch.tensor(-10.0)
ours, package = my_siglip_loss(img, txt, t, b), SigLipLoss()(img, txt, t, b)
print(f"inline SigLIP loss {ours:.6f}   vlm_primer SigLipLoss {package:.6f}")
assert torch.allclose(ours, package, atol=1e-5)

# %% [markdown]
# ### Playing with the temperature
#
# The widget shows a batch of 8 pairs: the cosine similarity matrix (left), the row-wise softmax
# $p(\text{caption } k \mid \text{image } i)$ at temperature $\tau$ (middle), and the loss as a
# function of $\tau$ (right). The embeddings are synthetic: caption $i$ is image $i$ plus noise, and
# pairs 0–1 are near-duplicates (a {term}`false negative`, like two photos both captioned "a dog").
# Drag the slider: a small $\tau$ turns the softmax into a hard argmax — great when the positives are
# clearly the most similar, but it also punishes the near-duplicate pair hard.

# %%
import ipywidgets as widgets
from IPython.display import display

gw = torch.Generator().manual_seed(1)
w_img = torch.randn(8, 16, generator=gw)
w_img[1] = w_img[0] + 0.3 * torch.randn(16, generator=gw)      # near-duplicate images 0 and 1
w_img = F.normalize(w_img, dim=-1)
w_txt = F.normalize(w_img + 0.35 * torch.randn(8, 16, generator=gw), dim=-1)
w_cos = w_img @ w_txt.t()
taus = np.geomspace(0.01, 2.0, 60)
loss_curve = [my_clip_loss(w_img, w_txt, torch.tensor(1 / tau)).item() for tau in taus]


def show_temperature(tau: float = 0.07) -> float:
    """Draw similarity, row softmax and loss at temperature ``tau``; return the loss."""
    loss = my_clip_loss(w_img, w_txt, torch.tensor(1 / tau)).item()
    probs = (w_cos / tau).softmax(dim=1)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    im = axes[0].imshow(w_cos, cmap="RdBu_r", vmin=-1, vmax=1)
    axes[0].set_title("cosine similarity (image i, caption k)")
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    im = axes[1].imshow(probs, cmap="viridis", vmin=0, vmax=1)
    axes[1].set_title(f"row softmax at τ = {tau:.3f}")
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    for ax in axes[:2]:
        ax.set_xlabel("caption k")
        ax.set_ylabel("image i")
    axes[2].plot(taus, loss_curve)
    axes[2].axvline(tau, color="C3", ls="--")
    axes[2].set_xscale("log")
    axes[2].set_xlabel("temperature τ")
    axes[2].set_ylabel("CLIP loss")
    axes[2].set_title(f"loss = {loss:.3f}")
    plt.tight_layout()
    plt.show()
    return loss


slider = widgets.FloatLogSlider(value=0.07, base=10, min=-2, max=math.log10(2.0), step=0.05,
                                description="τ", continuous_update=False)
display(widgets.interactive(show_temperature, tau=slider))
loss_007 = my_clip_loss(w_img, w_txt, torch.tensor(1 / 0.07)).item()
best_tau = float(taus[int(np.argmin(loss_curve))])
print(f"loss at τ=0.07: {loss_007:.3f}; the loss of this batch is smallest at τ ≈ {best_tau:.3f}")
assert loss_curve[0] > min(loss_curve) and loss_curve[-1] > min(loss_curve), "the loss is U-shaped in τ"

# %% [markdown]
# The loss is U-shaped in $\tau$: too hot and every caption looks alike (the loss tends to
# $\log N$), too cold and the near-duplicate pair is punished without mercy. CLIP learns $\tau$
# together with the encoders.

# %% [markdown]
# ## The two towers
#
# Before training anything, here are the two encoders every model of this chapter shares. They live
# in `vlm_primer.nn` and are tested weight-for-weight against `transformers`' `CLIPVisionModel` and
# `CLIPTextModel` (`tests/test_parity_towers.py`).
#
# ### Attention
#
# Scaled dot-product attention mixes the value vectors $V$ with weights given by how well each query
# matches each key: $\operatorname{softmax}(QK^\top/\sqrt{d})\,V$. Multi-head attention runs $h$ of
# these in parallel on slices of width $d = D/h$. Written out in four lines, it equals the package's
# `Attention` (which calls `F.scaled_dot_product_attention` and so uses fused kernels on GPUs):

# %%
import torch
from einops import rearrange

from vlm_primer.nn import Attention

demo_attn = Attention(dim=32, heads=4).eval()
demo_x = torch.randn(2, 5, 32)
demo_q, demo_k, demo_v = (rearrange(proj(demo_x), "b n (h d) -> b h n d", h=4)
                          for proj in (demo_attn.q, demo_attn.k, demo_attn.v))
demo_w = (demo_q @ demo_k.transpose(-1, -2) / demo_q.shape[-1] ** 0.5).softmax(dim=-1)  # (b, h, n, n)
demo_by_hand = demo_attn.out(rearrange(demo_w @ demo_v, "b h n d -> b n (h d)"))
demo_gap = (demo_by_hand - demo_attn(demo_x)).abs().max().item()
print(f"attention by hand vs vlm_primer.nn.Attention: max |difference| = {demo_gap:.1e}")
assert demo_gap <= 1e-6

# %% [markdown]
# ### Transformer blocks
#
# A pre-LN transformer block is two residual updates, $x \leftarrow x + \mathrm{Attn}(\mathrm{LN}(x))$
# and $x \leftarrow x + \mathrm{MLP}(\mathrm{LN}(x))$. The text tower makes attention *causal* (token
# $i$ sees tokens $\le i$), as CLIP does; the image tower lets every patch see every patch.
#
# ### Positions
#
# Attention is blind to order, so both towers add a position embedding to every token. Ours are
# learned (like CLIP's); `vlm_primer.nn.pos.sincos_2d` gives the fixed 2-D sine-cosine table that MAE
# uses (chapter 03). Nearby patches get similar codes:

# %%
import matplotlib.pyplot as plt

from vlm_primer.nn.pos import sincos_2d

pos_table = sincos_2d(8, 8, 64)  # an 8x8 grid of patches, 64-dim codes
pos_sim = torch.nn.functional.normalize(pos_table, dim=-1) @ torch.nn.functional.normalize(pos_table, dim=-1).T
pos_fig, pos_axes = plt.subplots(1, 3, figsize=(9, 3))
for pos_ax, pos_patch in zip(pos_axes, (0, 27, 63)):
    pos_ax.imshow(pos_sim[pos_patch].reshape(8, 8), cmap="viridis")
    pos_ax.set_title(f"similarity to patch {pos_patch}")
    pos_ax.axis("off")
plt.tight_layout()
plt.show()
assert pos_sim[27].reshape(8, 8).argmax() == 27

# %% [markdown]
# ### ViT
#
# The Vision Transformer cuts the image into $P\times P$ patches, embeds each patch linearly (a
# convolution with stride $P$), prepends a learned CLS token, adds positions and runs the blocks. A
# 48×48 Shapes World image with 6-pixel patches (this chapter's `tiny` setting) becomes
# $8\times 8 = 64$ tokens (+ CLS).
#
# ### Text encoder
#
# The text tower embeds token ids, adds learned positions, runs causal blocks and a final layer norm.
#
# ### Pooling
#
# Each tower must summarise its tokens into one vector. CLIP's ViT takes the CLS token; CLIP's text
# tower takes the hidden state at the end-of-text token `<eos>` (the only position that has seen the
# whole caption under the causal mask); SigLIP's ViT uses attention pooling (a learned query attends
# over all patches: the MAP head, `vlm_primer.nn.AttentionPool`).

# %%
from vlm_primer.nn import TextConfig, TextTransformer, ViT, ViTConfig
from vlm_primer.nn.text import pool_positions
from vlm_primer.text import Tokenizer

demo_vit = ViT(ViTConfig.from_preset(SCALE)).eval()
demo_images = torch.rand(2, 3, demo_vit.cfg.image_size, demo_vit.cfg.image_size)
demo_out = demo_vit(demo_images)
print("ViT tokens:", tuple(demo_out.last_hidden_state.shape), "-> pooled", tuple(demo_out.pooled.shape))

demo_tok = Tokenizer.load()
demo_text = TextTransformer(TextConfig.from_preset(SCALE, vocab_size=demo_tok.vocab_size)).eval()
demo_batch = demo_tok(["a small red circle", "there is a large blue star left of a green square"])
demo_eos_pos = pool_positions(demo_batch["input_ids"], demo_batch["attention_mask"], "eos",
                              demo_text.cfg.eos_token_id)
print("text tokens:", tuple(demo_batch["input_ids"].shape), "pooled at <eos> positions", demo_eos_pos.tolist())
assert (demo_batch["input_ids"].gather(1, demo_eos_pos[:, None]).squeeze(1) == demo_tok.eos_id).all()

# %% [markdown]
# ## Shapes World pairs
#
# We train on Shapes World (chapter 01): every image is rendered from a scene graph, and its caption
# is written from the same graph with templates and synonyms ("a big violet rhombus", "there is a
# large purple diamond"). Six colour–shape pairs (e.g. *red triangle*) are **held out**: they never
# occur in the training, validation or test splits, only in the `compositional` split.
#
# The chapter's settings depend on the scale knob. At `tiny` we render 48×48 images cut into 6-pixel
# patches (an 8×8 grid, so 64 image tokens) and keep the objects large (a *small* star at 48 px is
# eight pixels across); the `small` and `base` scales use the model presets' own image size and both
# object sizes.

# %%
from vlm_primer.contrastive import CLIP, CLIPConfig, Llip, LlipConfig
from vlm_primer.contrastive.recipes import pair_collate
from vlm_primer.evaluation import build_classifier, retrieval_metrics, seed_verdict, zero_shot_accuracy
from vlm_primer.text import Tokenizer
from vlm_primer.training import ResumableLoader, TrainConfig, Trainer
from vlm_primer.world import COLORS, SHAPES, ShapesCaptionDataset, WorldConfig, split_scene
from vlm_primer.world.splits import split_compositions

SETTINGS = {
    "tiny": dict(image_size=48, patch_size=6, depth=2, text_depth=4, sizes=("large",), steps=2000, live_steps=500,
                 batch_size=32, lr=2e-3, warmup=20, sweep_pairs=2048, n_test=500),
    "small": dict(image_size=64, patch_size=8, depth=6, text_depth=6, sizes=("small", "large"), steps=3000, live_steps=3000,
                  batch_size=128, lr=1e-3, warmup=200, sweep_pairs=64_000, n_test=2000),
    "base": dict(image_size=224, patch_size=16, depth=12, text_depth=12, sizes=("small", "large"), steps=20_000,
                 live_steps=20_000,
                 batch_size=256, lr=5e-4, warmup=2000, sweep_pairs=512_000, n_test=5000),
}[SCALE]
S = SETTINGS
CONTEXT = 16                                   # tokens: enough for every caption we use (checked below)
tokenizer = Tokenizer.load()
world = WorldConfig(image_size=S["image_size"], sizes=S["sizes"])

# Normalise pixels with the mean/std of the training images, as CLIP does with its dataset statistics.
probe = torch.stack([ShapesCaptionDataset("train", 256, world, num_objects=1, statements=False)[i]["image"]
                     for i in range(256)])
MEAN, STD = probe.mean(dim=(0, 2, 3)).view(3, 1, 1), probe.std(dim=(0, 2, 3)).view(3, 1, 1)


def normalize(image: torch.Tensor) -> torch.Tensor:
    return (image - MEAN) / STD


def dataset(split: str, size: int, num_objects=1, **kw) -> ShapesCaptionDataset:
    return ShapesCaptionDataset(split, size, world, num_objects=num_objects, statements=False,
                                transform=normalize, **kw)


from vlm_primer.world import DEFAULT_HELD_OUT
from vlm_primer.world.vocab import SIZE_RADIUS

print(f"a small object at {S['image_size']} px is {2 * SIZE_RADIUS['small'] * S['image_size']:.1f} px across, "
      f"a large one {2 * SIZE_RADIUS['large'] * S['image_size']:.1f} px; object sizes used: {S['sizes']}")
print(f"held-out compositions ({len(DEFAULT_HELD_OUT)}):", ", ".join(f"{c} {s}" for c, s in DEFAULT_HELD_OUT))
assert len(DEFAULT_HELD_OUT) == 6

show = ShapesCaptionDataset("train", 8, world, num_objects=1, statements=False)
fig, axes = plt.subplots(1, 8, figsize=(16, 2.6))
for ax, i in zip(axes, range(8)):
    item = show[i]
    ax.imshow(item["image"].permute(1, 2, 0))
    ax.set_title(item["caption"].replace(" a ", "\na ", 1), fontsize=8)
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Training a tiny CLIP
#
# The model is the real CLIP architecture — a ViT image tower (CLS token, `ln_pre`, `ln_post`), a
# causal text transformer pooled at the end-of-text token, bias-free projections into a shared space
# and a learned temperature — at the `tiny` size. The training data are drawn fresh: every step sees
# new scenes (item $i$ of a split is a pure function of the seed and $i$, so nothing is stored).
# That matters: with a small fixed set of images a ViT learns a shortcut — *where* a red object sits
# identifies the training image, and therefore its shape — instead of learning shapes.
#
# **No false negatives.** InfoNCE treats every other caption in the batch as a negative. With 42
# training compositions, a batch of 32 random pairs almost always holds several pairs with the same
# meaning ("a big red circle" and "there is a large red disk"): the loss then pushes an image away
# from a caption that describes it exactly, and the only signal that separates *red circle* from
# *red square* is drowned in that noise. Web-scale data rarely repeats a caption inside a batch;
# Shapes World, with its 42 meanings, does all the time. So we build each batch from distinct
# compositions: `ShapesCaptionDataset(..., distinct=B)` makes every block of $B$ consecutive items
# show $B$ different colour–shape pairs, and the loader reads the blocks in order. The loss is still
# CLIP's, unchanged; only the batches are curated (the cell below counts what random batches repeat).
#
# The project's `Trainer` runs AdamW with a cosine schedule, clamps the temperature after each step
# (`CLIP.post_step`) and draws a live loss curve. It takes its data in three forms: a dataset of samples, which
# it batches itself; a `ResumableLoader`, as below (batches in an order a checkpoint can resume); or any
# iterable of ready-made batches (a list of them wrapped in `Batches`: a plain list is read as a dataset of
# samples and batched again). At `tiny` the chapter's two-minute budget leaves
# room for a short run (500 steps) of the recipe; the full run, 2,000 steps, is the zoo's `clip-tiny`
# (chapter 00, §The zoo), loaded right after it. At `small` and `base` the live run is the full run.


# %%
def clip_config(kind=CLIPConfig, **extra):
    cfg = kind.from_preset(SCALE)
    vision = cfg.vision.replace(image_size=S["image_size"], patch_size=S["patch_size"], depth=S["depth"])
    text = cfg.text.replace(context_length=CONTEXT, vocab_size=tokenizer.vocab_size, depth=S["text_depth"])
    if SCALE == "base":  # the paper towers; point the text tower at our tokenizer
        text = text.replace(pool="eos" if text.pool == "argmax" else text.pool, eos_token_id=tokenizer.eos_id,
                            pad_token_id=tokenizer.pad_id)
    return cfg.replace(vision=vision, text=text, **extra)


collate = pair_collate(tokenizer, CONTEXT, S["image_size"])


N_COMPOSITIONS = len(split_compositions("train", world)[0])   # 48 minus the 6 held out
assert N_COMPOSITIONS == 42


def train(model, steps, batch_size, lr, *, distinct=None, seed=0, progress=True, live_plot="auto", num_objects=1):
    """Train on fresh Shapes World pairs (single-object unless ``num_objects``); return the Trainer's history.

    ``distinct``: batches of distinct compositions (read in order), else random batches; by default
    distinct whenever a batch fits in the 42 training compositions.
    """
    distinct = batch_size <= N_COMPOSITIONS if distinct is None else distinct
    data = dataset("train", steps * batch_size, num_objects, seed=seed, num_paraphrases=1,
                   distinct=batch_size if distinct else None)
    config = TrainConfig.from_preset(SCALE, max_steps=steps, batch_size=batch_size, lr=lr,
                                     warmup_steps=min(S["warmup"], steps // 5), weight_decay=0.2, eps=1e-6,
                                     log_every=max(1, steps // 30), seed=seed, progress=progress,
                                     live_plot=live_plot, device="cpu" if SCALE == "tiny" else "auto")
    loader = ResumableLoader(data, batch_size, collate_fn=collate, shuffle=not distinct, seed=seed)
    return Trainer(model, loader, config).fit()


def repeats(batch_labels: list[str]) -> int:
    """Pairs in a batch whose composition another pair of the batch already has."""
    return len(batch_labels) - len(set(batch_labels))


B = min(S["batch_size"], N_COMPOSITIONS)
random_batches = [[split_scene("train", b * B + j, 0, world, 1)[0].objects[0].composition for j in range(B)]
                  for b in range(50)]
distinct_batches = [[split_scene("train", b * B + j, 0, world, 1, distinct=B)[0].objects[0].composition
                     for j in range(B)] for b in range(50)]
mean_repeats = np.mean([repeats(b) for b in random_batches])
print(f"random batches of {B}: on average {mean_repeats:.1f} pairs repeat a composition already in the batch "
      f"(false negatives for InfoNCE); distinct batches: {max(repeats(b) for b in distinct_batches)}")
assert mean_repeats > 3 and max(repeats(b) for b in distinct_batches) == 0


seed_everything(SEED)
clip = CLIP(clip_config())
n_params = sum(p.numel() for p in clip.parameters())
print(f"CLIP ({SCALE}): {n_params / 1e6:.2f} M parameters, {S['image_size']} px images, "
      f"{S['live_steps']} steps of {S['batch_size']} pairs")
t0 = time.time()
history = train(clip, S["live_steps"], S["batch_size"], S["lr"], seed=SEED)
train_seconds = time.time() - t0
print(f"trained in {train_seconds:.0f} s; final loss {history[-1]['loss']:.3f}, "
      f"temperature τ = {1 / clip.logit_scale.exp().item():.4f}")
assert history[-1]["loss"] < history[0]["loss"] / 2

# %% [markdown]
# The full run. The zoo's card records the model config, the recipe and the command that rebuilds
# it; the cell checks that the config (the card's, with any field added since at its default) and the pixel
# statistics are this chapter's before loading.

# %%
import json

live_clip = clip
if SCALE == "tiny":
    card = zoo.card("clip-tiny")
    assert type(clip.cfg)(**card["config"]) == clip.cfg, "the zoo model is this chapter's recipe"
    assert torch.allclose(torch.tensor(card["preprocess"]["mean"]), MEAN.flatten(), atol=1e-5)
    assert torch.allclose(torch.tensor(card["preprocess"]["std"]), STD.flatten(), atol=1e-5)
    clip = zoo.load("clip-tiny")
    print(f"clip-tiny: {card['recipe']['doc']}\n  trained in {card['train_seconds']:.0f} s on {card['trained_on']}; "
          f"rebuild: {card['command']}")

# %% [markdown]
# ## Zero-shot classification
#
# CLIP classifies without a classifier: write each class name into prompts ("a picture of a red
# circle"), encode them with the text tower, average the normalised prompt embeddings of each class
# (a **prompt ensemble**) and assign each image to the class whose text embedding is most similar.
# Here the classes are all $8 \times 6 = 48$ colour–shape names, and the images are single-object
# scenes of the **test** split, which the model never saw.

# %%
TEMPLATES = ["a {}", "a large {}", "a big {}", "there is a {}", "a picture of a {}", "the image shows a {}",
             "an image showing a {}"]
test = dataset("test", S["n_test"])
test_items = [test[i] for i in range(len(test))]
test_images = torch.stack([it["image"] for it in test_items])
test_labels = torch.tensor([it["label_id"] for it in test_items])
classnames = test.classnames
assert len(classnames) == len(COLORS) * len(SHAPES) == 48 and len(TEMPLATES) == 7
classifier = build_classifier(clip, tokenizer, classnames, TEMPLATES)
result = zero_shot_accuracy(clip, test_images, test_labels, classifier, topk=(1, 5))
acc = result["top1"]
print(f"zero-shot top-1 on {len(test)} test scenes, {len(classnames)} classes: {acc:.1%} (top-5 {result['top5']:.1%})")
assert acc >= 0.90, f"tiny CLIP should reach 90 % zero-shot top-1, got {acc:.1%}"
if live_clip is not clip:
    live_acc = zero_shot_accuracy(live_clip, test_images, test_labels,
                                  build_classifier(live_clip, tokenizer, classnames, TEMPLATES), topk=(1,))["top1"]
    print(f"the live run ({S['live_steps']} steps): {live_acc:.1%}; chance: {1 / len(classnames):.1%}")
    assert 10 / len(classnames) < live_acc < acc

# %% [markdown]
# Is this really *zero-shot*? In CLIP's sense, yes: no classifier was trained, the classes are
# defined by text alone, and the test images are new. But the 48 class prompts use exactly the words
# of the training captions, and the test scenes show colour–shape compositions the model saw in
# training. The real zero-shot test is the held-out compositions — pairs such as *red triangle* that
# never occurred in training — which §Compositionality reports beside this number.
#
# How much does that number depend on luck? The zoo model was trained from seed 0, but the benchmark's seed-0
# run of the same recipe does not reproduce it bit for bit (its zero-shot top-1 is printed below beside the
# card's; the two were made in different process set-ups, and 2,000 steps amplify round-off), so read the zoo
# model as one more draw of the recipe. The runs of this chapter that do not fit in its budget — the recipe at
# several seeds, and the comparisons further down — are in `benchmarks/bench_contrastive_seeds.py`; its results
# file is read here, with the command that made it.

# %%
def spread(values: list[float]) -> float:
    """max - min over seeds: the noise band a difference must clear before it is a finding."""
    return max(values) - min(values)


BENCH_FILE = zoo.ZOO_DIR.parents[1] / "benchmarks" / "results" / "contrastive_seeds.json"
bench = json.loads(BENCH_FILE.read_text())


def bench_values(kind: str, key: str = "zero_shot_top1") -> list[float]:
    return [r[key] for r in bench["runs"] if r["kind"] == kind]


print(f"{BENCH_FILE.name}: `{bench['command']}` ({bench['date']}; {bench['machine']}; {bench['minutes']} min)")
for rerun in bench.get("reruns", []):   # a later run of some parts (--only)
    print(f"  then `{rerun['command']}` ({rerun['date']}; {rerun['minutes']} min)")
seed_accs = bench_values("zeroshot")
print(f"clip-tiny's recipe, seeds {bench['seeds']}: zero-shot top-1 " + ", ".join(f"{a:.1%}" for a in seed_accs)
      + f" on the zoo's 480 test scenes; spread {spread(seed_accs):.1%}; the zoo file's card "
      + f"{zoo.card('clip-tiny')['quality']['zero_shot_top1']:.1%}")
assert len(seed_accs) >= 3 and min(seed_accs) >= 0.85

# %% [markdown]
# The confusion matrix shows which classes are mixed up: colour is nearly perfect, and most of the
# remaining errors are between shapes of the same colour (both printed below the plot).

# %%
from vlm_primer.evaluation import zero_shot_classify

pred = zero_shot_classify(clip, test_images, classifier).argmax(dim=1)
conf = torch.zeros(len(classnames), len(classnames))
for t_, p_ in zip(test_labels, pred):
    conf[t_, p_] += 1
color_acc = np.mean([classnames[p].split()[0] == classnames[t].split()[0] for t, p in zip(test_labels, pred)])
shape_acc = np.mean([classnames[p].split()[1] == classnames[t].split()[1] for t, p in zip(test_labels, pred)])
fig, ax = plt.subplots(figsize=(7, 6))
ax.imshow(conf / conf.sum(1, keepdim=True).clamp_min(1), cmap="Blues")
ax.set_xticks(range(0, 48, 6), [c for c in COLORS], rotation=45)
ax.set_yticks(range(0, 48, 6), [c for c in COLORS])
ax.set_xlabel("predicted (6 shapes per colour)")
ax.set_ylabel("true")
ax.set_title(f"zero-shot confusion: colour {color_acc:.1%}, shape {shape_acc:.1%}")
plt.tight_layout()
plt.show()
wrong = [(t, p) for t, p in zip(test_labels.tolist(), pred.tolist()) if t != p]
same_colour = np.mean([classnames[p].split()[0] == classnames[t].split()[0] for t, p in wrong]) if wrong else 1.0
print(f"colour right {color_acc:.1%}, shape right {shape_acc:.1%}; of the {len(wrong)} errors, "
      f"{same_colour:.0%} are a wrong shape of the right colour")
assert color_acc > 0.98 and color_acc > shape_acc and same_colour > 0.5

# %% [markdown]
# ## Retrieval
#
# Retrieval ranks all captions for an image (image → text) or all images for a caption
# (text → image). Each test image comes with several paraphrases of its caption; an image counts as a
# hit at $K$ if any of its captions is in the top $K$. Many test images share the same description
# (there are only 48 colour–shape pairs), so a model that knows each image's class but nothing else
# cannot know *which* of several red stars a caption was written for. The cell computes what such a
# class-perfect model would score at {term}`Recall@K` $K=1$ (ties broken at random) and prints it
# beside ours: that bound, not 100 %, is the ceiling for R@1 here.

# %%
n_ret = 200
ret_images = test_images[:n_ret]
ret_captions, text_to_image = [], []
for i, it in enumerate(test_items[:n_ret]):
    ret_captions += it["captions"]
    text_to_image += [i] * len(it["captions"])
with torch.no_grad():
    enc = tokenizer(ret_captions, max_length=CONTEXT)
    img_emb = clip.eval().encode_image(ret_images)
    txt_emb = clip.encode_text(enc["input_ids"], enc["attention_mask"])
recall = retrieval_metrics(img_emb, txt_emb, torch.tensor(text_to_image), ks=(1, 5, 10))
# A model that only knows the class of each image: the best it can do is rank the right class first.
same = torch.tensor([[test_labels[i] == test_labels[j] for j in range(n_ret)] for i in range(n_ret)])
caps_per_image = torch.bincount(torch.tensor(text_to_image), minlength=n_ret).float()
# Image -> text: its own captions among all the captions of its class; text -> image: 1 of the class's images.
bound_i2t = (caps_per_image / (same.float() @ caps_per_image)).mean().item()
bound_t2i = (1 / same.sum(1).float())[torch.tensor(text_to_image)].mean().item()
print(f"{n_ret} images, {len(ret_captions)} captions; images per class on average: {same.sum(1).float().mean():.1f}")
for k, v in recall.items():
    print(f"  {k:10s} {v:.1%}")
print(f"a class-perfect model that sees nothing else: i2t_R@1 {bound_i2t:.1%}, t2i_R@1 {bound_t2i:.1%}")
assert bound_i2t < 0.5 and bound_t2i < 0.5, "R@1 is bounded well below 1 by the repeated classes"
assert recall["i2t_R@10"] > 0.6 and recall["t2i_R@10"] > 0.8

# %% [markdown]
# ## Prompt engineering, measured
#
# The survey (§4.1.5) reports that the prompt matters: templates such as "a photo of a {}" beat the
# bare class name, and replacing a class name by its most frequent synonym helps further. We compare
# four classifiers built from the same trained model:
#
# * **bare**: the class name alone, "red circle";
# * **ensemble**: the seven templates above, averaged;
# * **ensemble + most frequent synonym**: the same templates with the colour and shape words replaced
#   by their most frequent synonym in the training captions (counted below) — the survey's claim;
# * **ensemble + all synonyms**: the templates filled with every synonym the caption grammar uses
#   ("violet disk", "purple circle", ...), all averaged.

# %%
from vlm_primer.world.vocab import COLOR_WORDS, SHAPE_WORDS


def synonym_templates(classname: str) -> list[str]:
    return [t.format(f"{c} {s}") for t in TEMPLATES for c in COLOR_WORDS[classname.split()[0]]
            for s in SHAPE_WORDS[classname.split()[1]]]


prompt_results = {}
for name, templates in [("bare", ["{}"]), ("ensemble", TEMPLATES)]:
    clf = build_classifier(clip, tokenizer, classnames, templates)
    prompt_results[name] = zero_shot_accuracy(clip, test_images, test_labels, clf, topk=(1,))["top1"]
# The most frequent synonym of each colour and shape word in 2,000 training captions.
from collections import Counter

train_sample = dataset("train", 2000)
train_words = Counter(w for i in range(len(train_sample)) for w in train_sample[i]["caption"].split())
frequent = {name: max(words, key=lambda w: train_words[w]) for name, words in {**COLOR_WORDS, **SHAPE_WORDS}.items()}
print("synonym counts:", {w: train_words[w] for words in (*COLOR_WORDS.values(), *SHAPE_WORDS.values())
                          if len(words) > 1 for w in words})
frequent_names = [" ".join(frequent[w] for w in c.split()) for c in classnames]
clf = build_classifier(clip, tokenizer, frequent_names, TEMPLATES)
prompt_results["ensemble + most frequent synonym"] = zero_shot_accuracy(clip, test_images, test_labels, clf,
                                                                        topk=(1,))["top1"]
# All synonyms: one classifier row per class from all its synonym prompts.
rows = [build_classifier(clip, tokenizer, [c], [lambda _, p=p: p for p in synonym_templates(c)])[0] for c in classnames]
prompt_results["ensemble + all synonyms"] = zero_shot_accuracy(clip, test_images, test_labels, torch.stack(rows),
                                                               topk=(1,))["top1"]
for name, a in prompt_results.items():
    print(f"{name:34s} {a:.1%}")
fig, ax = plt.subplots(figsize=(7.5, 3.4))
ax.bar([n.replace(" + ", "\n+ ") for n in prompt_results], list(prompt_results.values()),
       color=["#cbd5e1", "#60a5fa", "#2563eb", "#1e3a8a"])
ax.set_ylim(0, 1)
ax.set_ylabel("zero-shot top-1")
ax.set_title("prompt engineering on the tiny CLIP")
plt.tight_layout()
plt.show()
best_prompt = max(prompt_results, key=prompt_results.get)
print(f"best: {best_prompt}; ensemble - bare = {prompt_results['ensemble'] - prompt_results['bare']:+.1%}")
def noise_band(n: int, difference: bool = False) -> float:
    """Two binomial standard errors at p = 0.5 over ``n`` items: of one accuracy, or of a difference of two."""
    return 2 * math.sqrt((2 if difference else 1) * 0.25 / n)


# The ensemble must beat the bare name by more than the noise of a difference of two accuracies on these test
# images (about 6.3 points at n = 500).
prompt_noise = noise_band(len(test), difference=True)
assert prompt_results["ensemble"] - prompt_results["bare"] > prompt_noise, (
    f"ensemble - bare = {prompt_results['ensemble'] - prompt_results['bare']:+.1%}, noise {prompt_noise:.1%}")
synonym_change = prompt_results["ensemble + most frequent synonym"] - prompt_results["ensemble"]
print(f"most frequent synonym - ensemble: {synonym_change:+.1%}; the noise of a difference at n = {len(test)}: "
      f"±{prompt_noise:.1%}")
assert abs(synonym_change) <= prompt_noise

# %% [markdown]
# Whether the bare class name hurts depends on how different it is from the training captions: our
# captions always start with an article or a phrase, so the text tower never saw a bare "red circle",
# and the bare classifier loses the points printed above. Swapping in the most frequent synonym
# changes the accuracy by less than the sampling noise of 500 test images (both printed above): the
# caption grammar draws synonyms uniformly (the counts are printed), so no synonym is *the* word the
# model knows best. The survey's gain comes from web text, where a dataset's class name is often not
# the word people write. With web-scale data the template effect is what makes
# "a photo of a {}" worth a few points on ImageNet.
#
# ## Robustness under distribution shift
#
# CLIP's paper {cite:p}`radford2021clip` (§3.3) reports that zero-shot CLIP is much more robust to
# natural distribution shifts (ImageNet-V2, -R, -Sketch, -A, ObjectNet, ...) than models trained on
# ImageNet: zero-shot CLIP reduces the gap between ImageNet accuracy and accuracy under shift by up
# to 75 %. The measure is {term}`effective robustness` {cite:p}`taori2020shift`: accuracy under shift
# *beyond* what the model's in-distribution accuracy predicts, since better models are usually better
# everywhere. The same paper shows the other side: fitting a logistic-regression classifier on CLIP's
# features to ImageNet raises ImageNet accuracy by 9.2 points but slightly *lowers* the average
# accuracy over the shifted sets.
#
# Shapes World can make shifts of its own: objects **rotated** (training objects are upright),
# **striped** instead of solid, a **lighter background**, and **pixel noise**. We compare two
# classifiers on the same `clip-tiny` image features — the zero-shot classifier from text, and a
# linear probe fitted to 1,000 in-distribution training images (the paper's "adapt to ImageNet") —
# so that a difference under shift is a difference of effective robustness. The control is the first
# row: both must be about equally accurate in distribution, and a shift must measurably hurt.

# %%
def shifted(name: str, n: int = 400):
    """Test scenes under a named shift: (normalised images, labels)."""
    shift_world = {"rotated": dict(rotate=True), "striped": dict(textures=("striped",))}.get(name, {})
    ds = ShapesCaptionDataset("test", n, world.replace(**shift_world), num_objects=1, statements=False)
    images = torch.stack([ds[i]["image"] for i in range(n)])
    if name == "lighter background":  # every pixel of the background colour becomes a lighter grey
        is_bg = (images == images[:, :, :1, :1]).all(dim=1, keepdim=True)
        images = torch.where(is_bg, torch.tensor([0.45, 0.45, 0.45]).view(1, 3, 1, 1), images)
    if name == "pixel noise":
        images = (images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    return normalize(images), torch.tensor([ds[i]["label_id"] for i in range(n)])


probe_train = dataset("train", 1000)
with torch.no_grad():
    train_features = clip.encode_image(torch.stack([probe_train[i]["image"] for i in range(1000)]))
train_labels = torch.tensor([probe_train[i]["label_id"] for i in range(1000)])
head = torch.nn.Linear(train_features.shape[1], len(classnames))
opt = torch.optim.Adam(head.parameters(), lr=0.05)
for _ in range(300):  # multinomial logistic regression on frozen features
    loss = F.cross_entropy(head(train_features * 10), train_labels)
    opt.zero_grad()
    loss.backward()
    opt.step()

SHIFTS = ["in distribution", "rotated", "striped", "lighter background", "pixel noise"]
robust = {}
for name in SHIFTS:
    images, labels = shifted(name)
    with torch.no_grad():
        probe_acc = (head(clip.encode_image(images) * 10).argmax(1) == labels).float().mean().item()
    robust[name] = (zero_shot_accuracy(clip, images, labels, classifier, topk=(1,))["top1"], probe_acc)
    print(f"{name:20s} zero-shot {robust[name][0]:6.1%}   linear probe {robust[name][1]:6.1%}")
fig, ax = plt.subplots(figsize=(8, 3.2))
xs = np.arange(len(SHIFTS))
ax.bar(xs - 0.2, [robust[n][0] for n in SHIFTS], 0.4, label="zero-shot (text)", color="#2563eb")
ax.bar(xs + 0.2, [robust[n][1] for n in SHIFTS], 0.4, label="linear probe (fitted in distribution)", color="#f59e0b")
ax.set_xticks(xs, SHIFTS)
ax.set_ylabel("top-1 (48 classes)")
ax.set_ylim(0, 1)
ax.legend(fontsize=8)
ax.set_title("clip-tiny under distribution shift")
plt.tight_layout()
plt.show()
n_shift = 400
band = noise_band(n_shift, difference=True)  # approximate for `er`, which adds two in-distribution terms near 98 %
in_zs, in_lp = robust["in distribution"]
assert abs(in_zs - in_lp) < 0.05, "the control: both classifiers are about equally good in distribution"
hurt = [n for n in SHIFTS[1:] if robust[n][0] < in_zs - band]
assert hurt, "the control: at least one shift measurably hurts"
er = {n: (robust[n][0] - in_zs) - (robust[n][1] - in_lp) for n in SHIFTS[1:]}
print("effective robustness of zero-shot over the probe (difference of the drops): "
      + ", ".join(f"{n} {v:+.1%}" for n, v in er.items()) + f"; noise ±{band:.1%}")
er_verdict = ("zero-shot is more robust" if all(v > band for v in er.values()) else
              "the probe is more robust" if all(v < -band for v in er.values()) else "no consistent difference")
print(f"verdict: {er_verdict}")
assert all(robust[n][0] < in_zs - band and robust[n][1] < in_lp - band for n in SHIFTS[1:]), "every shift hurts both"
assert er_verdict != "zero-shot is more robust" and all(v <= band for v in er.values())  # never beyond it for zero-shot

# %% [markdown]
# Every shift hurts both classifiers, and by about the same amount under most of them: the difference of
# their drops is small beside the drops themselves (where it passes the noise band, printed above, it
# favours the probe), and it never favours zero-shot consistently. In this toy the
# zero-shot classifier has no robustness of its own: both heads read the same features, and those
# features come from a model that saw one rendering style — upright, solid objects on one dark
# background — so that a lighter background alone breaks them. What the toy lacks is what CLIP's
# robustness is usually credited to: a training distribution of 400 M web images in every style. The
# measurement is the lesson here: effective robustness compares classifiers at equal
# in-distribution accuracy (our control row), and a robustness claim needs it. Exercise: train the
# recipe on rotated scenes (`WorldConfig(rotate=True)`) and measure the rotated row again.
#
# ## Compositionality: what a contrastive model does not learn
#
# The survey (§4.1.6) describes benchmarks such as Winoground {cite:p}`thrush2022winoground` and ARO
# {cite:p}`yuksekgonul2023aro`, where contrastive models do little better than chance at
# {term}`compositionality`: they behave like **bags of words**. Shapes World lets us test this
# exactly, because every negative is checked false against the scene graph.
#
# **1. Held-out compositions.** The `compositional` split contains colour–shape pairs (e.g. *red
# triangle*) that never occurred in training, although each colour and each shape did.

# %%
comp = dataset("compositional", S["n_test"] // 2)
comp_items = [comp[i] for i in range(len(comp))]
comp_images = torch.stack([it["image"] for it in comp_items])
comp_labels = torch.tensor([it["label_id"] for it in comp_items])
acc_comp = zero_shot_accuracy(clip, comp_images, comp_labels, classifier, topk=(1,))["top1"]
comp_pred = zero_shot_classify(clip, comp_images, classifier).argmax(dim=1)
comp_color = np.mean([classnames[p].split()[0] == classnames[t].split()[0] for t, p in zip(comp_labels, comp_pred)])
comp_shape = np.mean([classnames[p].split()[1] == classnames[t].split()[1] for t, p in zip(comp_labels, comp_pred)])
print(f"seen compositions (test):        top-1 {acc:.1%}")
print(f"held-out compositions:           top-1 {acc_comp:.1%}  (colour {comp_color:.1%}, shape {comp_shape:.1%})")
assert acc_comp < acc, "new compositions are harder than seen ones"

# %% [markdown]
# **2. Attribute binding and word order.** For two-object scenes from the test split, we compare the
# true caption ("a red circle and a blue square") with
#
# * its **binding-swapped** negative ("a blue circle and a red square"): the same words, bound to the
#   other object — false of the scene;
# * a **word-order shuffle** of the caption ("square a circle red and blue a"): not even a sentence;
# * a **replace** negative ("a red circle and a green square"): one word changed, a new word.
#
# A model that understood the scene would prefer the true caption over every negative; a bag of words
# gives the binding swap (same words) the same score as the true caption. We report how often the
# true caption wins and how far each negative moves the similarity ($|\Delta\cos|$).
#
# **The control comes first.** Replacing a word is the easy case: any model that reads two-object
# captions at all catches it. Only when it does can the binding swap's result be about binding rather
# than about a model that cannot read the captions. `clip-tiny` saw only one-object scenes; we run
# the probe on it first.

# %%
from vlm_primer.evaluation import PROBE_KINDS, caption_probe, probe_scores

probe = caption_probe(ShapesCaptionDataset("test", 300, world, num_objects=2, statements=False, transform=normalize))
assert max(len(tokenizer.encode(c)) for caps in [probe.true, *probe.negatives.values()] for c in caps) <= CONTEXT
print(f"{len(probe)} two-object test scenes, e.g.\n  true:             {probe.true[0]}")
for kind in PROBE_KINDS:
    print(f"  {kind + ':':17s} {probe.negatives[kind][0]}")


def show_probe(rows, title):
    print(f"\n{title}\n{'negative':18s} {'prefers true':>12s} {'mean |Δ cos|':>13s}")
    for kind, r in rows.items():
        print(f"{kind:18s} {r['prefers_true']:12.1%} {r['gap']:13.3f}")


rows_single = probe_scores(clip, tokenizer, probe, CONTEXT)
show_probe(rows_single, "clip-tiny (trained on one-object scenes)")
control_single = rows_single["replace one word"]["prefers_true"]
print(f"\nThe control: the true caption beats a replaced word in {control_single:.0%} of scenes (chance: 50 %). "
      f"It fails, so this model's binding result (true caption preferred in "
      f"{rows_single['binding swap']['prefers_true']:.0%} of scenes) says nothing about binding.")
assert control_single < 0.7

# %% [markdown]
# The control fails: a model that was never shown two objects does not read "a red circle and a blue
# square" well enough to notice that "blue" became "green". Its score on the binding swap (printed
# above) is no evidence of a bag of words, nor against one. So the test needs a model that passes the
# control: `clip-tiny-pairs` from the zoo is the same recipe trained on scenes of one *or two* objects
# (at `small` and `base` the cell trains it).

# %%
if SCALE == "tiny":
    pairs_card = zoo.card("clip-tiny-pairs")
    clip_pairs = zoo.load("clip-tiny-pairs")
    print(f"clip-tiny-pairs: {pairs_card['recipe']['doc']}\n  rebuild: {pairs_card['command']}")
else:
    seed_everything(SEED)
    clip_pairs = CLIP(clip_config())
    train(clip_pairs, S["steps"], S["batch_size"], S["lr"], seed=SEED, num_objects=(1, 2), live_plot=False)
probe_rows = probe_scores(clip_pairs, tokenizer, probe, CONTEXT)
show_probe(probe_rows, "clip-tiny-pairs (one- and two-object scenes)")
control = probe_rows["replace one word"]["prefers_true"]
assert control > 0.8, f"the control must work before the binding result is read; got {control:.0%}"
print(f"\nThe control works: a replaced word loses in {control:.0%} of scenes. Now the binding swap can be read.")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
x = np.arange(len(PROBE_KINDS))
for k, (rows, name, color) in enumerate([(rows_single, "clip-tiny (1 object)", "#cbd5e1"),
                                         (probe_rows, "clip-tiny-pairs (1-2 objects)", "#2563eb")]):
    axes[0].bar(x + (k - 0.5) * 0.38, [rows[n]["prefers_true"] for n in PROBE_KINDS], 0.38, color=color, label=name)
axes[0].set_xticks(x, PROBE_KINDS)
axes[0].axhline(0.5, color="k", ls="--", lw=1)
axes[0].axhline(0.8, color="#16a34a", ls=":", lw=1)
axes[0].set_ylim(0, 1)
axes[0].set_ylabel("P(true caption scores higher)")
axes[0].set_title("which caption does the model prefer? (dotted: the control's bar)")
axes[0].legend(fontsize=8, loc="lower right")
axes[1].bar(["held-out\ncompositions", "seen\ncompositions"], [acc_comp, acc], color=["#a78bfa", "#60a5fa"])
axes[1].set_ylim(0, 1)
axes[1].set_ylabel("zero-shot top-1 (clip-tiny)")
axes[1].set_title("compositional generalisation")
plt.tight_layout()
plt.show()

bind_win = probe_rows["binding swap"]["prefers_true"]
ratio = probe_rows["binding swap"]["gap"] / probe_rows["replace one word"]["gap"]
shuffle_ratio = probe_rows["word shuffle"]["gap"] / probe_rows["replace one word"]["gap"]
n_probe = len(probe)
noise_probe = noise_band(n_probe)  # a proportion near 50 %
print(f"Binding swap: the true caption wins in {bind_win:.0%} of scenes (chance 50 % ± {noise_probe:.0%}), "
      f"but the swap moves the similarity only {ratio:.0%} as much as replacing one word.")
print(f"Word shuffle: moves it {shuffle_ratio:.0%} as much as a replaced word.")
assert bind_win > 0.5 + noise_probe and ratio < 0.1
bind_runs = [r for r in bench["runs"] if r["kind"] == "binding"]
print(f"\nThe benchmark's {len(bind_runs)} seeds of the same recipe:")
for kind in PROBE_KINDS:
    wins = [r["probe"][kind]["prefers_true"] for r in bind_runs]
    ratios = [r["probe"][kind]["gap"] / r["probe"]["replace one word"]["gap"] for r in bind_runs]
    print(f"  {kind:17s} true wins {min(wins):.0%}-{max(wins):.0%}, moves the score {min(ratios):.0%}-{max(ratios):.0%}"
          " as much as a replaced word")
assert len(bind_runs) >= 3 and all(r["probe"]["replace one word"]["prefers_true"] > 0.8 for r in bind_runs)
assert all(0.5 + noise_probe < r["probe"]["binding swap"]["prefers_true"] for r in bind_runs)
assert all(r["probe"]["binding swap"]["gap"] < 0.1 * r["probe"]["replace one word"]["gap"] for r in bind_runs)

# %% [markdown]
# With a control that works, the binding test can be read, and it says something finer than "a bag
# of words". The true caption beats its binding swap more often than chance, at every seed — the
# causal text tower reads word order, so "yellow triangle and blue star" and "blue triangle and
# yellow star" are not the same bag. But the swap moves the similarity by only a few percent of what
# one replaced word does: binding is a faint signal beside the words themselves, the tendency that
# Winoground and ARO measure in web-scale models. Nothing in the objective asks for binding: a
# contrastive loss learns what it needs to tell the captions of a batch apart, and in a batch a
# caption with the right words is almost always the only one. Hard negatives in the batch (survey
# §3.4.2, NegCLIP) are the standard fix; chapter 07 measures more of these failure modes.
#
# ## SigLIP vs CLIP across batch sizes
#
# The survey states that SigLIP's sigmoid loss "achieves better zero-shot performance than CLIP at
# smaller batch sizes". Before testing it, one detail of the loss matters at small batches.
#
# **Where $b_0 = -10$ comes from.** At initialisation the embeddings are random and the cosines near
# 0, so every logit is about $b$ and every pair of the batch gets $P(\text{match}) = \sigma(b)$. In a
# batch of $N$ only $N$ of the $N^2$ pairs match, a fraction $1/N$. Starting the model at that prior,
# $\sigma(b_0) = 1/N$, gives $b_0 = -\log(N-1) \approx -\log N$; at the paper's batch of 32,768 that is
# $-10.4$, close to the $-10$ the paper initialises with (exercise 3 writes it). At a batch of 32 the
# same $-10$ says that one pair in 22,000 matches when one in 32 does, and the first steps go to
# correcting the bias instead of learning embeddings. So the fair small-batch comparison initialises $b_0 = -\log B$
# for each batch size $B$, and the paper's $-10$ is a second SigLIP curve.
#
# **The runs.** CLIP, SigLIP with $b_0 = -\log B$ and SigLIP with $b_0 = -10$, at batch sizes 8, 32
# and 128, each seeing the **same number of image–caption pairs** (16,384, in random batches: a batch
# of 8 takes 16× the steps of a batch of 128; the learning rate scales with $\sqrt B$; batches are
# random at every size, because a batch of 128 cannot hold 128 distinct compositions), three seeds
# each: 27 runs (the cell below prints their compute time). They live in
# `benchmarks/bench_contrastive_seeds.py`, and the cell below reads its results. A difference counts
# only if it is larger than the **seed spread** (max − min over seeds) of both runs it compares.

# %%
sweep_runs = [r for r in bench["runs"] if r["kind"] == "sweep"]
LOSS_NAMES = list(dict.fromkeys(r["loss_name"] for r in sweep_runs))
BATCHES = sorted({r["batch"] for r in sweep_runs})


def sweep_acc(name: str, batch: int) -> list[float]:
    return [r["zero_shot_top1"] for r in sweep_runs if r["loss_name"] == name and r["batch"] == batch]


def mean_curve(name: str, batch: int) -> tuple[np.ndarray, np.ndarray]:
    curves = [np.array(r["curve"]) for r in sweep_runs if r["loss_name"] == name and r["batch"] == batch]
    return curves[0][:, 0], np.mean([c[:, 1] for c in curves], axis=0)


def chance_loss(name: str, b: int) -> float:
    """The loss of a model that scores every pair alike: log B for CLIP; for SigLIP the best constant
    logit has sigma = 1/B, giving log B + (B - 1) log(B / (B - 1)) per image."""
    return math.log(b) if name == "CLIP" else math.log(b) + (b - 1) * math.log(b / (b - 1))


assert all(len(sweep_acc(n, b)) >= 3 for n in LOSS_NAMES for b in BATCHES), "three seeds per run"
assert len(sweep_runs) == len(LOSS_NAMES) * len(BATCHES) * len(bench["seeds"]) == 27
print(f"{len(sweep_runs)} sweep runs: {sum(r['seconds'] for r in sweep_runs) / 60:.0f} min of compute in all "
      f"({bench['machine']})")
colors = dict(zip(LOSS_NAMES, ["C0", "C3", "C1"]))
fig, axes = plt.subplots(1, 1 + len(BATCHES), figsize=(15, 3.4))
for name in LOSS_NAMES:
    means = [np.mean(sweep_acc(name, b)) for b in BATCHES]
    lo = [means[k] - min(sweep_acc(name, b)) for k, b in enumerate(BATCHES)]
    hi = [max(sweep_acc(name, b)) - means[k] for k, b in enumerate(BATCHES)]
    axes[0].errorbar(BATCHES, means, yerr=[lo, hi], fmt="o-", capsize=3, color=colors[name], label=name)
axes[0].set_xscale("log", base=2)
axes[0].set_xticks(BATCHES, [str(b) for b in BATCHES])
axes[0].set_xlabel("batch size (same pairs seen)")
axes[0].set_ylabel("zero-shot top-1 (bars: seed range)")
axes[0].legend(fontsize=7)
for ax, b in zip(axes[1:], BATCHES):
    for name in LOSS_NAMES:
        if name.startswith("SigLIP"):  # the sigmoid loss: CLIP's softmax loss is on another scale
            steps, loss = mean_curve(name, b)
            ax.plot(steps, loss, color=colors[name], label=name)
    ax.axhline(chance_loss("SigLIP", b), color="gray", ls="--", lw=1, label="knows nothing")
    ax.set_yscale("log")
    ax.set_title(f"SigLIP loss, batch {b}")
    ax.set_xlabel("step")
axes[1].legend(fontsize=7)
plt.tight_layout()
plt.show()





learned = {}  # did the run leave the plateau of a model that knows nothing?
for name in LOSS_NAMES:
    for b in BATCHES:
        final = np.mean([r["curve"][-1][1] for r in sweep_runs if r["loss_name"] == name and r["batch"] == b])
        learned[name, b] = final < 0.95 * chance_loss(name, b)
def winner(siglip: str, b: int) -> tuple[str, float, float]:
    """CLIP against one SigLIP bias at batch b: the verdict, the gap and the seed spread it must clear."""
    c_acc, s_acc = sweep_acc("CLIP", b), sweep_acc(siglip, b)
    gap, band = np.mean(s_acc) - np.mean(c_acc), max(spread(c_acc), spread(s_acc))
    if not (learned["CLIP", b] or learned[siglip, b]):
        return "no run learned", gap, band
    return ("SigLIP" if gap > band else "CLIP" if gap < -band else "within the seed spread"), gap, band


winners, winners_paper = {}, {}
for b in BATCHES:
    (winners[b], gap, band), (winners_paper[b], gap10, band10) = winner("SigLIP, b0 = -log B", b), \
        winner("SigLIP, b0 = -10", b)
    print(f"batch {b:4d}: CLIP {np.mean(sweep_acc('CLIP', b)):.1%}; SigLIP b0 = -log B "
          f"{np.mean(sweep_acc('SigLIP, b0 = -log B', b)):.1%} ({gap:+.1%}, spread {band:.1%}: {winners[b]}), "
          f"b0 = -10 {np.mean(sweep_acc('SigLIP, b0 = -10', b)):.1%} ({gap10:+.1%}, spread {band10:.1%}: "
          f"{winners_paper[b]})")
stuck = [f"{n} at batch {b}" for (n, b), ok in learned.items() if not ok]
print("still on the chance plateau at the end (final loss within 5 % of it): " + ("; ".join(stuck) or "none"))
b_gaps = {b: abs(np.mean(sweep_acc("SigLIP, b0 = -10", b)) - np.mean(sweep_acc("SigLIP, b0 = -log B", b)))
          <= max(spread(sweep_acc("SigLIP, b0 = -10", b)), spread(sweep_acc("SigLIP, b0 = -log B", b)))
          for b in BATCHES}
print("b0 = -10 vs -log B: " + ", ".join(f"batch {b}: {'within the seed spread' if w else 'different'}"
                                        for b, w in b_gaps.items()))
assert winners[8] == winners[32] == "CLIP" and all(b_gaps.values())
assert winners_paper[8] == "CLIP" and winners_paper[32] == "within the seed spread"
assert not learned["SigLIP, b0 = -log B", 128] and not learned["SigLIP, b0 = -10", 128] and learned["CLIP", 128]
cards = {n: zoo.card(n)["quality"]["zero_shot_top1"] for n in ("clip-tiny", "siglip-tiny")}
siglip_accs = bench_values("siglip")
recipe_verdict = seed_verdict(seed_accs, siglip_accs)
print(f"the same 64,000-pair recipe, benchmark seeds {bench['seeds']}: CLIP "
      + ", ".join(f"{a:.1%}" for a in seed_accs) + "; SigLIP " + ", ".join(f"{a:.1%}" for a in siglip_accs)
      + f": CLIP {recipe_verdict} (zoo cards, one run each: clip-tiny {cards['clip-tiny']:.1%}, "
      f"siglip-tiny {cards['siglip-tiny']:.1%})")
assert recipe_verdict == "higher" and min(seed_accs) - max(siglip_accs) > 0.05, "the prose: above at every seed"

# %% [markdown]
# In these runs **the survey's claim does not hold**: at batch 8 and 32, CLIP ends far above SigLIP with
# $b_0 = -\log B$, by more than the seed spread; against the paper's $b_0 = -10$ it wins beyond the spread at
# batch 8 only (at batch 32 the gap is inside CLIP's own spread, printed above). At batch 128 the 128 steps that
# 16,384 pairs allow are too few: both SigLIP runs end on the plateau of a model that knows nothing (the dashed
# line, about $\log B + 1$ for SigLIP; $\log B$ for CLIP, exercise 4); CLIP leaves its own (its final loss is
# more than 5 % below it) but ends far less accurate than at smaller batches, and the difference is within the
# seed spread. The bias changes how training starts (the loss curves), but the zero-shot difference between
# $b_0 = -10$ and $b_0 = -\log B$ stays within the seed spread at every batch size.
#
# What the toy can and cannot show. The SigLIP paper's comparison (ImageNet zero-shot of models trained
# on WebLI) is at batch sizes in the thousands, where the sigmoid loss wins clearly and the gap closes around a batch of 32k; runs of 16,384 pairs
# are a few hundred steps, and at this scale SigLIP also learns more slowly when nothing else differs: the
# zoo's recipe of 64,000 pairs in batches of 32 with no false negatives, run at three seeds with each loss (the
# last line printed), puts CLIP above SigLIP at every seed, by more than five points between the worst CLIP
# seed and the best SigLIP one. The sweep's batches are random at every size, so
# they hold false negatives at every size: a batch of 32 several (§Training a tiny CLIP counts them),
# a batch of 8 fewer, and past 42 pairs, the number of training compositions, every batch; the
# sigmoid loss penalises each of them pair by pair. So this sweep says that at a laptop's scale the
# softmax loss learns faster; it does not test the paper's regime. Part of SigLIP's advantage there is
# memory, which no accuracy plot shows: with no softmax over the global batch, each device only ever
# holds one chunk of the similarity matrix.
#
# ## Llip: a caption-conditioned image embedding
#
# CLIP maps an image to one vector, although an image can be captioned in many ways ("a red circle",
# "a big shape on the left", "there is no star"). **Llip** {cite:p}`lavoie2024llip` lets the image tower
# output $K$ *mixture tokens* and builds the image embedding **for a given caption**: the caption's
# embedding is the query of a cross-attention over the $K$ tokens,
#
# $$z_{ij} = \mathrm{Attn}\big(q = W_q\, y_j,\; k = W_k\, s_{i,1..K},\; v = W_v\, s_{i,1..K}\big),
#   \qquad \text{logit}_{ij} = t\cos(z_{ij}, y_j) + b,$$
#
# so an image has a different embedding for each caption — a $(B_{img}, B_{txt}, D)$ tensor for a batch.
#
# The paper trains Llip with SigLIP's sigmoid loss; `LlipConfig(loss="infonce")` gives the CLIP
# variant. For this short demonstration we use InfoNCE (exercise: rerun it with `loss="sigmoid"` and
# compare the first 60 steps) and a sharper attention (temperature 0.1) so that the captions' choices
# become visible quickly. We measure how differently the captions attend over the mixture tokens
# before training and after.

# %%
seed_everything(0)
lcfg = LlipConfig.from_preset(SCALE, loss="infonce", temperature=0.1)
lcfg = lcfg.replace(vision=lcfg.vision.replace(image_size=S["image_size"], patch_size=S["patch_size"],
                                               depth=S["depth"]),
                    text=lcfg.text.replace(context_length=CONTEXT, vocab_size=tokenizer.vocab_size,
                                             depth=S["text_depth"]))
llip = Llip(lcfg)
val4 = [dataset("val", 4)[i] for i in range(4)]
batch = collate(val4) | {"captions": [it["caption"] for it in val4]}


@torch.no_grad()
def caption_attention(model):
    """Embeddings of the 4 validation pairs, and each caption's attention over image 0's mixture tokens.

    The weights of the cross-attention averaged over heads, written out: `Llip.attention` is the package's
    version (checked below), and `Llip.contextualize` fuses the same computation into one attention call."""
    model.eval()
    mix = model.encode_image(batch["pixel_values"])                     # (B_img, K, dim)
    y = model.encode_text(batch["input_ids"], batch["attention_mask"])   # (B_txt, D)
    q = rearrange(model.mixer.q(F.normalize(y, dim=-1)), "t (h d) -> h t d", h=lcfg.heads)
    k = rearrange(model.mixer.k(mix[0]), "n (h d) -> h n d", h=lcfg.heads)
    attn = (q @ k.transpose(-1, -2) / (lcfg.temperature * math.sqrt(q.shape[-1]))).softmax(-1).mean(0)
    return mix, y, attn


def caption_spread(attn):
    """The largest difference, over mixture tokens, between the weights two captions give one token."""
    return (attn.max(0).values - attn.min(0).values).max().item()


spread_init = caption_spread(caption_attention(llip)[2])
llip_steps = 60 if SCALE == "tiny" else 1000
llip_hist = train(llip, llip_steps, 32, 5e-4, progress=False, live_plot=False)
mix, y, attn = caption_attention(llip)
with torch.no_grad():
    z = llip.contextualize(mix, y)                                      # (B_img, B_txt, D)
print(f"mixture tokens {tuple(mix.shape)}, text embeddings {tuple(y.shape)}, "
      f"caption-conditioned image embeddings {tuple(z.shape)}")
fig, ax = plt.subplots(figsize=(7, 2.6))
ax.imshow(attn, cmap="magma", aspect="auto")
ax.set_yticks(range(len(batch["captions"])), batch["captions"], fontsize=8)
ax.set_xlabel(f"mixture token (K = {lcfg.num_mixture_tokens})")
ax.set_title("Llip: attention of each caption over image 0's mixture tokens")
plt.tight_layout()
plt.show()
with torch.no_grad():
    assert torch.allclose(attn, llip.attention(mix, y).mean(1)[0], atol=1e-6), "inline = Llip.attention"
attn_spread = caption_spread(attn)
print(f"Llip loss {llip_hist[0]['loss']:.3f} -> {llip_hist[-1]['loss']:.3f} in {llip_steps} steps; "
      f"the captions' attention weights differ by up to {spread_init:.2e} at initialisation, {attn_spread:.2e} after")
assert z.shape == (4, 4, lcfg.embed_dim)
assert llip_hist[-1]["loss"] < llip_hist[0]["loss"], "Llip is learning"

# %% [markdown]
# Sixty steps on four captions are a demonstration, not a measurement. The benchmark trains Llip with
# `clip-tiny`'s full recipe (2,000 steps of 32 distinct pairs, the same towers plus 8 mixture tokens,
# InfoNCE, attention temperature 0.1) at three seeds, and measures it like CLIP: zero-shot top-1 on the
# 480 test scenes of the zoo's cards, Recall@1 both ways on 200 test images, and the spread of the
# attention — for each of 32 validation images, the largest difference between the weights two of
# the 32 captions give one mixture token, averaged — **at initialisation and after training**, so that
# the random projections' own spread is the control.

# %%
llip_runs = [r for r in bench["runs"] if r["kind"] == "llip"]
clip_runs = [r for r in bench["runs"] if r["kind"] == "zeroshot"]
assert len(llip_runs) >= 3 and len(clip_runs) >= 3
print(f"{'':6s} {'zero-shot top-1':>22s} {'i2t R@1':>20s} {'t2i R@1':>20s}   (mean [min, max] over {len(llip_runs)} seeds)")
llip_gaps = {}
for key in ("zero_shot_top1", "i2t_R@1", "t2i_R@1"):
    l_vals, c_vals = [r[key] for r in llip_runs], [r[key] for r in clip_runs]
    gap, band = np.mean(l_vals) - np.mean(c_vals), max(spread(l_vals), spread(c_vals))
    llip_gaps[key] = "Llip" if gap > band else "CLIP" if gap < -band else "within the seed spread"
for name, runs in (("CLIP", clip_runs), ("Llip", llip_runs)):
    print(f"{name:6s} " + " ".join(f"{np.mean([r[k] for r in runs]):7.1%} [{min(r[k] for r in runs):.1%}, "
                                   f"{max(r[k] for r in runs):.1%}]" for k in ("zero_shot_top1", "i2t_R@1", "t2i_R@1")))
print("better:", llip_gaps)
spreads = np.array([[r["spread_init"], r["spread_trained"]] for r in llip_runs])
print(f"attention spread at initialisation {spreads[:, 0].mean():.3f} (seeds {np.round(spreads[:, 0], 3).tolist()}), "
      f"after training {spreads[:, 1].mean():.3f} (seeds {np.round(spreads[:, 1], 3).tolist()})")
assert spreads[:, 1].min() > 3 * spreads[:, 0].max(), "the captions come to attend differently, at every seed"
assert llip_gaps == {"zero_shot_top1": "CLIP", "i2t_R@1": "within the seed spread", "t2i_R@1": "within the seed spread"}

# %% [markdown]
# The mixing attention gives the clear result: at every seed the captions' attention spread grows
# several-fold from its value at initialisation (the random projections' own spread, the control):
# different captions come to select different mixture tokens, as Llip intends. Accuracy is another
# matter. At this budget Llip's zero-shot top-1 is below CLIP's by more than the seed spread, and its
# Recall@1 differs from CLIP's by less than the spread. The survey reports that Llip generally
# improves zero-shot classification and retrieval because it models the many ways an image can be
# captioned; a single-object Shapes World caption always says the same thing (a colour and a shape),
# so there is little diversity for the mixture tokens to capture, and Llip has more to learn in the
# same steps. That explanation is consistent with our runs; they do not test it.
#
# Because the image representation depends on the caption, zero-shot classification and retrieval use
# `Llip.similarity` instead of a plain cosine; `vlm_primer.evaluation` picks it up automatically.

# %% [markdown]
# ## Loading real checkpoints
#
# Our CLIP and SigLIP are the same architectures as OpenAI's CLIP and Google's SigLIP, so their
# published weights load into ours by renaming tensors. `vlm_primer.interop` does it both ways, and
# strictly: every tensor is used exactly once, and a missing, unexpected or mis-shaped tensor is an
# error that names it. With the Hugging Face hub available, one line gives a real model:
#
# ```python
# from vlm_primer.interop.clip import load_clip_pretrained
# from vlm_primer.interop.siglip import load_siglip_pretrained
# clip = load_clip_pretrained("openai/clip-vit-base-patch32")        # ours, with OpenAI's weights
# siglip = load_siglip_pretrained("google/siglip-base-patch16-224")
# ```
#
# (use the checkpoint's own tokenizer and image preprocessing, `transformers.CLIPProcessor`). This
# book runs offline, so here is the same converter on a small *random* `transformers` CLIP: build
# it from a config, convert it, and compare the two models' logits on the same batch. The tests
# (`tests/test_parity_clip.py`, `tests/test_parity_siglip.py`) do this for every output, both ways.

# %%
from transformers import CLIPConfig as HFCLIPConfig
from transformers import CLIPModel

from vlm_primer.interop.clip import clip_from_hf

hf_cfg = HFCLIPConfig(
    text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=16, bos_token_id=97, eos_token_id=98),
    vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       image_size=32, patch_size=8),
    projection_dim=24, logit_scale_init_value=3.0,
)
hf_clip = CLIPModel(hf_cfg).eval()
ours_from_hf = clip_from_hf(hf_clip).eval()
hf_demo_ids = torch.randint(0, 98, (3, 10))
hf_demo_ids[:, -1] = 98  # end-of-text
hf_demo_pix = torch.randn(3, 3, 32, 32)
with torch.no_grad():
    hf_ref = hf_clip(input_ids=hf_demo_ids, pixel_values=hf_demo_pix).logits_per_image
    hf_got = ours_from_hf(pixel_values=hf_demo_pix, input_ids=hf_demo_ids).logits_per_image
hf_gap = (hf_ref - hf_got).abs().max().item()
print(f"transformers CLIPModel vs vlm_primer CLIP: max |logit difference| = {hf_gap:.1e}")
assert hf_gap <= 1e-5

# %% [markdown]
# ## Scaling up
#
# Everything above runs unchanged at the paper's size. The `base` preset of `CLIPConfig` is OpenAI's
# ViT-B/16 (224 px, 12 layers, width 768; text transformer of width 512) and loads real checkpoints
# through `vlm_primer.interop`. On GPUs, train it from WebDataset shards with bf16 autocast,
# `torch.compile` and DDP through the project's entry point:
#
# ```bash
# # one GPU
# python -m vlm_primer.train clip --preset base --shards "shards/{000000..000099}.tar" \
#     --batch-size 256 --precision bf16 --compile
# # 8 GPUs on one node: the global batch is 8 x 256; ClipLoss gathers the features of all ranks
# torchrun --nproc_per_node 8 -m vlm_primer.train clip --preset base \
#     --shards "shards/{000000..000099}.tar" --batch-size 256 --precision bf16 --compile \
#     --ckpt-dir runs/clip-b16 --ckpt-every 1000 --resume auto
# ```
#
# `siglip` and `llip` are recipes too. Here we run the very same entry point for a few steps at the
# `tiny` preset on two freshly written shards, so the path from shards to trained model is exercised
# every time this notebook runs:

# %%
from vlm_primer.train import main as train_main
from vlm_primer.training import write_shards

base = CLIPConfig.from_preset("base")
print(f"CLIP base: {base.vision.image_size} px, patch {base.vision.patch_size}, {base.vision.depth} layers of width "
      f"{base.vision.dim}; text width {base.text.dim}, context {base.text.context_length}; embed {base.embed_dim}")
assert (base.vision.image_size, base.vision.patch_size, base.vision.depth, base.vision.dim, base.text.dim) == (
    224, 16, 12, 768, 512)

with tempfile.TemporaryDirectory() as tmp:
    raw = ShapesCaptionDataset("train", 64, WorldConfig(image_size=32), num_objects=(1, 2), statements=False)
    paths = write_shards(({"image": raw[i]["image"], "caption": raw[i]["caption"]} for i in range(len(raw))),
                         tmp, maxcount=32)
    print("wrote", [os.path.basename(p) for p in paths])
    argv = ["clip", "--preset", "tiny", "--shards", os.path.join(tmp, "shard-{000000..000001}.tar"),
            "--batch-size", "16", "--steps", "3", "--precision", "fp32", "--no-progress", "--device", "cpu",
            "--set", "eval_size=16"]
    print("python -m vlm_primer.train " + " ".join(argv))
    cli_history = train_main(argv)
assert cli_history and cli_history[-1]["step"] == 3 and math.isfinite(cli_history[-1]["loss"])

# %% [markdown]
# **Benchmarks.** `benchmarks/bench_contrastive.py` times a training step and measures the memory of
# our CLIP and SigLIP against `transformers`' `CLIPModel`/`SiglipModel` at the same config and with the
# same weights, and prints the ratios:
#
# ```bash
# python benchmarks/bench_contrastive.py --threads 1 --batch 32
# ```
#
# ## Summary
#
# * Contrastive learning sidesteps an energy-based model's normaliser. NCE classifies data against an
#   explicit noise distribution and learns the density *and* its normaliser (the 1-D toy); InfoNCE
#   takes its negatives from the batch; SimCLR makes positives by augmentation; SigLIP asks one
#   sigmoid question per pair with a learned bias; Llip conditions the image embedding on the caption.
# * A tiny CLIP (500 steps live, 2,000 from the zoo) classifies unseen Shapes World scenes zero-shot
#   (top-1 over 48 classes asserted at ≥ 90 % for the zoo model and at ≥ 85 % at every seed of the
#   benchmark); the template ensemble is measurably part of that; colour-shape pairs it never saw are
#   much harder.
# * No conclusion without a working control: a model trained on one-object scenes fails the
#   replace-one-word control, so its binding result means nothing. A model that passes it prefers the
#   true caption to a binding swap more often than chance, but the swap moves its score only a few
#   percent as much as a replaced word: mostly, not purely, a bag of words.
# * Claims measured, not assumed: at a laptop's scale CLIP beats SigLIP at small batches (beyond the
#   seed spread at batch 8 for both biases, at 32 for $b_0 = -\log B$, and at every seed of the zoo's recipe;
#   the survey's claim does not transfer to runs this short), and Llip's captions learn to attend differently without a gain in accuracy: these
#   verdicts are read against the seed spread, from `benchmarks/bench_contrastive_seeds.py`. Zero-shot is no
#   more robust than a linear probe on the same narrow features: one model, read against binomial sampling
#   noise.
#
# ## Exercises
#
# Write each answer in the cell below and run it: `check` runs hidden tests and says what is wrong
# (a wrong shape, a factor off, a case missed), never what the answer is.
#
# 1. **CLIP's loss without false negatives** (`02.1`). When two pairs of a batch share a composition,
#    InfoNCE pushes an image away from a caption that describes it. Write
#    `multi_positive_clip_loss(img, txt, logit_scale, labels)` in which every caption with the image's
#    label counts as a positive: $-\log \sum_{k \in P(i)} p(k \mid i)$, in both directions, averaged.
#    Show that with distinct labels it is CLIP's loss.
# 2. **SigLIP's loss from its formula** (`02.2`). Write `siglip_loss(img, txt, t, b)` from the equation
#    of §SigLIP: the sigmoid loss, without looking at `my_siglip_loss`.
# 3. **Where the bias −10 comes from** (`02.3`). At initialisation the cosines are near 0, so every
#    pair has $P(\text{match}) = \sigma(b)$. Choose $b_0$ so that this equals the fraction of positives
#    in a row, $1/N$. Write `siglip_bias_init(n)` and evaluate it at the paper's batch of 32,768.
# 4. **The loss of a model that knows nothing** (`02.4`). Derive CLIP's loss when all similarities are
#    equal; write `chance_clip_loss(n)`. (Compare with the start of the training curve above.)
# 5. **False negatives in a random batch** (`02.5`). A batch of $B$ pairs is drawn uniformly from $K$
#    compositions. Derive the expected number of pairs whose composition already occurred in the batch
#    (the repeats), and write `expected_repeats(batch, k)`; compare with the count computed in
#    §Training a tiny CLIP.
# 6. **Recall@1** (`02.6`). Write `recall_at_1(similarity)` for image → text retrieval with one caption
#    per image, and check it against `vlm_primer.evaluation.recall_at_k`.
# 7. **A prompt-ensemble classifier** (`02.7`). Given prompt embeddings of shape (classes, prompts, dim),
#    return the unit-norm class weights of §Zero-shot classification: `ensemble_weights(prompts)`.
#
# *An open experiment* (no check: it is yours). Train the tiny CLIP with batches of 24 and of 40 at the
# same number of pairs seen, three seeds each, and decide whether the difference exceeds the spread.

# %%
from vlm_primer.exercises import check


def multi_positive_clip_loss(img, txt, logit_scale, labels):
    raise NotImplementedError  # your code here


def siglip_loss(img, txt, t, b):
    raise NotImplementedError


def siglip_bias_init(n):
    raise NotImplementedError


def chance_clip_loss(n):
    raise NotImplementedError


def expected_repeats(batch, k):
    raise NotImplementedError


def recall_at_1(similarity):
    raise NotImplementedError


def ensemble_weights(prompts):
    raise NotImplementedError


for exercise_id, answer in [("02.1", multi_positive_clip_loss), ("02.2", siglip_loss), ("02.3", siglip_bias_init),
                            ("02.4", chance_clip_loss), ("02.5", expected_repeats), ("02.6", recall_at_1),
                            ("02.7", ensemble_weights)]:
    check(exercise_id, answer)
assert check("02.2", my_siglip_loss, quiet=True), "the chapter's own SigLIP loss passes the check of exercise 2"

# %%
elapsed = time.time() - T_START
print(f"zero-shot top-1 {acc:.1%}; chapter executed in {elapsed:.0f} s at scale {SCALE!r}")
