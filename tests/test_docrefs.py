"""Book and library stay in sync: every "Explained in notebook NN, §Section" in a docstring of the
package points at a chapter listed in book.toml and, for a written chapter, at a real heading."""

import re
from pathlib import Path

from vlm_primer.book import load_book

ROOT = Path(__file__).resolve().parents[1]
REF = re.compile(r"[Nn]otebooks? (\d\d[a-z]?)((?:,? (?:and )?§[A-Za-z0-9][A-Za-z0-9 '\-]*)*)")
UNCHECKED = re.compile(r"[Nn]otebooks? \d\d[a-z]? \([^)]*§[^)]*\)")  # "notebook 06 (§X)": REF cannot read it


def headings(book, chapter_id):
    ch = next(c for c in book.chapters if c.id == chapter_id)
    text = (ROOT / ch.script).read_text()
    return [ln.lstrip("# ").strip().lower() for ln in text.splitlines() if re.match(r"^# #{1,4} ", ln)]


def package_texts():
    """Each package file's path and text, whitespace collapsed (docstrings wrap lines)."""
    for path in sorted((ROOT / "vlm_primer").rglob("*.py")):
        yield path.relative_to(ROOT), " ".join(path.read_text().split())


def references():
    for path, text in package_texts():
        for m in REF.finditer(text):
            sections = [s.strip() for s in re.findall(r"§([^§,]+)", m.group(2))]
            yield path, m.group(1), [s.removesuffix(" and").strip() for s in sections]


def test_docstring_references_point_at_real_sections():
    book = load_book(ROOT)
    ids = {c.id: c for c in book.chapters}
    refs = list(references())
    assert len(refs) > 20, "the package should link its pieces to the chapters that explain them"
    problems = []
    for path, chapter_id, sections in refs:
        if chapter_id not in ids:
            problems.append(f"{path}: notebook {chapter_id} is not in book.toml")
            continue
        if not ids[chapter_id].written:
            continue  # a planned chapter: its headings do not exist yet
        heads = headings(book, chapter_id)
        for s in sections:
            if not any(s.lower() in h for h in heads):
                problems.append(f"{path}: notebook {chapter_id} has no section §{s}")
    assert not problems, "\n".join(sorted(set(problems)))


def test_no_reference_hides_its_section_in_parentheses():
    found = [f"{path}: {m.group(0)}" for path, text in package_texts() for m in UNCHECKED.finditer(text)]
    assert not found, "write these as 'notebook NN, §Section' so that the test above checks them:\n" + "\n".join(found)
