"""Distributed contrastive losses on 2 gloo processes equal the single-process loss on the global batch
(the loss modules with DDP-wrapped linear towers, and Llip's own distributed loss with a DDP-wrapped Llip).

Convention checked (see ``vlm_primer/contrastive/losses.py``): the mean over ranks of the rank
losses is the global loss; the gradient reaching a rank's local features is ``W`` times the global
gradient for those features; after DDP's averaging the parameter gradients equal the global ones.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from vlm_primer.contrastive import Llip, LlipConfig
from vlm_primer.contrastive.losses import ClipLoss, SigLipLoss, all_gather_with_grad, clip_loss, siglip_loss

WORLD, LOCAL, DIM = 2, 3, 5


class _Towers(nn.Module):
    """Two linear 'towers' plus scale and bias, so DDP has parameters to average."""

    def __init__(self, bias: bool) -> None:
        super().__init__()
        self.image = nn.Linear(4, DIM)
        self.text = nn.Linear(6, DIM)
        self.logit_scale = nn.Parameter(torch.tensor(1.3))
        # CLIP has no bias; an unused parameter would stall DDP's gradient bucket.
        self.logit_bias = nn.Parameter(torch.tensor(-0.7)) if bias else None

    def forward(self, images, texts):
        x = F.normalize(self.image(images), dim=-1)
        y = F.normalize(self.text(texts), dim=-1)
        return x, y, self.logit_scale.exp(), self.logit_bias


def _make_loss(name: str):
    return {
        "clip_local": lambda: ClipLoss(local_loss=True),
        "clip_global": lambda: ClipLoss(local_loss=False),
        "siglip_gather": lambda: SigLipLoss("gather"),
        "siglip_ring": lambda: SigLipLoss("ring"),
    }[name]()


def _call(loss_fn, x, y, scale, bias):
    if isinstance(loss_fn, SigLipLoss):
        return loss_fn(x, y, scale, bias)
    return loss_fn(x, y, scale)


def _reference(name: str, images, texts):
    """Single process, whole global batch: loss, feature grads and parameter grads."""
    torch.manual_seed(1)
    model = _Towers(bias=name.startswith("siglip")).double()
    x, y, scale, bias = model(images, texts)
    x.retain_grad()
    y.retain_grad()
    # The functional forms never look at torch.distributed (the modules would, inside a worker).
    if name.startswith("clip"):
        loss = clip_loss(scale * x @ y.t())
    else:
        loss = siglip_loss(scale * x @ y.t() + bias)
    loss.backward()
    return loss.detach(), x.grad, y.grad, {k: p.grad for k, p in model.named_parameters()}


def _worker(rank: int, port: int, names: list[str]) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        gen = torch.Generator().manual_seed(0)
        images = torch.randn(WORLD * LOCAL, 4, generator=gen, dtype=torch.float64)
        texts = torch.randn(WORLD * LOCAL, 6, generator=gen, dtype=torch.float64)
        mine = slice(rank * LOCAL, (rank + 1) * LOCAL)

        # The autograd-aware gather itself: forward concatenates, backward sums over ranks.
        a = torch.full((2, 3), float(rank + 1), dtype=torch.float64, requires_grad=True)
        g = all_gather_with_grad(a)
        assert torch.equal(g[:2], torch.ones(2, 3, dtype=torch.float64)) and torch.equal(g[2:], 2 * g[:2])
        w = torch.arange(1, 5, dtype=torch.float64)[:, None]  # both ranks use the same weights
        (g * w).sum().backward()
        expected = WORLD * w[2 * rank : 2 * rank + 2].expand(2, 3)  # summed over the two ranks
        assert torch.equal(a.grad, expected), (a.grad, expected)

        for name in names:
            ref_loss, ref_gx, ref_gy, ref_grads = _reference(name, images, texts)
            torch.manual_seed(1)
            model = nn.parallel.DistributedDataParallel(_Towers(bias=name.startswith("siglip")).double())
            x, y, scale, bias = model(images[mine], texts[mine])
            x.retain_grad()
            y.retain_grad()
            loss = _call(_make_loss(name), x, y, scale, bias)
            loss.backward()

            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss)
            mean_loss /= WORLD
            close = dict(atol=1e-10, rtol=1e-6)  # float64: agreement to rounding
            torch.testing.assert_close(mean_loss, ref_loss, **close, msg=lambda m: f"{name}: loss: {m}")
            torch.testing.assert_close(x.grad / WORLD, ref_gx[mine], **close, msg=lambda m: f"{name}: d/dx: {m}")
            torch.testing.assert_close(y.grad / WORLD, ref_gy[mine], **close, msg=lambda m: f"{name}: d/dy: {m}")
            for k, p in model.module.named_parameters():  # DDP has averaged these over ranks
                torch.testing.assert_close(p.grad, ref_grads[k], **close, msg=lambda m: f"{name}: d/d{k}: {m}")
            if name == "clip_global":  # every rank computes the full loss
                torch.testing.assert_close(loss.detach(), ref_loss, atol=1e-10, rtol=1e-6)
        for loss_kind in ("sigmoid", "infonce"):
            _check_llip(rank, loss_kind)
    finally:
        dist.destroy_process_group()


def _check_llip(rank: int, loss_kind: str) -> None:
    """Llip's own distributed loss (gathered captions, and images for InfoNCE) under DDP."""
    cfg = LlipConfig.from_preset("tiny", loss=loss_kind, embed_dim=16, heads=2, num_mixture_tokens=3)
    cfg = cfg.replace(vision=cfg.vision.replace(image_size=16, dim=16, depth=1, heads=2),
                      text=cfg.text.replace(dim=16, depth=1, heads=2, context_length=8))
    gen = torch.Generator().manual_seed(5)
    pixels = torch.rand(WORLD * LOCAL, 3, 16, 16, generator=gen, dtype=torch.float64)
    ids = torch.randint(4, 100, (WORLD * LOCAL, 8), generator=gen)
    mine = slice(rank * LOCAL, (rank + 1) * LOCAL)

    torch.manual_seed(2)
    ref = Llip(cfg).double()
    logits = ref.logits(ref.encode_image(pixels), ref.encode_text(ids))  # no process group involved
    ref_loss = siglip_loss(logits) if loss_kind == "sigmoid" else clip_loss(logits)
    ref_loss.backward()

    torch.manual_seed(2)
    model = nn.parallel.DistributedDataParallel(Llip(cfg).double())
    loss = model(pixels[mine], ids[mine]).loss
    loss.backward()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    close = dict(atol=1e-10, rtol=1e-6)
    torch.testing.assert_close(mean_loss / WORLD, ref_loss.detach(), **close)
    for (k, p), q in zip(model.module.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, **close, msg=lambda m: f"llip {loss_kind}: d/d{k}: {m}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_distributed_losses_match_single_process():
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    names = ["clip_local", "clip_global", "siglip_gather", "siglip_ring"]
    mp.spawn(_worker, args=(_free_port(), names), nprocs=WORLD, join=True)


def test_single_process_losses_ignore_distributed_path():
    """Without a process group the modules equal the plain formulas written out here."""
    x = F.normalize(torch.randn(4, 8), dim=-1)
    y = F.normalize(torch.randn(4, 8), dim=-1)
    logits = 3.0 * x @ y.t()
    labels = torch.arange(4)
    expected_clip = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    torch.testing.assert_close(ClipLoss()(x, y, 3.0), expected_clip)
    z = 2 * torch.eye(4) - 1
    expected_sig = -torch.log(torch.sigmoid(z * (logits - 2.0))).sum() / 4
    torch.testing.assert_close(SigLipLoss()(x, y, 3.0, -2.0), expected_sig)


def test_loss_bad_input():
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="same shape"):
        ClipLoss()(x, torch.randn(3, 8), 1.0)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        SigLipLoss()(torch.randn(4), x, 1.0)
    with pytest.raises(ValueError, match="empty"):
        ClipLoss()(torch.randn(0, 8), torch.randn(0, 8), 1.0)
    with pytest.raises(ValueError, match="exchange"):
        SigLipLoss("allreduce")
