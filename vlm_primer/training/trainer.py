"""The ``Trainer`` every chapter uses: AdamW + cosine warmup, mixed precision, accumulation, DDP,
safetensors checkpoints with exact resumption, a progress bar and a live loss plot.

A model plugs in by returning an object with ``.loss`` from ``forward(**batch)`` (batches are dicts
of tensors; the trainer moves tensors to the device and leaves other values alone). A model with
a ``post_step()`` method gets it called after every optimizer step (CLIP clamps its temperature
there). Explained in notebook 06 (training recipes).

Gradient accumulation weighs each micro-batch's mean loss by its share of the step's *items*, the terms the loss
averages: ``model.loss_items(batch)`` where the model has it (the language models count their predicted tokens),
else the micro-batch's samples. So ``grad_accum_steps`` micro-batches give the gradient of one batch of all their
samples even when their answers differ in length (averaging the micro-batches' means would weigh a token of a
short answer more than one of a long answer). Under DDP, with ``loss_items``, the share is of the items of every
process, so the ranks' average is the global batch's gradient, and the logged loss its loss. To count them, a
step reads its micro-batches first: they wait on the host until their turn on the device.
Explained in notebook 06b, §Gradient accumulation.

Training data is either

- a map-style dataset (``__len__`` + ``__getitem__``): the trainer batches it with a
  :class:`~vlm_primer.training.data.ResumableLoader` (shuffled by ``(seed, epoch)``, sharded over
  ranks, full batches only). Resumption is exact: the loader restarts at the saved batch.
- any other iterable of batches (a ``DataLoader``, :func:`~vlm_primer.training.shards.shard_loader`, a list of
  ready-made batches wrapped in :class:`~vlm_primer.training.data.Batches`; a plain list is a dataset):
  each pass over it is an epoch (``set_epoch`` is called if it has one) and resumption skips the
  batches already consumed in the current epoch. That is exact when the iterable's order is a
  function of its epoch (``shard_loader`` is; a ``DataLoader(shuffle=True)`` without a generator
  draws from the global RNG and is not).

Resumption restores weights, optimizer, schedule, gradient scaler, step, data position, each
rank's RNG states and the history, so ``N`` steps in one go and ``k`` steps + resume to ``N``
give bit-identical weights on the same machine. The schedule (learning rate, warmup, ``max_steps``) and the
weight decay follow the config the run resumes with, so a run can be extended or its rate changed. Resuming from
a checkpoint older than others in ``ckpt_dir`` is refused (the new steps would collide with them). Checkpoints are
only written between optimizer steps, so no partial gradient accumulation is ever lost.

A NaN or infinite loss stops training with :class:`NonFiniteLossError` (naming the step and the
last finite loss) before any checkpoint is written after it, so the latest checkpoint on disk is
the last good one; ``TrainConfig.on_nonfinite="skip"`` drops such updates instead. On the CPU the
check runs every step, before the update; on a GPU, to keep the step free of synchronisations,
it runs whenever the trainer reads values anyway (logging, evaluation, checkpoints, end of ``fit``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vlm_primer.training import distributed as D
from vlm_primer.training.checkpoint import (
    checkpoint_name,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    rotate_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from vlm_primer.training.config import TrainConfig
from vlm_primer.training.data import ResumableLoader, auto_num_workers, check_batch
from vlm_primer.training.optim import build_optimizer, cosine_warmup_scheduler
from vlm_primer.training.plot import LivePlot, in_jupyter_kernel
from vlm_primer.utils import seed_everything
from vlm_primer.validate import validation, value_checks_enabled


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss (or gradient norm) and ``on_nonfinite="raise"``."""


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None`` = plain fp32)."""
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Tensors (also inside dicts, lists, tuples) to ``device``; everything else unchanged."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def _looks_like_a_batch(data: Any) -> int | None:
    """The first dimension that all of item 0's tensors share, when it has two or more and they do (a ready-made
    batch, not a sample); None otherwise. For a hint only: a sample can look like that too."""
    try:
        item = data[0]
    except Exception:  # a dataset that cannot give item 0 has its own error to raise
        return None
    tensors = [v for v in item.values() if torch.is_tensor(v)] if isinstance(item, dict) else []
    sizes = {v.shape[0] if v.ndim else None for v in tensors}
    size = sizes.pop() if len(tensors) >= 2 and len(sizes) == 1 else None
    return size if size is not None and size > 1 else None


def _is_map_style(data: Any) -> bool:
    return (
        hasattr(data, "__len__")
        and hasattr(data, "__getitem__")
        and not isinstance(data, (torch.utils.data.IterableDataset, dict, str))
        and not isinstance(data, ResumableLoader)
    )


class _IterableSource:
    """An iterable of batches seen as epochs, resumed by skipping consumed batches."""

    def __init__(self, data: Iterable[Any]) -> None:
        self.data = data

    def iter_from(self, epoch: int, batch: int) -> Iterator[Any]:
        for obj in (self.data, getattr(self.data, "sampler", None), getattr(self.data, "batch_sampler", None)):
            if obj is not None and hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)
        return itertools.islice(iter(self.data), batch, None)


def _loss_of(out: Any) -> torch.Tensor:
    loss = out.get("loss") if isinstance(out, dict) else getattr(out, "loss", None)
    if loss is None:
        raise ValueError(
            f"model.forward(**batch) returned {type(out).__name__} without a loss; "
            "the batch must contain the targets and forward must return an object with .loss"
        )
    if not torch.is_tensor(loss) or loss.ndim != 0:
        raise ValueError(f"the model's loss must be a scalar tensor, got {getattr(loss, 'shape', loss)!r}")
    return loss


def _batch_size(batch: dict[str, Any]) -> int:
    for v in batch.values():
        n = _batch_size(v) if isinstance(v, dict) else v.shape[0] if isinstance(v, torch.Tensor) and v.ndim else 0
        if n:
            return n
    return 0


def _tokens(batch: dict[str, Any]) -> int:
    mask, ids = batch.get("attention_mask"), batch.get("input_ids")
    if isinstance(mask, torch.Tensor) and mask.device.type == "cpu":
        own = int(mask.sum())
    else:
        own = ids.numel() if isinstance(ids, torch.Tensor) else 0
    return own + sum(_tokens(v) for v in batch.values() if isinstance(v, dict))


class Trainer:
    """Train ``model`` on ``train_data`` with ``config``; see the module docstring.

    ``eval_fn(model) -> dict[str, float]`` runs every ``config.eval_every`` steps and at the last
    step (in ``eval`` mode under ``torch.no_grad``, on every rank; rank 0 records it). An explicit
    ``optimizer`` replaces the default AdamW (the cosine schedule is still applied to it).
    ``collate_fn`` turns a list of samples into a batch dict (map-style data only; default
    ``torch.utils.data.default_collate``).
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Any,
        config: TrainConfig | None = None,
        *,
        eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        config = TrainConfig() if config is None else config
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config, self.eval_fn = config, eval_fn
        self.device = D.init_distributed(config.device)
        self.is_main = D.is_main_process()
        self.model = model.to(self.device)
        self.amp_dtype = resolve_precision(config.precision, self.device)

        self.optimizer = optimizer or build_optimizer(
            self.model, config.lr, config.weight_decay, config.betas, config.eps
        )
        self.scheduler = cosine_warmup_scheduler(
            self.optimizer, config.warmup_steps, config.max_steps, config.min_lr_ratio
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

        self.ddp: DistributedDataParallel | None = None
        train_model: nn.Module = self.model
        if D.is_distributed():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = train_model = DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=config.find_unused_parameters
            )
        mode = config.compile if isinstance(config.compile, str) else None  # e.g. "reduce-overhead": CUDA graphs
        self._eager_model = train_model
        self.train_model = torch.compile(train_model, mode=mode) if config.compile else train_model
        self.num_workers = (auto_num_workers(self.device) if config.num_workers == "auto" else config.num_workers)

        if _is_map_style(train_data):
            self.source: Any = ResumableLoader(
                train_data, config.batch_size, collate_fn=collate_fn, seed=config.seed,
                num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
            )
        elif isinstance(train_data, ResumableLoader):
            self.source = train_data
        elif hasattr(train_data, "__iter__"):
            if collate_fn is not None:
                raise ValueError("collate_fn only applies to map-style datasets; batch your iterable yourself")
            self.source = _IterableSource(train_data)
        else:
            raise TypeError(f"train_data must be a dataset or an iterable of batches, got {type(train_data).__name__}")

        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.history: list[dict[str, Any]] = []
        self._iter: Iterator[Any] | None = None
        self._started = False
        self._last_saved: int | None = None
        self._step_lr = config.lr
        self._window_sum, self._window_count = torch.zeros((), device=self.device), 0
        self.skipped = 0  # updates dropped for a non-finite loss (on_nonfinite="skip")
        # Non-finite guard ("raise" mode), kept on the device: step of the first bad loss (-1: none), and the
        # step and value of the last finite loss before it.
        self._first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        self._last_finite = torch.full((2,), float("nan"), device=self.device)
        self._inputs_checked = False
        # Throughput of the current logging window (host clock; a record syncs with the device anyway).
        self._window_start: float | None = None
        self._window_samples, self._window_tokens, self._data_seconds, self._window_steps = 0, 0, 0.0, 0
        self._flops_per_step: float | None = None
        self.peak_tflops = config.peak_tflops if config.peak_tflops is not None else self._known_peak()

    def _known_peak(self) -> float | None:
        """On a GPU the compute table knows, its dense 16-bit peak when training under bf16/fp16 autocast (so MFU
        is logged without ``peak_tflops``); None elsewhere, fp32 included (TF32 or not is the user's setting)."""
        if self.device.type != "cuda" or self.amp_dtype is None:
            return None
        from vlm_primer.recipes.compute import gpu_of

        gpu = gpu_of(torch.cuda.get_device_name(self.device))
        return gpu.tflops if gpu is not None else None

    # ------------------------------------------------------------------ data

    def _next_batch(self) -> Any:
        """The next batch, counted, still where the data put it (the host, for a loader)."""
        start = time.perf_counter()
        batch = self._fetch_batch()
        self._count(batch)
        self._data_seconds += time.perf_counter() - start
        return batch

    def _to_device(self, batch: Any) -> Any:
        start = time.perf_counter()
        batch = move_to_device(batch, self.device)
        self._data_seconds += time.perf_counter() - start
        return batch

    def _count(self, batch: dict[str, Any]) -> None:
        """Samples and tokens of a batch, read on the host (no device sync). Samples: the batch size of its
        first tensor (nested dicts too: a DPO batch's ``chosen`` and ``rejected`` are one sample each pair);
        tokens: each (nested) attention mask's sum while it is still on the CPU, else the number of token ids."""
        self._window_samples += _batch_size(batch)
        self._window_tokens += _tokens(batch)

    def _fetch_batch(self) -> Any:
        while True:
            if self._iter is None:
                self._iter = self.source.iter_from(self.epoch, self.batch_in_epoch)
            try:
                batch = next(self._iter)
            except StopIteration:
                if self.batch_in_epoch == 0:
                    raise ValueError("train_data yielded no batches") from None
                self.epoch, self.batch_in_epoch, self._iter = self.epoch + 1, 0, None
                continue
            self.batch_in_epoch += 1
            return check_batch(batch)

    # ------------------------------------------------------------------ one optimizer step

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _check_inputs_now(self) -> bool:
        """Whether the models check input values in this step (``TrainConfig.validate_inputs``)."""
        mode = self.config.validate_inputs
        if mode == "first_step":
            return value_checks_enabled() and not self._inputs_checked
        return mode == "always"

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimizer step over ``grad_accum_steps`` micro-batches; (mean loss, grad norm)."""
        cfg = self.config
        self.train_model.train()
        if cfg.compile in ("reduce-overhead", "max-autotune") and self.train_model is not self._eager_model:
            torch.compiler.cudagraph_mark_step_begin()  # a new step: the CUDA graphs' last outputs may be reused
        batches = [self._next_batch() for _ in range(cfg.grad_accum_steps)]
        scales, shares = self._loss_weights(batches)
        # this process's loss, and its part of the logged loss (under DDP with loss_items, the processes' mean of
        # the parts is the global batch's loss; elsewhere the two are equal)
        mean, logged = torch.zeros((), device=self.device), torch.zeros((), device=self.device)
        with validation(self._check_inputs_now()):
            for micro, batch in enumerate(batches):
                batch = self._to_device(batch)
                last = micro == cfg.grad_accum_steps - 1
                sync = self.ddp.no_sync() if (self.ddp is not None and not last) else contextlib.nullcontext()
                with sync:
                    try:
                        with self._autocast():
                            loss = _loss_of(self.train_model(**batch))
                    except Exception as e:
                        if self.step == 0:
                            self._note_batches(e)
                        raise
                    self.scaler.scale(loss.float() * scales[micro]).backward()
                mean += loss.detach().float() * shares[micro]
                logged += loss.detach().float() * scales[micro]
        self._inputs_checked = True
        grad_norm = None
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self._step_lr = self.optimizer.param_groups[0]["lr"]
        if self._guard(mean, grad_norm):
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self._window_sum += logged
            self._window_count += 1
        else:  # on_nonfinite="skip": drop this update, keep the schedule and the data moving
            self.skipped += 1
            if self.scaler.is_enabled():
                self.scaler.update(self.scaler.get_scale())
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # fp16 skips steps on overflow; the schedule still advances
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        if hasattr(self.model, "post_step"):
            self.model.post_step()
        self.step += 1
        self._window_steps += 1
        return mean, grad_norm

    def _loss_weights(self, batches: list[Any]) -> tuple[list[Any], list[float]]:
        """What each micro-batch's mean loss is multiplied by before its backward pass (and for the logged loss), and
        its share of this process's loss: its items (``model.loss_items(batch)``, else its samples) over the step's.
        Under DDP, with ``loss_items``, the first divides by the mean of the processes' items instead (one
        all-reduce), as DDP then averages the gradients over the processes. Counted on the host, before the copy to
        the device."""
        count = getattr(self.model, "loss_items", None)
        if len(batches) == 1 and (count is None or not D.is_distributed()):
            return [1.0], [1.0]
        items = [int(count(b)) if count is not None else _batch_size(b) for b in batches]
        if count is not None and min(items) <= 0:
            micro = items.index(min(items))
            raise ValueError(f"micro-batch {micro + 1} of {len(batches)} in step {self.step + 1} has no loss items "
                             f"({type(self.model).__name__}.loss_items gave {items[micro]}: every target ignored?), "
                             "so its mean loss is undefined")
        if min(items) <= 0:  # no tensor to read a batch size from: equal weights
            items = [1] * len(batches)
        shares = [n / sum(items) for n in items]
        if count is None or not D.is_distributed():
            return shares, shares
        total = torch.tensor(float(sum(items)), dtype=torch.float64).to(self.device, non_blocking=True)
        mean = D.all_reduce_mean(total)
        return [(n / mean).float() for n in items], shares

    def _note_batches(self, error: Exception) -> None:
        """Add a hint to the first step's ``error`` when the dataset batched by the ``ResumableLoader`` seems to hold
        whole batches."""
        size = _looks_like_a_batch(self.source.dataset) if isinstance(self.source, ResumableLoader) else None
        if size is not None:
            error.add_note(f"item 0 of train_data looks like a whole batch (all its tensors start with {size}): a "
                           "list of ready-made batches is read as a dataset of samples and batched again. To train on "
                           "them as they are, wrap them: Trainer(model, Batches(batches), config), with "
                           "`from vlm_primer.training import Batches`.")

    # ------------------------------------------------------------------ non-finite guard

    def _guard(self, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> bool:
        """Record a non-finite loss or gradient norm; ``False`` if this update must be dropped."""
        bad = ~torch.isfinite(loss)
        if grad_norm is not None and not self.scaler.is_enabled():  # fp16 overflow is the scaler's job
            bad = bad | ~torch.isfinite(grad_norm)
        if self.config.on_nonfinite == "skip":  # the same decision on every rank
            return not bool(D.all_reduce_mean(bad.float()) > 0)
        fresh = self._first_bad < 0
        step = torch.full((), self.step + 1, dtype=torch.long, device=self.device)
        good = torch.stack([step.float(), loss])
        self._last_finite = torch.where(fresh & ~bad, good, self._last_finite)
        self._first_bad = torch.where(fresh & bad, step, self._first_bad)
        if self.device.type == "cpu":  # free here: stop before the bad update touches the weights
            try:
                self.raise_if_nonfinite()
            except NonFiniteLossError:
                self.optimizer.zero_grad(set_to_none=True)
                raise
        return True

    def raise_if_nonfinite(self) -> None:
        """Raise :class:`NonFiniteLossError` if a step since the start had a non-finite loss (``raise`` mode)."""
        if self.config.on_nonfinite != "raise" or not bool(D.all_reduce_mean((self._first_bad >= 0).float()) > 0):
            return
        bad, (last_step, last_loss) = int(self._first_bad), self._last_finite.tolist()
        where = (f"the last finite loss was {last_loss:.4g} at step {int(last_step)}" if last_step == last_step
                 else "no finite loss was seen since this Trainer started")
        saved = list_checkpoints(self.config.ckpt_dir) if self.config.ckpt_dir is not None else []
        disk = (f"The latest checkpoint, {saved[-1][1]}, is from before it and was kept. " if saved else "")
        raise NonFiniteLossError(
            f"the loss (or gradient norm) is not finite at step {bad}; {where}. Training stopped and nothing "
            f"was saved after it. {disk}Lower TrainConfig.lr, keep grad_clip on, check the batch, or set "
            "on_nonfinite='skip' to drop such updates."
        )

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Run ``eval_fn`` on the (unwrapped) model in eval mode; {} without an ``eval_fn``."""
        if self.eval_fn is None:
            return {}
        self.model.eval()
        try:
            metrics = self.eval_fn(self.model)
        finally:
            self.model.train()
        if not isinstance(metrics, dict):
            raise TypeError(f"eval_fn must return a dict of metrics, got {type(metrics).__name__}")
        return {k: (v.item() if torch.is_tensor(v) else v) for k, v in metrics.items()}

    # ------------------------------------------------------------------ the loop

    def fit(self, steps: int | None = None, *, resume: bool | str | None = None) -> list[dict[str, Any]]:
        """Train until ``config.max_steps`` (or for at most ``steps`` more steps); return the history.

        Calling ``fit`` again continues where the previous call stopped. On the first call
        ``resume`` (default ``config.resume``) decides whether to continue from ``config.ckpt_dir``.
        """
        cfg = self.config
        self.start(resume)
        target = cfg.max_steps if steps is None else min(cfg.max_steps, self.step + steps)
        show = self.is_main and cfg.progress and self.step < target
        bar = None
        if show:
            from tqdm.auto import tqdm

            # In a notebook every redraw is a widget message the browser must render: once a second is plenty.
            bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", dynamic_ncols=True,
                       mininterval=1.0 if in_jupyter_kernel() else 0.1)
        plot = None
        if self.is_main and self.step < target and (cfg.live_plot is True or (cfg.live_plot == "auto" and in_jupyter_kernel())):
            plot = LivePlot()
        try:
            self._window_start = time.perf_counter()
            while self.step < target:
                if self._flops_per_step is None and self.peak_tflops is not None:
                    from torch.utils.flop_counter import FlopCounterMode

                    # counted once (the steps are alike), on the eager model: compiling under the counter's module
                    # hooks would compile the model a second time once they are gone
                    compiled, self.train_model = self.train_model, self._eager_model
                    try:
                        with FlopCounterMode(display=False) as counter:
                            _, grad_norm = self.train_step()
                    finally:
                        self.train_model = compiled
                    self._flops_per_step = float(counter.get_total_flops())
                else:
                    _, grad_norm = self.train_step()
                s = self.step
                do_eval = self.eval_fn is not None and (
                    s == cfg.max_steps or (cfg.eval_every is not None and s % cfg.eval_every == 0)
                )
                if s % cfg.log_every == 0 or do_eval or s == cfg.max_steps:
                    self.raise_if_nonfinite()
                    record = self._record(grad_norm)
                    if do_eval:
                        record.update(self._untimed(self.evaluate))
                    self.history.append(record)
                    if bar is not None:
                        shown = {k: v for k, v in record.items()
                                 if isinstance(v, float) and k not in ("grad_norm", "tokens_per_s", "mfu")}
                        bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()})
                    if plot is not None:
                        plot.update(self.history)
                if bar is not None:
                    bar.update(1)
                if cfg.ckpt_dir is not None and cfg.ckpt_every is not None and s % cfg.ckpt_every == 0:
                    self._untimed(self.save_checkpoint)
            self.raise_if_nonfinite()
            if cfg.ckpt_dir is not None and self._last_saved != self.step and self.step > 0:
                self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
            if plot is not None:
                plot.close(self.history)
        return self.history

    def _record(self, grad_norm: torch.Tensor | None) -> dict[str, Any]:
        # A window whose updates were all skipped has no loss to report: NaN, not a made-up 0.
        mean = D.all_reduce_mean(self._window_sum / self._window_count if self._window_count
                                 else torch.full((), float("nan"), device=self.device))
        record: dict[str, Any] = {"step": self.step, "epoch": self.epoch, "loss": mean.item(), "lr": self._step_lr}
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        if self.skipped:
            record["skipped"] = self.skipped
        record.update(self._throughput())
        self._window_sum.zero_()
        self._window_count = 0
        return record

    def _untimed(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` outside the throughput window: evaluation and checkpoints are not training time."""
        start = time.perf_counter()
        try:
            return fn()
        finally:
            if self._window_start is not None:
                self._window_start += time.perf_counter() - start

    def _throughput(self) -> dict[str, float]:
        """Samples/s and tokens/s (all ranks), the fraction of the time spent waiting for data and, with
        ``TrainConfig.peak_tflops`` (or a GPU the compute table knows), the model FLOPs utilisation since the last
        record."""
        now = time.perf_counter()
        elapsed = now - (self._window_start or now)
        out: dict[str, float] = {}
        if elapsed > 0:
            world = D.world_size()
            out["samples_per_s"] = self._window_samples * world / elapsed
            if self._window_tokens:
                out["tokens_per_s"] = self._window_tokens * world / elapsed
            out["data_wait"] = min(1.0, self._data_seconds / elapsed)
            if self._flops_per_step is not None and self.peak_tflops:
                out["mfu"] = self._flops_per_step * self._window_steps / elapsed / (self.peak_tflops * 1e12)
        self._window_start, self._window_samples, self._window_tokens, self._data_seconds = now, 0, 0, 0.0
        self._window_steps = 0
        return out

    # ------------------------------------------------------------------ checkpoints

    def start(self, resume: bool | str | None = None) -> None:
        """Resume from a checkpoint, or check that a fresh run overwrites nothing: what the first ``fit`` does first.
        Called before ``fit``, it raises every problem with ``ckpt_dir`` and ``resume`` before anything is built on
        them (the ``train`` command does this); later calls do nothing."""
        if not self._started:
            self._start(self.config.resume if resume is None else resume)

    def _start(self, resume: bool | str) -> None:
        cfg = self.config
        if cfg.ckpt_dir is not None and self.is_main:  # a folder it cannot make fails now, not at the first save
            try:
                Path(cfg.ckpt_dir).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise NotADirectoryError(f"ckpt_dir {cfg.ckpt_dir} cannot be a checkpoint folder ({e.strerror}); "
                                         "nothing was trained") from None
        self._started = True
        existing = list_checkpoints(cfg.ckpt_dir) if cfg.ckpt_dir is not None else []
        path: Path | None = None
        if resume is False and existing:
            raise FileExistsError(
                f"{cfg.ckpt_dir} already holds {len(existing)} checkpoint(s) (latest: step {existing[-1][0]}); "
                "nothing was overwritten. Resume it (resume=True or 'auto'; `--resume auto` on the command line) "
                "to continue that run, or use another ckpt_dir."
            )
        if resume in (True, "auto"):
            if cfg.ckpt_dir is None:
                raise ValueError(f"resume={resume!r} needs config.ckpt_dir")
            if not existing and resume is True:
                raise FileNotFoundError(f"resume=True but {cfg.ckpt_dir} holds no checkpoint")
            path = existing[-1][1] if existing else None
        elif resume is not False:
            path = Path(resume)
        if path is not None:
            self.load_checkpoint(path)
            newer = [step for step, _ in existing if step > self.step]
            if newer:  # its steps would collide with them, or rotation delete them
                raise FileExistsError(
                    f"resuming from step {self.step}, but {cfg.ckpt_dir} holds later checkpoints (steps {newer}); "
                    "nothing was changed. Move them away, or set another ckpt_dir for the new branch of the run."
                )
        elif D.is_distributed():  # a fresh DDP run: rank r draws its own dropout / augmentation
            seed_everything(cfg.seed + D.rank())

    def state(self) -> dict[str, Any]:
        """This rank's resumable state: RNG, data position, loss window (gathered at save time)."""
        return {
            "rng": rng_state(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "window_sum": self._window_sum.item(),
            "window_count": self._window_count,
            "skipped": self.skipped,
        }

    def save_checkpoint(self, path: str | os.PathLike | None = None, *, overwrite: bool = False) -> Path | None:
        """Write a checkpoint (rank 0 writes; every rank must call). Default: ``ckpt_dir/step_N``.

        An existing checkpoint at that path is kept (``FileExistsError``) unless ``overwrite=True``.
        """
        cfg = self.config
        self.raise_if_nonfinite()  # never write weights that a NaN has reached
        if path is None:
            if cfg.ckpt_dir is None:
                raise ValueError("save_checkpoint() needs a path or config.ckpt_dir")
            path = Path(cfg.ckpt_dir) / checkpoint_name(self.step)
        ranks = D.gather_objects(self.state())
        out = None
        if self.is_main:
            state = {
                "step": self.step,
                "world_size": D.world_size(),
                "ranks": ranks,
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "history": self.history,
                "config": cfg.to_dict(),
            }
            out = save_checkpoint(path, model=self.model, optimizer=self.optimizer, state=state, overwrite=overwrite)
            if cfg.keep_last is not None and cfg.ckpt_dir is not None:
                rotate_checkpoints(cfg.ckpt_dir, cfg.keep_last)
        D.barrier()
        self._last_saved = self.step
        return out

    def load_checkpoint(self, path: str | os.PathLike) -> dict[str, Any]:
        """Restore everything from a checkpoint directory written by :meth:`save_checkpoint`."""
        # The schedule (lr, warmup, max_steps, min ratio) and the weight decay follow the current config, so a run
        # can be extended or its rate changed; with an unchanged config the LR is recomputed to the same floats.
        base_lrs = list(self.scheduler.base_lrs)
        decays = [group.get("weight_decay") for group in self.optimizer.param_groups]
        state = load_checkpoint(path, model=self.model, optimizer=self.optimizer,
                                require=("step", "ranks", "scheduler", "history"))
        sched = dict(state["scheduler"], lr_lambdas=[None] * len(self.scheduler.lr_lambdas), base_lrs=base_lrs)
        self.scheduler.load_state_dict(sched)
        for group, base, decay in zip(self.optimizer.param_groups, base_lrs, decays):
            group["initial_lr"] = base
            if decay is not None:
                group["weight_decay"] = decay
        last = self.scheduler.last_epoch
        for group, base, fn in zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas):
            group["lr"] = base * fn(last)  # LambdaLR's own formula
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.history = state["step"], state["history"]
        ranks = state["ranks"]
        if len(ranks) != D.world_size():
            warnings.warn(
                f"checkpoint was written by {len(ranks)} process(es), resuming with {D.world_size()}: "
                "RNG and data position come from rank 0, so the run is not an exact continuation",
                stacklevel=2,
            )
        mine = ranks[D.rank()] if len(ranks) == D.world_size() else ranks[0]
        self.epoch, self.batch_in_epoch = mine["epoch"], mine["batch_in_epoch"]
        self._window_sum = torch.tensor(mine["window_sum"], dtype=torch.float32, device=self.device)
        self._window_count = mine["window_count"]
        self.skipped = mine.get("skipped", 0)
        self._iter = None
        set_rng_state(mine["rng"])
        self._started, self._last_saved = True, self.step
        return state
