"""Execute chapters and render the static HTML book, configured only from ``book.toml``."""

from __future__ import annotations

import html
import os
import re
import time
from pathlib import Path

from vlm_primer.book.manifest import Book, Chapter, load_book

CSS = """
body { margin: 0; }
.vp-nav { position: sticky; top: 0; z-index: 100; background: #1f2937; color: #f9fafb; padding: .6em 1.2em;
          font: 14px/1.4 system-ui, sans-serif; display: flex; gap: 1.2em; align-items: center; flex-wrap: wrap; }
.vp-nav a { color: #93c5fd; text-decoration: none; } .vp-nav a:hover { text-decoration: underline; }
.vp-nav .vp-title { font-weight: 600; color: #f9fafb; } .vp-nav .vp-here { color: #fbbf24; }
.vp-index { max-width: 60em; margin: 2em auto; font: 16px/1.55 system-ui, sans-serif; padding: 0 1em; }
.vp-index table { border-collapse: collapse; width: 100%; } .vp-index td, .vp-index th { padding: .35em .6em;
          border-bottom: 1px solid #e5e7eb; text-align: left; } .vp-planned { color: #9ca3af; }
"""


def execute(path: Path, timeout: int = 600, cwd: Path | None = None):
    """Execute a notebook (``.ipynb`` or jupytext ``.py``) headless; return ``(notebook, seconds)``."""
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(path)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    # The kernel inherits our environment: make sure figures render inline even where MPLBACKEND=Agg.
    env_before = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    start = time.perf_counter()
    try:
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3",
            resources={"metadata": {"path": str(cwd or path.parent)}}, store_widget_state=True,
        ).execute()
    finally:
        if env_before is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = env_before
    return nb, time.perf_counter() - start


def sync(py: Path) -> float:
    """Execute a chapter's ``.py`` and write the paired ``.ipynb`` with its outputs; return seconds."""
    import jupytext

    py = Path(py)
    if py.suffix != ".py" or not py.is_file():
        raise ValueError(f"sync takes an existing jupytext .py notebook, got {py}")
    nb, seconds = execute(py)
    nb.metadata["jupytext"] = {"formats": "ipynb,py:percent"}
    jupytext.write(nb, py.with_suffix(".ipynb"))
    return seconds


def _nav(book: Book, here: Chapter | None, prefix: str = "") -> str:
    links = [f'<a class="vp-title" href="{prefix}index.html">{html.escape(book.title)}</a>']
    for ch in book.written:
        cls = ' class="vp-here"' if ch is here else ""
        links.append(f'<a{cls} href="{prefix}{ch.slug}.html">{ch.id} · {html.escape(ch.title.split(":")[0])}</a>')
    return f'<nav class="vp-nav">{"".join(links)}</nav>'


def _chapter_html(book: Book, ch: Chapter, nb) -> str:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    body, _ = exporter.from_notebook_node(nb)
    i = book.written.index(ch)
    prev = book.written[i - 1] if i > 0 else None
    nxt = book.written[i + 1] if i + 1 < len(book.written) else None
    footer = '<nav class="vp-nav">'
    footer += f'<a href="{prev.slug}.html">← {prev.id} {html.escape(prev.title)}</a>' if prev else ""
    footer += f'<a href="{nxt.slug}.html">{nxt.id} {html.escape(nxt.title)} →</a>' if nxt else ""
    footer += "</nav>"
    body = body.replace("<title>Notebook</title>", f"<title>{ch.id} {html.escape(ch.title)} · {html.escape(book.title)}</title>")
    body = body.replace("</head>", f"<style>{CSS}</style></head>", 1)
    start = body.index("<body")
    start = body.index(">", start) + 1
    return body[:start] + _nav(book, ch) + body[start:].replace("</body>", footer + "</body>", 1)


def _inline(text: str) -> str:
    """Escape text for HTML, rendering `backticks` as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _index_html(book: Book, timings: dict[str, float]) -> str:
    rows = []
    for ch in book.chapters:
        name = html.escape(ch.title)
        if ch.written:
            t = f"{timings[ch.id]:.0f} s" if ch.id in timings else ""
            rows.append(f'<tr><td>{ch.id}</td><td><a href="{ch.slug}.html">{name}</a></td>'
                        f"<td>{ch.survey_section}</td><td>{t}</td></tr>")
        else:
            rows.append(f'<tr class="vp-planned"><td>{ch.id}</td><td>{name} (planned)</td><td>{ch.survey_section}</td><td></td></tr>')
    return f"""<!DOCTYPE html><html lang="{book.language}"><head><meta charset="utf-8">
<title>{html.escape(book.title)}</title><style>{CSS}</style></head><body>{_nav(book, None)}
<main class="vp-index"><h1>{html.escape(book.title)}</h1><p><em>{html.escape(book.subtitle)}</em></p>
<p>{_inline(book.description)}</p><p>By {html.escape(", ".join(book.authors))}.</p>
<h2>Chapters</h2><table><tr><th>#</th><th>Chapter</th><th>Survey §</th><th>Executed in</th></tr>
{"".join(rows)}</table></main></body></html>"""


def build(out: str | Path = "_build/html", execute_notebooks: bool = True, book: Book | None = None) -> Path:
    """Execute (or reuse the saved outputs of) every written chapter and write the HTML book; return index.html."""
    import nbformat

    book = book or load_book()
    out = book.root / out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    for i, ch in enumerate(book.written, 1):
        path = book.root / ch.notebook
        if execute_notebooks:
            print(f"[{i}/{len(book.written)}] executing {ch.notebook} (budget {ch.cpu_budget_s} s) ...", flush=True)
            nb, timings[ch.id] = execute(path)
            over = "  -- OVER ITS BUDGET" if timings[ch.id] > ch.cpu_budget_s else ""
            print(f"      done in {timings[ch.id]:.1f} s{over}", flush=True)
        else:
            nb = nbformat.read(path, as_version=4)
        (out / f"{ch.slug}.html").write_text(_chapter_html(book, ch, nb), encoding="utf-8")
    index = out / "index.html"
    index.write_text(_index_html(book, timings), encoding="utf-8")
    return index
