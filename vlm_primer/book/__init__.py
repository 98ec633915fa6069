"""The book: ``book.toml`` is the one manifest; this package reads it, checks it, and builds the HTML book.

``python -m vlm_primer.book check``      consistency of book.toml, notebooks/ and the package
``python -m vlm_primer.book build``      execute changed chapters (parallel, cached), build the Sphinx site in ``_build/html``
``python -m vlm_primer.book sync F.py``  execute a jupytext ``.py`` chapter and write its paired ``.ipynb``
``python -m vlm_primer.book notebooks``  list the ``.ipynb`` files of written chapters (for nbval)
"""

from vlm_primer.book.manifest import Book, Chapter, find_root, load_book
from vlm_primer.book.check import check_book, output_problems, pair_problems

__all__ = ["Book", "Chapter", "find_root", "load_book", "check_book", "output_problems", "pair_problems"]
