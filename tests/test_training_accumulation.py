"""Gradient accumulation weighs micro-batches by the items their loss averages (vlm_primer.training.Trainer with
``loss_items``): accumulated micro-batches of unequal answer lengths or sizes move the weights exactly as one batch
of all their samples does, and the equal-weight average of micro-batch means, the control, does not. ``loss_items``
of every language model is the denominator of its own loss. The DDP case is in test_distributed_ddp.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from vlm_primer.backbones import Flamingo, FlamingoConfig, Llava, LlavaConfig
from vlm_primer.backbones.data import LlavaChatDataset, llava_collate
from vlm_primer.backbones.stages import TINY_WORLD
from vlm_primer.nn import DecoderConfig, DecoderLM, causal_lm_items
from vlm_primer.training import Batches, TrainConfig, Trainer
from vlm_primer.world import WorldConfig

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))
from toy_training import ToyClassifier  # noqa: E402


def _lm() -> DecoderLM:
    torch.manual_seed(0)
    return DecoderLM(DecoderConfig(vocab_size=40, dim=32, depth=1, heads=2, context_length=16, dropout=0.0))


def _lm_batch(rows: int, targets: int, seed: int) -> dict[str, torch.Tensor]:
    """``rows`` sequences of 12 tokens whose last ``targets`` positions are targets (the prompt is -100)."""
    ids = torch.randint(4, 40, (rows, 12), generator=torch.Generator().manual_seed(seed))
    labels = ids.clone()
    labels[:, :12 - targets] = -100
    return {"input_ids": ids, "labels": labels}


def _cat(*batches: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


class _Hidden(nn.Module):
    """The model without ``loss_items``: the Trainer weighs its micro-batches by their samples (the control)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **batch):
        return self.model(**batch)


def _update(model: nn.Module, batches: list[dict], accum: int) -> dict[str, torch.Tensor]:
    """One plain-SGD step (lr 1, no clipping, no decay): the change of every weight is minus the gradient."""
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    config = TrainConfig(max_steps=1, batch_size=1, grad_accum_steps=accum, grad_clip=None, warmup_steps=0,
                         device="cpu", precision="fp32", progress=False, live_plot=False, log_every=1)
    Trainer(model, Batches(batches), config, optimizer=torch.optim.SGD(model.parameters(), lr=1.0)).fit()
    return {k: v - before[k] for k, v in model.state_dict().items()}


def _unwrap(update: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("model."): v for k, v in update.items()}


def _rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    num = sum((a[k] - b[k]).pow(2).sum() for k in a)
    return float(num.sqrt() / sum(b[k].pow(2).sum() for k in b).sqrt())


def test_token_weighted_accumulation_equals_the_big_batch():
    """Two micro-batches of 2 rows, with 1 and 10 targets per row: accumulated, they give the gradient of the
    4-row batch; weighed equally (the model without ``loss_items``), a token of the short answers would count ten
    times as much, and the gradient is far off."""
    short, long = _lm_batch(2, 1, seed=1), _lm_batch(2, 10, seed=2)
    assert _lm().loss_items(short) == 2 and _lm().loss_items(long) == 20
    big = _update(_lm(), [_cat(short, long)], accum=1)
    accumulated = _update(_lm(), [short, long], accum=2)
    equal = _unwrap(_update(_Hidden(_lm()), [short, long], accum=2))
    assert _rel(accumulated, big) < 1e-5
    assert _rel(equal, big) > 0.05  # the control: the test sees a wrong weighting
    # with equal target counts the two weightings agree: the difference above is the weighting's alone
    same = _lm_batch(2, 10, seed=1)
    big = _update(_lm(), [_cat(same, long)], accum=1)
    assert _rel(_unwrap(_update(_Hidden(_lm()), [same, long], accum=2)), big) < 1e-5


