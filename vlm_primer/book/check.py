"""Consistency checks run by ``make test``: book.toml ⇄ notebooks/ ⇄ vlm_primer, jupytext pairs, stale outputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from vlm_primer.book.manifest import Book, load_book


def _cells(path: Path) -> list[tuple[str, str]]:
    import jupytext

    nb = jupytext.read(path)
    return [(c.cell_type, c.source.strip()) for c in nb.cells if c.source.strip()]


def pair_problems(ipynb: Path) -> list[str]:
    """Problems with one jupytext pair: the ``.py`` missing, or the two disagreeing on any cell."""
    py = ipynb.with_suffix(".py")
    if not py.is_file():
        return [f"{ipynb.name}: paired {py.name} is missing"]
    try:
        a, b = _cells(ipynb), _cells(py)
    except Exception as e:  # a merge conflict, a truncated file: say which, and go on checking the others
        return [f"{ipynb.name} or {py.name} cannot be read as a notebook ({type(e).__name__}: {str(e)[:120]})"]
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return [f"{ipynb.name} and {py.name} disagree at cell {i + 1} ({x[0]} vs {y[0]}): {x[1][:60]!r} vs {y[1][:60]!r}"]
    if len(a) != len(b):
        return [f"{ipynb.name} has {len(a)} cells but {py.name} has {len(b)}"]
    return []


def check_book(book: Book | None = None) -> list[str]:
    """Every problem found, as one line each (an empty list means the book is consistent)."""
    book = book or load_book()
    nb_dir = book.root / "notebooks"
    listed = {c.notebook for c in book.chapters}
    problems: list[str] = []
    on_disk = sorted(nb_dir.glob("*.ipynb")) + sorted(p for p in nb_dir.glob("*.py") if not p.with_suffix(".ipynb").exists())
    for path in on_disk:
        rel = f"notebooks/{path.with_suffix('.ipynb').name}"
        if rel not in listed:
            problems.append(f"{path.relative_to(book.root)} is not listed in book.toml")
    for ch in book.chapters:
        ipynb, py = book.root / ch.notebook, book.root / ch.script
        if ch.written:
            for f in (ipynb, py):
                if not f.is_file():
                    problems.append(f"chapter {ch.id} is written but {f.relative_to(book.root)} is missing")
            for mod in ch.modules:
                try:
                    found = importlib.util.find_spec(mod) is not None
                except (ImportError, ValueError):  # a parent package that does not exist
                    found = False
                if not found:
                    problems.append(f"chapter {ch.id} is written but its module {mod} is missing")
        elif ipynb.is_file():
            problems.append(f"chapter {ch.id} has {ch.notebook} but book.toml marks it planned")
        if ipynb.is_file():
            problems.extend(pair_problems(ipynb))
            if ch.written:
                problems.extend(output_problems(ipynb, book.root))
    return problems


def output_problems(ipynb: Path, root: Path) -> list[str]:
    """Saved outputs that did not come from the current ``.py`` and package sources (``make notebooks`` mends it)."""
    import nbformat

    from vlm_primer.book.execute import stale_reasons

    try:
        nb = nbformat.read(ipynb, as_version=4)
    except Exception:  # noqa: BLE001 - unreadable: pair_problems has named it already
        return []
    why = stale_reasons(nb, root)
    if not why:
        return []
    more = f" and {len(why) - 3} more" if len(why) > 3 else ""
    return [f"{ipynb.relative_to(root)}: saved outputs are stale ({'; '.join(why[:3])}{more}); "
            f"re-execute with `make notebooks`"]
