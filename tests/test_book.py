"""book.toml is the one manifest: it loads, it is consistent with notebooks/, and the HTML build follows it."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import jupytext
import nbformat
import pytest

from vlm_primer.book import check_book, load_book
from vlm_primer.book.execute import Record, stamp
from vlm_primer.book.static import WIDGET_STATE, WIDGET_VIEW, make_static

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
        stamp(nb, Record.make(tmp_path, f"notebooks/{stem}.py", []))  # as if `make notebooks` had run it
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
    ids = [f"{i:02d}" for i in range(9)]
    assert [c.id for c in book.chapters] == (ids[:5] + ["04b"] + ids[5:6] + ["05b"] + ids[6:7] + ["06b"]
                                             + ids[7:])  # lettered after theirs
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
        (lambda t: t.replace("cpu_budget_s = 60", "cpu_budget_s = true", 1), "cpu_budget_s"),
        (lambda t: t.replace('title = "Chapter 00"', "title = 5", 1), "title must be strings"),
        (lambda t: t.replace('notebook = "notebooks/00_a.ipynb"', "notebook = 7", 1), "notebook must be strings"),
        (lambda t: t.replace("[[chapter]]", "[chapter]", 1), "double brackets"),
    ],
)
def test_bad_manifest_is_a_clear_error(tmp_path, mutate, message):
    make_repo(tmp_path, mutate(chapter("00", "a")), {})
    with pytest.raises(ValueError, match=message):
        load_book(tmp_path)


@pytest.mark.parametrize("head, message", [
    (BOOK_HEAD.replace('authors = ["A"]', 'authors = "Jane Doe"'), "authors must be a list of names"),
    (BOOK_HEAD.replace('title = "T"', "title = 5"), "title must be a string"),
])
def test_bad_book_table_is_a_clear_error(tmp_path, head, message):
    make_repo(tmp_path, chapter("00", "a"), {})
    (tmp_path / "book.toml").write_text(head + chapter("00", "a"))
    with pytest.raises(ValueError, match=message):
        load_book(tmp_path)


def test_check_reports_what_it_cannot_read_and_goes_on(tmp_path):
    toml = chapter("00", "a", modules=("vlm_primer.no_such_package.clip",)) + chapter("01", "b")
    root = make_repo(tmp_path, toml, {"00_a": SIMPLE, "01_b": SIMPLE})
    ipynb = root / "notebooks/01_b.ipynb"
    ipynb.write_text("<<<<<<< HEAD\n" + ipynb.read_text())  # a merge conflict left in the notebook
    problems = check_book(load_book(root))
    assert any("vlm_primer.no_such_package.clip is missing" in p for p in problems), problems
    assert any("01_b.ipynb or 01_b.py cannot be read as a notebook" in p for p in problems), problems


def test_sync_never_overwrites_edits_made_in_the_notebook(tmp_path, monkeypatch):
    import os

    from vlm_primer.book.__main__ import main
    from vlm_primer.book.execute import sync

    root = make_repo(tmp_path, chapter("00", "a"), {"00_a": SIMPLE})
    py, ipynb = root / "notebooks/00_a.py", root / "notebooks/00_a.ipynb"
    nb = nbformat.read(ipynb, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("my notes"))
    nbformat.write(nb, ipynb)
    os.utime(py, (1, 1))  # the notebook is the newer file
    with pytest.raises(FileExistsError, match="syncing would overwrite its edits"):
        sync(py, root)
    assert "my notes" in ipynb.read_text()
    monkeypatch.chdir(root)
    assert main(["sync", str(py)]) == 2 and "my notes" in ipynb.read_text()  # one line, exit 2
    assert main(["sync", "--force", str(py)]) == 0 and "my notes" not in ipynb.read_text()


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
    from vlm_primer.book.site import build

    toml = chapter("00", "a") + chapter("01", "b") + chapter("02", "c", status="planned")
    plot = "# %%\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.title('a rising line')\nplt.show()\n"
    root = make_repo(tmp_path, toml, {"00_a": SIMPLE + plot, "01_b": SIMPLE.replace("Hello", "World")})
    index = build("_build/html", execute=True, book=load_book(root), log=lambda m: None)
    text = index.read_text()
    assert text.index("00_a.html") < text.index("01_b.html")
    assert "Chapter 02" in text and "planned" in text
    page = (root / "_build/html/00_a.html").read_text()
    assert "42" in page, "the executed output must be in the page"
    assert 'href="01_b.html"' in page, "previous/next links"
    assert 'alt="Figure: a rising line"' in page, "figures take their alt text from their title"
    assert "https://" not in "".join(re.findall(r'(?:src|href)="([^"]+)"', page)), "nothing loads from the web"
    assert (root / "_build/html/_static/mathjax/tex-mml-chtml.js").is_file()
    assert not (root / "_build/html-src/conf.py").read_text().count("http"), "conf.py points at no CDN"


def helper_repo(tmp_path):
    """Chapter a imports lib/helper.py and reads lib/data.txt; chapter b reads neither."""
    toml = chapter("00", "a") + chapter("01", "b")
    code = "# %%\nimport sys\nsys.path.insert(0, '../lib')\nimport helper\nprint(helper.VALUE, open('../lib/data.txt').read())\n"
    root = make_repo(tmp_path, toml, {"00_a": code, "01_b": SIMPLE})
    (root / "lib").mkdir()
    (root / "lib/helper.py").write_text("VALUE = 1\n")
    (root / "lib/data.txt").write_text("first\n")
    return root


def test_execution_cache_follows_what_each_chapter_read(tmp_path):
    from vlm_primer.book.execute import execute_book

    root = helper_repo(tmp_path)
    book, cache = load_book(root), root / "_build/cache"
    first = execute_book(book, cache, jobs=2, log=lambda m: None)
    assert all(sec is not None for _, sec in first.values()), "a cold cache executes every chapter"
    again = execute_book(book, cache, jobs=2, log=lambda m: None)
    assert all(sec is None for _, sec in again.values()), "an unchanged tree executes nothing"
    (root / "lib/helper.py").write_text("VALUE = 2\n")
    third = execute_book(book, cache, jobs=2, log=lambda m: None)
    assert third["00"][1] is not None and third["01"][1] is None, "only the chapter that imports helper re-runs"
    outputs = "".join(o.get("text", "") for c in third["00"][0].cells for o in c.get("outputs", []))
    assert "2 first" in outputs
    (root / "lib/data.txt").write_text("second\n")
    fourth = execute_book(book, cache, jobs=1, log=lambda m: None)
    assert fourth["00"][1] is not None and fourth["01"][1] is None, "a data file the chapter opened is an input too"


@pytest.mark.parametrize("jobs", [0, -1, 1.5, True, "2"])
def test_bad_jobs_is_a_clear_error(tmp_path, jobs):
    from vlm_primer.book.execute import execute_book

    root = make_repo(tmp_path, chapter("00", "a"), {"00_a": SIMPLE})
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        execute_book(load_book(root), root / "_build/cache", jobs=jobs, log=lambda m: None)


def test_stale_saved_outputs_fail_the_check(tmp_path):
    from vlm_primer.book.execute import sync

    root = helper_repo(tmp_path)
    for stem in ("00_a", "01_b"):
        sync(root / f"notebooks/{stem}.py", root)
    assert check_book(load_book(root)) == []
    (root / "lib/helper.py").write_text("VALUE = 3\n")
    problems = check_book(load_book(root))
    assert len(problems) == 1 and "00_a.ipynb" in problems[0] and "helper.py changed" in problems[0], problems
    nb = nbformat.read(root / "notebooks/01_b.ipynb", as_version=4)
    nb.metadata.pop("vlm_primer")
    nbformat.write(nb, root / "notebooks/01_b.ipynb")
    assert any("01_b.ipynb" in p and "records no source hashes" in p for p in check_book(load_book(root)))


def test_sync_writes_executed_pair(tmp_path):
    from vlm_primer.book.execute import sync

    root = make_repo(tmp_path, chapter("00", "a"), {"00_a": SIMPLE})
    (root / "notebooks/00_a.ipynb").unlink()
    sync(root / "notebooks/00_a.py", root)
    nb = nbformat.read(root / "notebooks/00_a.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("42" in o.get("text", "") for o in outputs)
    assert nb.metadata.kernelspec.display_name == "Python 3 (vlm-primer)", "the name `make` installs the kernel under"
    assert check_book(load_book(root)) == []
    with pytest.raises(ValueError, match="jupytext .py"):
        sync(root / "notebooks/00_a.ipynb", root)


def test_figures_render_inline_even_under_agg(tmp_path, monkeypatch):
    from vlm_primer.book.execute import execute

    monkeypatch.setenv("MPLBACKEND", "Agg")
    root = make_repo(tmp_path, chapter("00", "a"), {"00_a": "# %%\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\n"})
    nb, _, _ = execute(root / "notebooks/00_a.ipynb", root)
    kinds = [k for c in nb.cells for o in c.get("outputs", []) for k in o.get("data", {})]
    assert "image/png" in kinds
    assert __import__("os").environ["MPLBACKEND"] == "Agg"


def test_a_hung_kernel_is_given_one_fresh_try_then_named(tmp_path):
    """A cell past its timeout (a hung kernel) re-executes the notebook once in a fresh kernel; a second hang
    raises, naming the notebook and the limit. The first cell counts the tries in a file."""
    from vlm_primer.book.execute import execute

    hang_first = f"""
