"""Evaluate a model of the book on the harness's suites: ``python -m vlm_primer.evaluate MODEL --suite NAME``.

Explained in notebook 07, §The harness. ``MODEL`` is a zoo name (``clip-tiny``, ``llava-tiny``, ...); ``--suite``
takes one or more suite names, or ``all`` for every suite the model has the capability for. Each run prints one
row per suite (score, bootstrap 95 % interval, the blind baseline beside it) and, with ``--out FILE``, writes the
records as JSON (never over an existing file unless ``--overwrite``: a file that appeared while the suites ran is
kept, and the records go to ``FILE-1.json`` beside it).

    python -m vlm_primer.evaluate llava-tiny --suite vqa pope --out runs/llava-tiny.json
    python -m vlm_primer.evaluate blip-tiny --suite aro winoground --head itm
    python -m vlm_primer.evaluate --list
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vlm_primer.evaluate", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    p.add_argument("model", nargs="?", help="a zoo model name")
    p.add_argument("--suite", nargs="+", default=["all"], help="suite names, or 'all' (every suite the model can run)")
    p.add_argument("--n", type=int, default=None, help="items per suite (each suite's default if omitted)")
    p.add_argument("--seed", type=int, default=0, help="which items are drawn, and the bootstrap's seed")
    p.add_argument("--head", choices=("itc", "itm"), default="itc", help="BLIP/FLAVA: score pairs with ITC or ITM")
    p.add_argument("--out", type=Path, default=None, help="write the records as JSON to this file")
    p.add_argument("--overwrite", action="store_true", help="allow --out to replace an existing file")
    p.add_argument("--no-items", action="store_true", help="leave the per-item results out of the JSON")
    p.add_argument("--list", action="store_true", help="list the suites and what each needs, then exit")
    return p


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    from vlm_primer.evaluation.harness import evaluate, leaderboard, wrap
    from vlm_primer.evaluation.suites import SUITES, get_suite

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for s in SUITES.values():
            print(f"{s.name:<12} needs {s.needs:<9} {s.metric:<26} {s.description}")
        return []
    if not args.model:
        parser.error("give a MODEL (a zoo name) or --list")
    if args.out is not None:
        if args.out.is_dir():
            parser.error(f"--out {args.out} is a folder: give a file name, e.g. {args.out / (args.model + '.json')}")
        if args.out.exists() and not args.overwrite:
            parser.error(f"{args.out} exists; pass --overwrite to replace it")
        parent = next((p for p in args.out.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            parser.error(f"--out {args.out}: {parent} is a file, not a folder")
    try:
        model = wrap(args.model, head=args.head)
        names = ([s.name for s in SUITES.values() if s.needs in model.capabilities] if args.suite == ["all"]
                 else [get_suite(s).name for s in args.suite])
        records = []
        for name in names:
            records.append(evaluate(model, name, n=args.n, seed=args.seed, keep_items=not args.no_items))
            r = records[-1]
            print(f"{name}: {r['metric']} {r['score']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}], blind "
                  f"{r['blind']['score']:.3f} ({r['n']} items, {r['items_per_second']:.1f} items/s)", flush=True)
    except (ValueError, OSError) as err:  # unknown model or suite, a missing capability or file, bad n: one line
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    print(leaderboard(records))
    if args.out is not None:
        written = _write(args.out, json.dumps(records, indent=1) + "\n", args.overwrite)
        print(f"wrote {written}")
    return records


def _write(out: Path, text: str, overwrite: bool) -> Path:
    """``text`` to ``out`` (replaced whole with ``overwrite``); without it never over a file, even one created since
    the start: then to ``out-1.json``, ``out-2.json``, ... Returns the path written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if overwrite:
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, out)
        return out
    target, k = out, 0
    while True:
        try:
            with open(target, "x") as f:
                f.write(text)
            return target
        except FileExistsError:
            k += 1
            target = out.with_name(f"{out.stem}-{k}{out.suffix}")


if __name__ == "__main__":
    main(sys.argv[1:])
