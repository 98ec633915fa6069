"""``python -m vlm_primer.train <recipe> [options]``: train any registered recipe, alone or under torchrun.

Examples::

    python -m vlm_primer.train --list
    python -m vlm_primer.train clip --preset tiny --steps 300
    python -m vlm_primer.train llava --preset tiny --stage 2 --peft lora --peft-r 8
    python -m vlm_primer.train dpo --preset tiny --steps 300
    torchrun --nproc_per_node 8 -m vlm_primer.train clip --preset base \\
        --shards "data/shapes/shard-{000000..000099}.tar" --batch-size 256 --precision bf16 --compile \\
        --ckpt-dir runs/clip --ckpt-every 1000 --resume auto

Flags left out keep the recipe's own defaults. ``--batch-size`` is per process. Recipes live in
the chapter packages (see :mod:`vlm_primer.training.recipes`). Explained in notebook 06.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from vlm_primer.training import distributed as D
from vlm_primer.training.config import COMPILE_MODES, TrainConfig
from vlm_primer.training.data import auto_num_workers
from vlm_primer.training.recipes import RecipeArgs, TrainJob, available_recipes, get_recipe, load_extra_modules
from vlm_primer.utils import SCALES, seed_everything


def _parse_set(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        out[key] = value
    return out


def _workers(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 0 or 'auto', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vlm_primer.train", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", nargs="?", help="registered recipe name (see --list)")
    p.add_argument("--list", action="store_true", help="list the registered recipes and exit")
    p.add_argument("--recipe-module", action="append", default=[], metavar="MODULE",
                   help="extra module to import for recipes (repeatable)")
    p.add_argument("--preset", default="tiny", choices=SCALES)
    p.add_argument("--shards", help='WebDataset shards, e.g. "data/shard-{000000..000009}.tar"')
    p.add_argument("--steps", type=int, help="max optimizer steps")
    p.add_argument("--batch-size", type=int, help="micro-batch size per process")
    p.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step, weighed by what their loss "
                   "averages (a language model's answer tokens): the gradient of one batch of all of them")
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--grad-clip", type=float, help="max grad norm (0 = off)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--compile-mode", choices=COMPILE_MODES,
                   help="torch.compile with this mode (reduce-overhead: CUDA graphs, for small models on a GPU)")
    p.add_argument("--device")
    p.add_argument("--num-workers", type=_workers, default="auto",
                   help="data loader processes (default auto: none on a CPU, several on a GPU)")
    p.add_argument("--log-every", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--ckpt-dir")
    p.add_argument("--ckpt-every", type=int)
    p.add_argument("--keep-last", type=int, help="keep only the newest N checkpoints (default: keep all)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="auto|PATH",
                   help="continue from the latest checkpoint in --ckpt-dir (or 'auto', or a checkpoint path)")
    p.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s at this precision: logs MFU "
                   "(default: the table's figure for a GPU it knows, under bf16/fp16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe option (repeatable)")
    p.add_argument("--stage", type=int, help="shorthand for --set stage=N (LLaVA's training stages, chapter 05)")
    p.add_argument("--peft", choices=("lora", "dora", "qlora", "vera"),
                   help="train adapters on the model's trainable linear layers instead (chapter 06b)")
    p.add_argument("--peft-r", type=int, default=8, help="the adapters' rank (default 8; alpha = 2 r)")
    return p


def config_overrides(ns: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig fields set on the command line (flags left out are not included)."""
    pairs = {
        "max_steps": ns.steps, "batch_size": ns.batch_size, "grad_accum_steps": ns.grad_accum, "lr": ns.lr,
        "weight_decay": ns.weight_decay, "warmup_steps": ns.warmup_steps, "precision": ns.precision,
        "compile": ns.compile_mode or ns.compile, "device": ns.device, "log_every": ns.log_every, "eval_every": ns.eval_every,
        "ckpt_dir": ns.ckpt_dir, "ckpt_every": ns.ckpt_every, "keep_last": ns.keep_last, "resume": ns.resume,
        "peak_tflops": ns.peak_tflops,
    }
    out = {k: v for k, v in pairs.items() if v is not None}
    if ns.grad_clip is not None:
        out["grad_clip"] = ns.grad_clip if ns.grad_clip > 0 else None
    if ns.no_progress:
        out["progress"] = False
    out["seed"], out["num_workers"], out["live_plot"] = ns.seed, ns.num_workers, False
    return out