# %%
from pathlib import Path
import time
tries = Path({str(tmp_path / "tries")!r})
tries.write_text(tries.read_text() + "x" if tries.exists() else "x")
if len(tries.read_text()) < {{hangs}} + 1:
    time.sleep(120)
print("done")
"""
    root = make_repo(tmp_path, chapter("00", "a"), {"00_a": hang_first.format(hangs=1)})
    logged = []
    nb, _, _ = execute(root / "notebooks/00_a.py", root, timeout=2, log=logged.append)
    printed = [o.get("text") for c in nb.cells for o in c.get("outputs", [])]
    assert (tmp_path / "tries").read_text() == "xx" and "done" in printed[-1]
    assert len(logged) == 1 and "00_a.py" in logged[0] and "fresh kernel" in logged[0]
    (tmp_path / "tries").unlink()
    (root / "notebooks/00_a.py").write_text(jupytext.writes(jupytext.reads(hang_first.format(hangs=5),
                                                                            fmt="py:percent"), fmt="py:percent"))
    with pytest.raises(RuntimeError, match=r"00_a.py hung twice \(no cell may run past 2 s"):
        execute(root / "notebooks/00_a.py", root, timeout=2, log=logged.append)
    assert (tmp_path / "tries").read_text() == "xx"


def widget_notebook():
    """An executed notebook as nbclient stores it: an `interactive` (slider, dropdown, output) and a tqdm bar."""
    def model(name, **state):
        return {"model_name": name, "model_module": "@jupyter-widgets/controls", "state": state}

    png = {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"},
           "metadata": {"alt": "Figure: k = 3"}}
    state = {
        "box": model("VBoxModel", children=["IPY_MODEL_k", "IPY_MODEL_mode", "IPY_MODEL_out"], _dom_classes=["widget-interact"]),
        "k": model("IntSliderModel", description="k", value=3),
        "mode": model("DropdownModel", description="mode", index=1, _options_labels=["fast", "slow"]),
        "out": model("OutputModel", outputs=[png]),
        "bar": model("HBoxModel", children=["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]),
        "l": model("HTMLModel", value="train: 100%"),
        "p": model("FloatProgressModel", value=5.0, min=0, max=5.0),
        "r": model("HTMLModel", value="\u20075/5\u2007[00:01&lt;00:00]"),
    }
    view = lambda mid: {"output_type": "display_data", "metadata": {},  # noqa: E731
                        "data": {WIDGET_VIEW: {"model_id": mid, "version_major": 2, "version_minor": 0},
                                 "text/plain": "interactive(children=(IntSlider(...)))"}}
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("## Sliders"), nbformat.v4.new_code_cell("...", outputs=[view("box")]),
                nbformat.v4.new_code_cell("...", outputs=[view("bar"), {"output_type": "stream", "name": "stdout", "text": "x\n"}]),
                nbformat.v4.new_code_cell("...", outputs=[dict(png, metadata={})])]
    nb.metadata["widgets"] = {WIDGET_STATE: {"state": state, "version_major": 2, "version_minor": 0}}
    return nbformat.from_dict(nb)


def test_widgets_become_their_default_state():
    nb = widget_notebook()
    static = make_static(nb)
    outs = [o for c in static.cells if c.cell_type == "code" for o in c.outputs]
    assert not any(WIDGET_VIEW in o.get("data", {}) for o in outs)
    assert "widgets" not in static.metadata, "no widget state: the page loads no widget JavaScript"
    html = "".join(o.get("data", {}).get("text/html", "") for o in outs)
    assert "JupyterLab" in html and "<code>k</code> = <code>3</code>" in html
    assert "<code>mode</code> = <code>slow</code>" in html, "a dropdown shows its label, not its index"
    images = [o for o in outs if "image/png" in o.get("data", {})]
    assert images[0]["metadata"]["alt"] == "Figure: k = 3", "the figure the widget drew, with its alt text"
    assert images[1]["metadata"]["alt"] == "Figure 2, from the code of section “Sliders”", "a fallback alt text"
    text = "".join(o.get("text", "") for o in outs)
    assert "train: 100%" in text and "5/5 [00:01<00:00]" in text and "█" * 20 in text, "a finished bar, as text"
    assert make_static(static) == static, "idempotent"
    assert nb.metadata.get("widgets"), "the input notebook is left as it was"


def test_cell_timeout_follows_the_scale(monkeypatch):
    """300 s a cell at tiny (the longest chapter cell takes about 40 s there), an hour at the larger scales."""
    from vlm_primer.book.execute import cell_timeout

    monkeypatch.delenv("VLM_PRIMER_SCALE", raising=False)
    assert cell_timeout() == 300
    monkeypatch.setenv("VLM_PRIMER_SCALE", "small")
    assert cell_timeout() == 3600
    monkeypatch.setenv("VLM_PRIMER_SCALE", "huge")
    with pytest.raises(ValueError, match="VLM_PRIMER_SCALE"):
        cell_timeout()


def test_replies_are_read_in_short_polls():
    """A poll that misses its wake-up returns the waiting message only at its timeout (zeromq/pyzmq#1558); the
    executor's channels poll in slices, so such a message is read after one slice, not after the cell timeout;
    and the overall timeout still holds."""
    import asyncio
    import time
    from queue import Empty

    from vlm_primer.book.execute import sliced_wait

    asked = []

    async def missed_wakeup(timeout=None):   # the message is there, but the poll sees it only at its end
        asked.append(timeout)
        await asyncio.sleep(timeout)
        return {"msg": "reply"}

    start = time.perf_counter()
    assert asyncio.run(sliced_wait(missed_wakeup, 0.05)(timeout=30)) == {"msg": "reply"}
    assert time.perf_counter() - start < 5 and asked == [0.05]

    async def nothing(timeout=None):
        asked.append(timeout)
        await asyncio.sleep(timeout)
        raise Empty

    asked.clear()
    start = time.perf_counter()
    with pytest.raises(Empty):
        asyncio.run(sliced_wait(nothing, 0.05)(timeout=0.2))
    assert time.perf_counter() - start >= 0.2 and len(asked) >= 2 and all(t <= 0.05 for t in asked)
