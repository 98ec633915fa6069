"""The glossary and the bibliography: every term and citation a chapter uses exists, and every entry points at a real place."""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest

from vlm_primer.book import load_book
from vlm_primer.book.site import load_glossary

ROOT = Path(__file__).resolve().parents[1]
BOOK = load_book(ROOT)
TERM = re.compile(r"\{term\}`([^`<]+?)(?:\s*<([^>]+)>)?`")
CITE = re.compile(r"\{cite(?::[pt])?\}`([^`]+)`")


def markdown(ch) -> str:
    nb = jupytext.read(ROOT / ch.script)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def headings(ch) -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#{1,4}\s+(.+)$", markdown(ch), flags=re.M)}


def bib_keys() -> set[str]:
    return set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "notebooks/references.bib").read_text(), flags=re.M))


def test_glossary_entries_point_at_real_sections():
    entries = load_glossary(ROOT)
    assert len(entries) >= 10
    chapters = {c.id: c for c in BOOK.chapters}
    for e in entries:
        assert e["chapter"] in chapters, f"{e['term']}: no chapter {e['chapter']} in book.toml"
        ch = chapters[e["chapter"]]
        if ch.written and e.get("section"):
            assert e["section"] in headings(ch), f"{e['term']}: no section {e['section']!r} in {ch.script}"
        assert re.search(r"[\uac00-\ud7a3]", e["korean"]), f"{e['term']}: the Korean term is missing"


@pytest.mark.parametrize("ch", BOOK.written, ids=lambda c: c.id)
def test_chapter_terms_and_citations_exist(ch):
    text = markdown(ch)
    defined = {e["term"] for e in load_glossary(ROOT)}
    used = {(target or label).strip() for label, target in TERM.findall(text)}
    assert used <= defined, f"{ch.script} links terms that the glossary lacks: {sorted(used - defined)}"
    cited = {k.strip() for group in CITE.findall(text) for k in group.split(",")}
    assert cited <= bib_keys(), f"{ch.script} cites keys missing from references.bib: {sorted(cited - bib_keys())}"
    assert used and cited, f"{ch.script} should link its glossary terms and cite its sources"


def test_bad_glossary_entry_is_a_clear_error(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks/glossary.toml").write_text('[[term]]\nterm = "x"\nkorean = "엑스"\n')
    with pytest.raises(ValueError, match=r"term #1 \(x\) lacks \['chapter', 'definition'\]"):
        load_glossary(tmp_path)