def _check_flags(ns: argparse.Namespace) -> None:
    """What can be refused from the flags alone, before anything is built or trained."""
    from vlm_primer.training.checkpoint import list_checkpoints
    from vlm_primer.validate import check_int

    if ns.peft:
        check_int(ns.peft_r, "--peft-r")
    if ns.grad_clip is not None and not (math.isfinite(ns.grad_clip) and ns.grad_clip >= 0):
        raise ValueError(f"--grad-clip must be a max norm >= 0 (0 = off), got {ns.grad_clip}")
    if ns.resume in (True, "auto") and not ns.ckpt_dir:
        raise ValueError(f"--resume{'' if ns.resume is True else ' auto'} continues the run in --ckpt-dir: give "
                         "--ckpt-dir, or --resume PATH to a checkpoint")
    if isinstance(ns.resume, str) and ns.resume != "auto":
        path = Path(ns.resume)
        if not path.is_dir():
            raise ValueError(f"--resume {ns.resume}: no such checkpoint folder")
        if list_checkpoints(path):
            raise ValueError(f"--resume {ns.resume} is a run's folder, not one checkpoint: use --ckpt-dir "
                             f"{ns.resume} --resume auto (its latest), or --resume {ns.resume}/step_N")
        if not ns.ckpt_dir:
            print(f"note: resuming from {ns.resume} without --ckpt-dir: the continued run saves no checkpoint",
                  file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    from vlm_primer.training.trainer import Trainer

    ns = build_parser().parse_args(argv)
    if ns.list:
        try:
            load_extra_modules(ns.recipe_module)
        except ValueError as e:
            build_parser().error(str(e))
        for name, r in available_recipes().items():
            print(f"{name:20s} {r.help}")
        return []
    if not ns.recipe:
        build_parser().error("a recipe name is required (see --list)")
    try:
        recipe = get_recipe(ns.recipe, ns.recipe_module)
        TrainConfig(**config_overrides(ns))  # bad flags fail here, before the recipe builds its data
        _check_flags(ns)
        device = D.init_distributed(ns.device or "auto")
        if ns.num_workers == "auto":  # the recipe's shard loaders get the same number as the Trainer
            ns.num_workers = auto_num_workers(device)
    except (ValueError, TypeError) as e:  # a bad flag: one line, the usage, exit code 2
        build_parser().error(str(e))
    try:
        seed_everything(ns.seed)
        options = _parse_set(ns.set + ([f"stage={ns.stage}"] if ns.stage is not None else []))
        args = RecipeArgs(preset=ns.preset, shards=ns.shards, batch_size=ns.batch_size, seed=ns.seed,
                          num_workers=ns.num_workers, grad_accum=ns.grad_accum, options=options)
        try:  # what a recipe, its options or the checkpoint folder refuse: a usage error before training starts
            job = recipe.build(args)
            if not isinstance(job, TrainJob):
                raise TypeError(f"recipe {ns.recipe!r} must return a TrainJob, got {type(job).__name__}")
            if ns.peft:
                from vlm_primer.recipes.peft import apply_peft, trainable_parameters

                total = sum(p.numel() for p in job.model.parameters() if p.requires_grad)
                apply_peft(job.model, ns.peft, ns.peft_r)
                if D.is_main_process():
                    print(f"--peft {ns.peft} (r={ns.peft_r}): {trainable_parameters(job.model):,} trainable "
                          f"parameters instead of {total:,}")
            config = job.config.replace(**config_overrides(ns))
            trainer = Trainer(job.model, job.train_data, config, eval_fn=job.eval_fn, collate_fn=job.collate_fn)
            trainer.start()  # resume, or refuse a folder that already holds a run
        except (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError) as e:
            build_parser().error(str(e))
        history = trainer.fit()
        if D.is_main_process() and history:
            last = history[-1]
            print(" ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items()))
            if config.ckpt_dir:
                print(f"checkpoints in {config.ckpt_dir}")
        return history
    finally:
        D.cleanup()


if __name__ == "__main__":
    main(sys.argv[1:])
