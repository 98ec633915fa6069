"""The built book, opened as a reader opens it: every page from disk in headless Chromium, with no network.

Asserts on each page: no failed request and none outside ``file://``; every formula typeset (no raw TeX
in the visible text); no widget left as an empty box; every image with real alt text; no Python
traceback. The book is built from the saved notebooks (``build --no-execute``), so this needs no kernel.

Chromium is Debian's ``chromium`` (``.ci/run`` installs it with apt-get where missing), driven by
Playwright through ``executable_path``; set ``VLM_PRIMER_CHROMIUM`` to use another binary.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from vlm_primer.book import load_book

ROOT = Path(__file__).resolve().parents[1]
RAW_TEX = re.compile(r"\\(frac|mathcal|mathbb|sum|log|exp|cos|tau|theta|nabla|text|big)\b|\$[^$\s][^$]*\$")
DEFAULT_ALTS = {"", "No description has been provided for this image"}


def chromium() -> str | None:
    for name in (os.environ.get("VLM_PRIMER_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from vlm_primer.book.site import build

    out = tmp_path_factory.mktemp("book") / "html"
    build(out, execute=False, book=load_book(ROOT), log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def browser():
    exe = chromium()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set VLM_PRIMER_CHROMIUM): "
                    "the built book was NOT checked in a browser")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


PAGE_REPORT = r"""() => {
  const visible = el => el.getClientRects().length > 0;
  const prose = [...document.querySelectorAll('article p, article li, article td, article th, article dd, article dt, article h1, article h2, article h3')]
      .filter(el => !el.closest('pre, code, .cell_input, .MathJax_Preview') && visible(el))
      .map(el => el.innerText);
  const maths = [...document.querySelectorAll('.math')];
  // typeset: MathJax replaced the TeX by its own element
  const untypeset = maths.filter(m => !m.querySelector('mjx-container') && !m.closest('mjx-container'))
      .map(m => m.innerText.slice(0, 80));
  const widgets = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"], .jupyter-widgets, .widget-area')].length;
  const stand_ins = [...document.querySelectorAll('.vp-widget-static')].map(e => e.getBoundingClientRect().height);
  const images = [...document.querySelectorAll('article img')].map(img => ({
      src: img.getAttribute('src'), alt: img.getAttribute('alt') || '', loaded: img.complete && img.naturalWidth > 0}));
  const tracebacks = document.querySelectorAll('.output.traceback, .output.error').length
      + (document.body.innerText.includes('Traceback (most recent call last)') ? 1 : 0);
  return {prose, maths: maths.length, untypeset, widgets, stand_ins, images, tracebacks,
          prevnext: document.querySelectorAll('.prev-next-area a').length,
          toc: document.querySelectorAll('.bd-toc-nav a, nav.bd-links a').length};
}"""


def open_page(browser, path: Path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests, failed = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("requestfailed", lambda r: failed.append(f"{r.url} ({r.failure})"))
    page.goto(path.as_uri(), wait_until="load")
    if page.evaluate("() => !!(window.MathJax && window.MathJax.startup)"):
        page.wait_for_function("() => !!(MathJax.startup.promise)")
        page.evaluate("() => MathJax.startup.promise")
    return page, requests, failed


def test_every_page_reads_offline(site, browser):
    pages = sorted(site.glob("*.html"))
    chapters = {c.slug for c in load_book(ROOT).written}
    assert {p.stem for p in pages} >= chapters | {"index", "glossary", "bibliography", "search"}
    problems, typeset = [], 0
    for path in pages:
        page, requests, failed = open_page(browser, path)
        r = page.evaluate(PAGE_REPORT)
        page.close()
        name = path.name
        problems += [f"{name}: request outside file:// {u}" for u in requests if not u.startswith(("file://", "data:"))]
        problems += [f"{name}: failed request {f}" for f in failed]
        problems += [f"{name}: formula not typeset: {t!r}" for t in r["untypeset"]]
        problems += [f"{name}: raw TeX in the text: {t[:100]!r}" for t in r["prose"] if RAW_TEX.search(t)]
        problems += [f"{name}: {r['widgets']} live widget element(s) that cannot render without a kernel"] * bool(r["widgets"])
        problems += [f"{name}: an empty widget stand-in" for h in r["stand_ins"] if h <= 1]
        for img in r["images"]:
            if img["alt"].strip() in DEFAULT_ALTS or img["alt"] == img["src"] or img["alt"] in img["src"]:
                problems.append(f"{name}: image {img['src']} has no real alt text ({img['alt']!r})")
            if not img["loaded"]:
                problems.append(f"{name}: image {img['src']} did not load")
        problems += [f"{name}: a Python traceback in the outputs"] * bool(r["tracebacks"])
        if path.stem in chapters:
            typeset += r["maths"]
            problems += [f"{name}: no previous/next links"] * (r["prevnext"] == 0)
            problems += [f"{name}: no table of contents"] * (r["toc"] == 0)
    assert not problems, "\n".join(problems)
    assert typeset > 10, "the chapters should contain typeset formulas"


def test_search_works_offline(site, browser):
    page, requests, failed = open_page(browser, site / "search.html")
    page.goto((site / "search.html").as_uri() + "?q=InfoNCE", wait_until="load")
    page.wait_for_selector("#search-results li a", timeout=15_000)
    hits = page.eval_on_selector_all("#search-results li a", "els => els.map(e => e.getAttribute('href'))")
    page.close()
    assert any("02_contrastive" in h for h in hits), hits
    assert not failed, failed


def test_widgets_become_their_default_state(site, browser):
    page, _, _ = open_page(browser, site / "02_contrastive.html")
    note = page.inner_text(".vp-widget-static")
    alts = page.eval_on_selector_all("article img", "els => els.map(e => e.alt)")
    page.close()
    assert "JupyterLab" in note and "τ" in note and "0.07" in note
    assert any("row softmax at τ = 0.070" in a for a in alts), "the widget's default figure is on the page"
