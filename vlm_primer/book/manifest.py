"""Read and validate ``book.toml``: the one place where chapter order and metadata live."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

STATUSES = ("written", "planned")
CHAPTER_KEYS = {"id", "title", "notebook", "modules", "survey_section", "cpu_budget_s", "status"}
BOOK_KEYS = {"title", "authors", "description", "language"}
NOTEBOOK_NAME = re.compile(r"^notebooks/(\d\d[a-z]?)_[a-z0-9_]+\.ipynb$")  # 05b: a chapter after 05


@dataclass(frozen=True)
class Chapter:
    id: str
    title: str
    notebook: str
    modules: tuple[str, ...]
    survey_section: str
    cpu_budget_s: int
    status: str

    @property
    def written(self) -> bool:
        return self.status == "written"

    @property
    def slug(self) -> str:
        return Path(self.notebook).stem

    @property
    def script(self) -> str:
        """The paired jupytext percent file."""
        return str(Path(self.notebook).with_suffix(".py"))


@dataclass(frozen=True)
class Book:
    root: Path
    title: str
    authors: tuple[str, ...]
    description: str
    language: str
    subtitle: str = ""
    chapters: tuple[Chapter, ...] = field(default_factory=tuple)

    @property
    def written(self) -> tuple[Chapter, ...]:
        return tuple(c for c in self.chapters if c.written)


def find_root(start: str | Path | None = None) -> Path:
    """The repository root: the first folder holding ``book.toml`` upwards from ``start`` (default: cwd, then package)."""
    candidates = [Path(start)] if start else [Path.cwd(), Path(__file__).resolve().parents[2]]
    for base in candidates:
        for folder in (base.resolve(), *base.resolve().parents):
            if (folder / "book.toml").is_file():
                return folder
    raise FileNotFoundError(f"no book.toml found above {', '.join(map(str, candidates))}")


def load_book(root: str | Path | None = None) -> Book:
    """Parse and validate ``book.toml``; raise ``ValueError`` naming the first problem found."""
    root = find_root(root)
    path = root / "book.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from e
    meta = data.get("book")
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: missing [book] table")
    missing = BOOK_KEYS - meta.keys()
    if missing:
        raise ValueError(f"{path}: [book] lacks {sorted(missing)}")
    for key in (*sorted(BOOK_KEYS - {"authors"}), "subtitle"):
        if not isinstance(meta.get(key, ""), str):
            raise ValueError(f"{path}: [book] {key} must be a string, got {meta[key]!r}")
    if not isinstance(meta["authors"], list) or not all(isinstance(a, str) for a in meta["authors"]):
        raise ValueError(f"{path}: [book] authors must be a list of names, e.g. [\"Jane Doe\"], got {meta['authors']!r}")
    raw = data.get("chapter", [])
    if not raw:
        raise ValueError(f"{path}: no [[chapter]] entries")
    if not isinstance(raw, list) or not all(isinstance(ch, dict) for ch in raw):
        raise ValueError(f"{path}: chapters must be [[chapter]] tables (double brackets), got {type(raw).__name__}")
    chapters, seen_ids, seen_nbs = [], set(), set()
    for i, ch in enumerate(raw):
        where = f"{path}: chapter #{i + 1}"
        missing = CHAPTER_KEYS - ch.keys()
        if missing:
            raise ValueError(f"{where} lacks {sorted(missing)}")
        extra = ch.keys() - CHAPTER_KEYS
        if extra:
            raise ValueError(f"{where} has unknown keys {sorted(extra)}")
        wrong = [k for k in ("id", "title", "notebook", "status") if not isinstance(ch[k], str)]
        if wrong:
            raise ValueError(f"{where}: {', '.join(wrong)} must be strings, got {[ch[k] for k in wrong]}")
        m = NOTEBOOK_NAME.match(ch["notebook"])
        if not m:
            raise ValueError(f"{where}: notebook must look like notebooks/NN_slug.ipynb (or NNb_slug.ipynb), got {ch['notebook']!r}")
        if m.group(1) != ch["id"]:
            raise ValueError(f"{where}: id {ch['id']!r} does not match notebook {ch['notebook']!r}")
        if ch["status"] not in STATUSES:
            raise ValueError(f"{where}: status must be one of {STATUSES}, got {ch['status']!r}")
        if not isinstance(ch["cpu_budget_s"], int) or isinstance(ch["cpu_budget_s"], bool) or ch["cpu_budget_s"] <= 0:
            raise ValueError(f"{where}: cpu_budget_s must be a positive integer, got {ch['cpu_budget_s']!r}")
        if not isinstance(ch["modules"], list) or not all(isinstance(x, str) for x in ch["modules"]):
            raise ValueError(f"{where}: modules must be a list of module names")
        if ch["id"] in seen_ids or ch["notebook"] in seen_nbs:
            raise ValueError(f"{where}: duplicate id or notebook ({ch['id']}, {ch['notebook']})")
        seen_ids.add(ch["id"])
        seen_nbs.add(ch["notebook"])
        chapters.append(Chapter(**{**ch, "modules": tuple(ch["modules"]), "survey_section": str(ch["survey_section"])}))
    ids = [c.id for c in chapters]
    if ids != sorted(ids):
        raise ValueError(f"{path}: chapters must be listed in order of id, got {ids}")
    return Book(
        root=root,
        title=meta["title"],
        subtitle=meta.get("subtitle", ""),
        authors=tuple(meta["authors"]),
        description=meta["description"],
        language=meta["language"],
        chapters=tuple(chapters),
    )