def test_unequal_micro_batches_weigh_by_their_samples():
    """A model without ``loss_items`` (a per-sample mean loss): micro-batches of 2 and 6 samples accumulate to the
    8-sample batch's gradient."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)

    def model():
        torch.manual_seed(0)
        return ToyClassifier(dropout=0.0)

    big = _update(model(), [{"x": x, "y": y}], accum=1)
    accumulated = _update(model(), [{"x": x[:2], "y": y[:2]}, {"x": x[2:], "y": y[2:]}], accum=2)
    assert _rel(accumulated, big) < 1e-5


def test_the_logged_loss_is_the_big_batch_loss():
    short, long = _lm_batch(2, 1, seed=1), _lm_batch(2, 10, seed=2)
    config = TrainConfig(max_steps=1, batch_size=1, grad_accum_steps=2, lr=1e-9, warmup_steps=0, device="cpu",
                         precision="fp32", progress=False, live_plot=False, log_every=1)
    logged = Trainer(_lm(), Batches([short, long]), config).fit()[-1]["loss"]
    with torch.no_grad():
        whole = float(_lm()(**_cat(short, long)).loss)
    assert logged == pytest.approx(whole, rel=1e-5)


def test_a_micro_batch_without_targets_is_refused_by_name():
    empty = _lm_batch(2, 0, seed=1)
    config = TrainConfig(max_steps=1, batch_size=1, grad_accum_steps=2, device="cpu", precision="fp32",
                         progress=False, live_plot=False)
    with pytest.raises(ValueError, match=r"micro-batch 2 of 2 in step 1 has no loss items \(DecoderLM.loss_items"):
        Trainer(_lm(), Batches([_lm_batch(2, 3, seed=2), empty]), config).fit()


def test_causal_lm_items_counts_what_the_loss_averages_and_names_bad_labels():
    labels = torch.tensor([[-100, 5, 6, -100], [7, -100, -100, 8]])
    assert causal_lm_items(labels) == 3 and causal_lm_items(labels, first_is_target=True) == 4
    assert causal_lm_items(labels.tolist()) == 3
    with pytest.raises(ValueError, match="the batch has no labels"):
        causal_lm_items(None)
    with pytest.raises(ValueError, match=r"labels must have shape \(B, L\), got \(4,\)"):
        causal_lm_items(labels[0])


def _halves(batch, first):
    rows = torch.arange(len(batch["labels"]))
    a = {k: v[rows[first]] for k, v in batch.items()}
    b = {k: v[rows[~torch.isin(rows, torch.tensor(first))]] for k, v in batch.items()}
    return a, b


@pytest.mark.parametrize("kind", ["DecoderLM", "Llava", "Flamingo", "VideoLlama"])
def test_loss_items_is_the_denominator_of_each_models_loss(kind):
    """Split a batch in two by rows: the loss of the whole is the halves' losses weighed by their ``loss_items``
    (and the plain average of the halves is not: the control)."""
    torch.manual_seed(0)
    if kind == "DecoderLM":
        model, batch = _lm(), _cat(_lm_batch(2, 2, seed=1), _lm_batch(4, 9, seed=2))
        first = [0, 1]
    elif kind == "VideoLlama":
        from vlm_primer.video.video_llama import VideoLlama, VideoLlamaConfig

        model = VideoLlama(VideoLlamaConfig.from_preset("tiny"))
        vocab = model.cfg.text.vocab_size
        ids = torch.randint(4, vocab, (6, 10), generator=torch.Generator().manual_seed(0))
        labels = ids.clone()
        labels[:2, :8] = -100  # two rows with 2 targets, four with 10 (the first text position is a target)
        size = model.cfg.vision.image_size
        batch = {"frames": torch.rand(6, model.cfg.num_frames, 3, size, size), "input_ids": ids, "labels": labels}
        first = [0, 1]
        assert model.loss_items(batch) == 2 * 2 + 4 * 10
    else:
        model = (Llava(LlavaConfig.from_preset("tiny")) if kind == "Llava"
                 else Flamingo(FlamingoConfig.from_preset("tiny")))
        data = LlavaChatDataset("caption", size=6, image_tokens=getattr(model, "tokens_per_image", 1),
                                config=WorldConfig(**TINY_WORLD))
        batch = llava_collate(model.cfg.text.pad_token_id)([data[i] for i in range(6)])
        first = [2, 4]  # the two shortest captions (8 targets each against 15-18)
    model.eval()
    with torch.no_grad():  # sharper logits, so that the tokens' losses differ at random weights
        [head for name, head in model.named_modules() if name.endswith("lm_head")][0].weight.mul_(30)
    a, b = _halves(batch, first)
    with torch.no_grad():
        whole, la, lb = (float(model(**x).loss) for x in (batch, a, b))
    na, nb = model.loss_items(a), model.loss_items(b)
    assert na + nb == model.loss_items(batch) and na < nb
    assert (la * na + lb * nb) / (na + nb) == pytest.approx(whole, rel=1e-5)
    assert abs((la + lb) / 2 - whole) > 1e-3
