"""The README's chapter table and commands stay in step with book.toml and the Makefile."""

import re
from pathlib import Path

from vlm_primer.book import load_book

ROOT = Path(__file__).resolve().parents[1]


def test_readme_chapter_table_matches_book():
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- chapters:start -->")[1].split("<!-- chapters:end -->")[0]
    rows = [r for r in table.strip().splitlines()[2:]]
    expected = [f"| {c.id} | {c.title} | {c.survey_section} | {c.status} |" for c in load_book(ROOT).chapters]
    assert rows == expected


def test_readme_states_both_commands_with_times():
    text = (ROOT / "README.md").read_text()
    for cmd in ("make book", "make test"):
        assert re.search(rf"`{cmd}` \|.*\| [^|]*\d+ min", text), f"README must state {cmd} with a measured time"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^book:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci/run").read_text()
