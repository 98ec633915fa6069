"""``python -m vlm_primer.zoo {list,build,export,verify}``: the zoo from the command line (see ``zoo/__init__.py``)."""

from __future__ import annotations

import argparse
import sys

from vlm_primer.zoo import MODELS, build, card, export, measure, stale_upstream


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vlm_primer.zoo", description="small pretrained checkpoints")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the models and their cards' quality figures")
    b = sub.add_parser("build", help="retrain one model (or 'all') from scratch and write its file and card")
    b.add_argument("name", choices=(*MODELS, "all"))
    b.add_argument("--steps", type=int, help="override the recipe's steps (the card records it)")
    b.add_argument("--overwrite", action="store_true", help="replace the existing file and card")
    e = sub.add_parser("export", help="write one model as a transformers model + tokenizer")
    e.add_argument("name", choices=MODELS)
    e.add_argument("out_dir")
    v = sub.add_parser("verify", help="re-measure each model from its file and compare with its card; flag models "
                                      "whose upstream zoo models were rebuilt after them")
    v.add_argument("name", nargs="?", choices=MODELS)
    ns = p.parse_args(argv)
    if ns.cmd == "list":
        for name in MODELS:
            try:
                c = card(name)
                print(f"{name:12s} {c['model']:9s} {c['params']:>9,} params  {c['quality']}  ({c['command']})")
            except FileNotFoundError:
                print(f"{name:12s} (not built: python -m vlm_primer.zoo build {name})")
            except ValueError as err:  # a damaged card: say so, and list the others
                print(f"{name:12s} (unreadable: {err})")
    elif ns.cmd == "build":
        for name in (MODELS if ns.name == "all" else [ns.name]):
            try:
                c = build(name, steps=ns.steps, overwrite=ns.overwrite)
            except FileExistsError as err:
                p.error(str(err))
            print(f"{name}: {c['quality']} in {c['train_seconds']:.0f} s -> data/zoo/{name}.safetensors")
    elif ns.cmd == "export":
        try:
            print(export(ns.name, ns.out_dir))
        except (FileExistsError, ValueError) as err:   # a non-empty out_dir, or a model with no export
            p.error(str(err))
    else:
        bad = 0
        for name in ([ns.name] if ns.name else MODELS):
            got, want, stale = measure(name), card(name)["quality"], stale_upstream(name)
            ok = got == want and not stale
            bad += not ok
            print(f"{name}: card {want}, measured {got} {'OK' if got == want else 'MISMATCH'}"
                  + (f"; STALE: rebuilt since, {sorted(stale)}" if stale else ""))
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
