"""book.toml is the one manifest: it loads, it is consistent with notebooks/, and the HTML build follows it."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import jupytext
import nbformat
import pytest

from vlm_primer.book import check_book, load_book
from vlm_primer.book.build import build

ROOT = Path(__file__).resolve().parents[1]

BOOK_HEAD = """
[book]
title = "T"
authors = ["A"]
description = "D"
language = "en"
"""


def chapter(id_, slug, status="written", modules=("vlm_primer.utils",)):
    mods = ", ".join(f'"{m}"' for m in modules)
    return f"""
[[chapter]]
id = "{id_}"
title = "Chapter {id_}"
notebook = "notebooks/{id_}_{slug}.ipynb"
modules = [{mods}]
survey_section = "1"
cpu_budget_s = 60
status = "{status}"
"""


def make_repo(tmp_path: Path, toml: str, notebooks: dict[str, str]) -> Path:
    (tmp_path / "book.toml").write_text(BOOK_HEAD + toml)
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    for stem, code in notebooks.items():
        nb = jupytext.reads(textwrap.dedent(code), fmt="py:percent")
        jupytext.write(nb, nb_dir / f"{stem}.py", fmt="py:percent")
        jupytext.write(nb, nb_dir / f"{stem}.ipynb")
    return tmp_path


SIMPLE = """
# %% [markdown]
# # Hello
# %%
x = 6 * 7
print(x)
"""


def test_real_book_is_consistent():
    book = load_book(ROOT)
    assert [c.id for c in book.chapters] == [f"{i:02d}" for i in range(9)]
    assert {c.id for c in book.written} >= {"00", "01"}
    assert check_book(book) == []


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.replace('status = "written"', 'status = "done"', 1), "status must be one of"),
        (lambda t: t.replace('id = "00"', 'id = "07"', 1), "does not match notebook"),
        (lambda t: t.replace("cpu_budget_s = 60", "cpu_budget_s = -1", 1), "cpu_budget_s"),
        (lambda t: t.replace('survey_section = "1"\n', "", 1), "lacks"),
        (lambda t: t + chapter("00", "again"), "duplicate"),
        (lambda t: chapter("01", "b") + t, "in order"),
        (lambda t: t + "\nextra = 1\n", "unknown keys"),
    ],
)
def test_bad_manifest_is_a_clear_error(tmp_path, mutate, message):
    make_repo(tmp_path, mutate(chapter("00", "a")), {})
    with pytest.raises(ValueError, match=message):
        load_book(tmp_path)


def test_notebook_missing_from_manifest(tmp_path):
    make_repo(tmp_path, chapter("00", "a"), {"00_a": SIMPLE, "01_stray": SIMPLE})
    problems = check_book(load_book(tmp_path))
    assert any("01_stray" in p and "not listed" in p for p in problems), problems


def test_written_chapter_missing_notebook_or_module(tmp_path):
    toml = chapter("00", "a") + chapter("01", "b", modules=("vlm_primer.no_such_module",))
    make_repo(tmp_path, toml, {"00_a": SIMPLE})
    problems = check_book(load_book(tmp_path))
    assert any("01_b.ipynb is missing" in p for p in problems), problems
    assert any("vlm_primer.no_such_module is missing" in p for p in problems), problems


def test_planned_chapter_with_a_notebook_is_flagged(tmp_path):
    make_repo(tmp_path, chapter("00", "a", status="planned"), {"00_a": SIMPLE})
    assert any("marks it planned" in p for p in check_book(load_book(tmp_path)))


def test_drifted_pair_is_flagged(tmp_path):
    root = make_repo(tmp_path, chapter("00", "a"), {"00_a": SIMPLE})
    assert check_book(load_book(root)) == []
    py = root / "notebooks/00_a.py"
    py.write_text(py.read_text().replace("6 * 7", "6 * 9"))
    problems = check_book(load_book(root))
    assert any("disagree" in p and "6 * 7" in p for p in problems), problems
    py.unlink()
    assert any("00_a.py is missing" in p for p in check_book(load_book(root)))


def test_html_book_follows_manifest_order(tmp_path):
    toml = chapter("00", "a") + chapter("01", "b") + chapter("02", "c", status="planned")
    root = make_repo(tmp_path, toml, {"00_a": SIMPLE, "01_b": SIMPLE.replace("Hello", "World")})
    index = build("_build/html", execute_notebooks=True, book=load_book(root))
    text = index.read_text()
    assert text.index("00_a.html") < text.index("01_b.html")
    assert "Chapter 02 (planned)" in text
    page = (root / "_build/html/00_a.html").read_text()
    assert "42" in page, "the executed output must be in the page"
    assert 'href="01_b.html"' in page and 'class="vp-nav"' in page


def test_sync_writes_executed_pair(tmp_path):
    from vlm_primer.book.build import sync

    root = make_repo(tmp_path, chapter("00", "a"), {"00_a": SIMPLE})
    (root / "notebooks/00_a.ipynb").unlink()
    sync(root / "notebooks/00_a.py")
    nb = nbformat.read(root / "notebooks/00_a.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("42" in o.get("text", "") for o in outputs)
    assert check_book(load_book(root)) == []
    with pytest.raises(ValueError, match="jupytext .py"):
        sync(root / "notebooks/00_a.ipynb")


def test_figures_render_inline_even_under_agg(tmp_path, monkeypatch):
    from vlm_primer.book.build import execute

    monkeypatch.setenv("MPLBACKEND", "Agg")
    root = make_repo(tmp_path, chapter("00", "a"), {"00_a": "# %%\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\n"})
    nb, _ = execute(root / "notebooks/00_a.ipynb")
    kinds = [k for c in nb.cells for o in c.get("outputs", []) for k in o.get("data", {})]
    assert "image/png" in kinds
    assert __import__("os").environ["MPLBACKEND"] == "Agg"
