"""Command line of the book: ``python -m vlm_primer.book {check,build,sync,notebooks}``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlm_primer.book.check import check_book
from vlm_primer.book.manifest import load_book


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlm_primer.book", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", help="check book.toml against notebooks/ and the package, every jupytext pair, "
                                 "and that saved outputs follow from the current sources")
    b = sub.add_parser("build", help="execute the chapters that changed (in parallel) and build the HTML book")
    b.add_argument("--out", default="_build/html")
    b.add_argument("--jobs", type=int, default=None, help="chapters executed at once (default: one per core)")
    b.add_argument("--no-execute", action="store_true", help="render the saved .ipynb outputs instead of executing")
    s = sub.add_parser("sync", help="execute jupytext .py chapters and write their paired .ipynb with outputs")
    s.add_argument("paths", nargs="*", help="default: every written chapter")
    s.add_argument("--force", action="store_true", help="overwrite an .ipynb that has edits its .py lacks")
    sub.add_parser("notebooks", help="print the .ipynb of every written chapter")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, OSError) as e:  # a bad book.toml, a missing notebook, a refused sync: one line, exit 2
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    book = load_book()
    if args.cmd == "check":
        problems = check_book(book)
        for p in problems:
            print(f"book check: {p}", file=sys.stderr)
        if not problems:
            print(f"book check: OK ({len(book.written)} written, {len(book.chapters) - len(book.written)} planned chapters)")
        return 1 if problems else 0
    if args.cmd == "notebooks":
        print(" ".join(c.notebook for c in book.written))
        return 0
    if args.cmd == "sync":
        from vlm_primer.book.execute import sync

        paths = [Path(p) for p in args.paths] or [book.root / c.script for c in book.written]
        for p in paths:
            print(f"{p}: executed in {sync(p, book.root, force=args.force):.1f} s -> {p.with_suffix('.ipynb')}",
                  flush=True)
        return 0
    from vlm_primer.book.site import build

    index = build(args.out, execute=not args.no_execute, jobs=args.jobs, book=book,
                  log=lambda m: print(m, flush=True))
    print(f"The book is at {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
