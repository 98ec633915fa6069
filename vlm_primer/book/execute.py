"""Execute chapters headless, record what each one read, and cache the executed notebooks.

A chapter's outputs depend on its ``.py`` and on every project file the kernel read while running it:
the ``vlm_primer`` modules it imported (directly or not) and the data it opened (the tokenizer in
``data/``, zoo checkpoints). The executor records that list from inside the kernel, so the cache key is
exact: a change to ``vlm_primer/contrastive/`` re-executes chapter 02 and nothing else, and an
unchanged tree re-executes nothing. ``make notebooks`` stores the same record in each ``.ipynb``, which
is how ``book check`` knows when saved outputs are stale.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from nbclient import NotebookClient
from nbclient.util import ensure_async, run_sync
from traitlets.config import Config

from vlm_primer.book.manifest import Book, Chapter

# Bump when the executor changes what ends up in an executed notebook (it is part of every key).
EXECUTOR_VERSION = "1"
# Environment knobs that change what a chapter computes.
ENV_KNOBS = ("VLM_PRIMER_SCALE", "VLM_PRIMER_SEED")
# The kernel `make` installs into .venv (see the Makefile); saved notebooks name it, so opening one changes nothing.
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (vlm-primer)", "language": "python"}
SKIP_PARTS = {".venv", ".git", "_build", "__pycache__", ".ipynb_checkpoints", ".pytest_cache"}

# Runs silently before the first cell: an audit hook notes every project file opened for reading (and
# every file written, which is an output, not an input), and figures get alt text from their titles.
PROLOGUE = r"""
def __vp_setup(root):
    import os, sys
    reads, writes = set(), set()
    def hook(event, args):
        if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        path = os.path.abspath(os.fsdecode(args[0]))
        if not path.startswith(root):
            return
        mode, flags = args[1], args[2] or 0
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR))
        (writes if writing else reads).add(path)
    sys.addaudithook(hook)

    def figure_alt(fig):
        parts = []
        if getattr(fig, "_suptitle", None) is not None and fig._suptitle.get_text():
            parts.append(fig._suptitle.get_text())
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        if not titles:
            titles = [f"{ax.get_ylabel() or 'value'} against {ax.get_xlabel()}" for ax in fig.axes if ax.get_xlabel()]
        parts += titles[:6] + (["…"] if len(titles) > 6 else [])
        return "Figure: " + " ".join("; ".join(parts).split()) if parts else None

    try:
        import matplotlib_inline.backend_inline as inline
        fetch = inline._fetch_figure_metadata
        def fetch_with_alt(fig):
            md = dict(fetch(fig) or {})
            alt = figure_alt(fig)
            if alt:
                md["alt"] = alt
            return md or None
        inline._fetch_figure_metadata = fetch_with_alt
    except Exception:
        pass
    return reads, writes

__vp_reads, __vp_writes = __vp_setup(%(root)r)
del __vp_setup
"""

# Runs silently after the last cell: the project files this chapter depended on.
EPILOGUE = r"""
def __vp_report(root, out):
    import json, os, sys
    files = {getattr(m, "__file__", None) for m in list(sys.modules.values())} | __vp_reads
    files = {os.path.abspath(f) for f in files if f} - __vp_writes
    deps = sorted(os.path.relpath(f, root) for f in files if f.startswith(root) and os.path.isfile(f))
    with open(out, "w") as fh:
        json.dump(deps, fh)
__vp_report(%(root)r, %(out)r)
"""


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _keep(rel: str) -> bool:
    parts = Path(rel).parts
    return not (SKIP_PARTS & set(parts) or "site-packages" in parts or rel.endswith(".pyc"))


def env_knobs() -> dict[str, str]:
    return {k: os.environ[k] for k in ENV_KNOBS if k in os.environ}


@dataclass
class Record:
    """What an executed notebook was made from: its source, the files it read, the knobs that were set."""

    source: str  # the chapter's .py, relative to the root
    hashes: dict[str, str]  # relative path -> sha256 of the source and of every dependency
    env: dict[str, str]
    executor: str = EXECUTOR_VERSION

    @classmethod
    def make(cls, root: Path, source: str, deps: list[str]) -> Record:
        files = [source] + [d for d in deps if _keep(d) and d != source]
        return cls(source, {f: _file_hash(root / f) for f in files}, env_knobs())

    def stale(self, root: Path) -> list[str]:
        """Why these outputs no longer follow from the tree (an empty list: they do)."""
        why = []
        if self.executor != EXECUTOR_VERSION:
            why.append(f"executed by book executor v{self.executor}, now v{EXECUTOR_VERSION}")
        if self.env != env_knobs():
            why.append(f"executed with {self.env or 'no knobs set'}, now {env_knobs() or 'no knobs set'}")
        for rel, digest in self.hashes.items():
            path = root / rel
            if not path.is_file():
                why.append(f"{rel} is gone")
            elif _file_hash(path) != digest:
                why.append(f"{rel} changed")
        return why

    def to_json(self) -> dict:
        return {"source": self.source, "hashes": self.hashes, "env": self.env, "executor": self.executor}

    @classmethod
    def from_json(cls, data: dict) -> Record:
        return cls(data["source"], dict(data["hashes"]), dict(data.get("env", {})), data.get("executor", "?"))


def cell_timeout() -> int:
    """Seconds a cell may run before the executor calls its kernel hung: 300 at ``tiny`` (where a whole chapter
    takes two minutes), an hour at the larger scales (``VLM_PRIMER_SCALE``)."""
    from vlm_primer.utils import get_scale

    return 300 if get_scale() == "tiny" else 3600


def execute(path: Path, root: Path, timeout: int | None = None, log=print):
    """Execute a notebook (``.ipynb`` or jupytext ``.py``) headless; return ``(notebook, seconds, record)``.

    Figures render inline even where ``MPLBACKEND=Agg`` is set, carry alt text taken from their titles,
    and the record lists every project file the kernel read (see the module docstring). A cell that runs
    past ``timeout`` seconds (default :func:`cell_timeout`) or a kernel that dies is taken for a hung or lost
    kernel (seen, rarely, with a kernel sitting idle while the client waited): the notebook is executed once
    more from the start in a fresh kernel, and a second failure raises. A cell that raises is not retried.
    """
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from vlm_primer.utils import get_scale

    timeout = cell_timeout() if timeout is None else timeout
    try:
        return _execute_once(path, root, timeout)
    except (CellTimeoutError, DeadKernelError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        log(f"  {Path(path).name}: {first} -- executing it once more in a fresh kernel")
    try:
        return _execute_once(path, root, timeout)
    except (CellTimeoutError, DeadKernelError) as e:
        raise RuntimeError(f"{Path(path).name} hung twice (no cell may run past {timeout} s; "
                           f"VLM_PRIMER_SCALE={get_scale()}): {e}") from e


def _execute_once(path: Path, root: Path, timeout: int):
    import jupytext

    path, root = Path(path).resolve(), Path(root).resolve()
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    with tempfile.TemporaryDirectory() as tmp:
        deps_file = str(Path(tmp) / "deps.json")
        client = _RecordingClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
            store_widget_state=True,
            # IPC sockets in a private temporary folder: kernels started at once by parallel processes
            # can never race for the same TCP ports (and nothing listens on TCP).
            config=Config(KernelManager={"transport": "ipc", "ip": str(Path(tmp) / "kernel")}),
            # jupyter_client interrupts a kernel before shutting it down, which ipykernel logs as an
            # ERROR; cell errors reach us through the outputs, so the kernel's own log stays quiet.
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            prologue=PROLOGUE % {"root": str(root) + os.sep},
            epilogue=EPILOGUE % {"root": str(root), "out": deps_file},
        )
        env_before = os.environ.get("MPLBACKEND")
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
        start = time.perf_counter()
        try:
            client.execute()
        finally:
            if env_before is None:
                os.environ.pop("MPLBACKEND", None)
            else:
                os.environ["MPLBACKEND"] = env_before
        seconds = time.perf_counter() - start
        deps = json.loads(Path(deps_file).read_text())
    source = path.with_suffix(".py")
    source_rel = os.path.relpath(source if source.is_file() else path, root)
    return nb, seconds, Record.make(root, source_rel, deps)


def sliced_wait(get_msg, slice_s: float = 1.0):
    """A jupyter_client asyncio channel's ``get_msg`` that waits in slices of ``slice_s`` seconds.

    pyzmq's asyncio poll can miss the wake-up of a message that has already arrived and hand it over only
    when its timeout runs out (zeromq/pyzmq#1558). nbclient waits for a cell's reply with one poll as long
    as the cell timeout, so a missed wake-up stalled the build for exactly that long with the kernel idle
    (seen: 300 s before a chapter-02 cell, the reply dated 300 s before it was read). Short polls bound
    the stall to ``slice_s``; the overall ``timeout`` is unchanged."""
    from queue import Empty

    async def get(timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = slice_s if deadline is None else min(slice_s, max(0.0, deadline - time.monotonic()))
            try:
                return await get_msg(timeout=left)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    return get


class _RecordingClient(NotebookClient):
    """An nbclient ``NotebookClient`` that runs a silent prologue and epilogue around the cells, and reads the
    kernel's replies and outputs in short polls (:func:`sliced_wait`)."""

    def __init__(self, nb, prologue: str, epilogue: str, **kwargs):
        super().__init__(nb, **kwargs)
        self.prologue, self.epilogue = prologue, epilogue

    async def _silent(self, code: str) -> None:
        msg_id = self.kc.execute(code, silent=True, store_history=False)
        reply = await self.async_wait_for_reply(msg_id)
        if reply is None or reply["content"]["status"] != "ok":
            content = (reply or {}).get("content", {})
            raise RuntimeError(f"book executor hook failed: {content.get('ename')}: {content.get('evalue')}")

    async def async_execute(self, reset_kc: bool = False, **kwargs):
        """As ``NotebookClient.async_execute``, with the prologue before and the epilogue after the cells."""
        self.reset_execution_trackers()
        async with self.async_setup_kernel(**kwargs):
            for channel in (self.kc.shell_channel, self.kc.iopub_channel):
                channel.get_msg = sliced_wait(channel.get_msg)
            info = await self.async_wait_for_reply(await ensure_async(self.kc.kernel_info()))
            self.nb.metadata["language_info"] = info["content"]["language_info"]
            await self._silent(self.prologue)
            for index, cell in enumerate(self.nb.cells):
                await self.async_execute_cell(cell, index, execution_count=self.code_cells_executed + 1)
            await self._silent(self.epilogue)
            self.set_widgets_metadata()
        return self.nb

    execute = run_sync(async_execute)


# ----------------------------------------------------------------------------------------------------
# The cache: _build/cache/<slug>.ipynb with its record in the notebook's metadata.


def _record_of(nb) -> Record | None:
    data = nb.metadata.get("vlm_primer", {}).get("executed_from")
    return Record.from_json(data) if data else None


def stamp(nb, record: Record, seconds: float | None = None) -> None:
    """Store the record (and the run time) in the notebook's metadata."""
    meta = {"executed_from": record.to_json()}
    if seconds is not None:
        meta["seconds"] = round(seconds, 1)
    nb.metadata["vlm_primer"] = meta


def stale_reasons(nb, root: Path) -> list[str]:
    """Why a saved notebook's outputs do not follow from the current tree ([] when they do)."""
    record = _record_of(nb)
    if record is None:
        return ["it records no source hashes"]
    return record.stale(root)


def cache_entry(cache_dir: Path, ch: Chapter):
    """The cached executed notebook of ``ch`` (valid or stale), or ``None`` when there is none."""
    import nbformat

    path = cache_dir / f"{ch.slug}.ipynb"
    return nbformat.read(path, as_version=4) if path.is_file() else None



def _run_one(notebook: str, root: str, cache_dir: str, threads: int | None = None) -> tuple[str, float]:
    """Worker: execute one chapter from its .py and write it to the cache; return (path, seconds).

    ``threads``: the kernel's share of the cores (``OMP_NUM_THREADS``), so that kernels running side by
    side do not oversubscribe the CPU (two torch kernels of 2 threads each on 2 cores run many times
    slower than one after the other)."""
    import nbformat

    if threads is not None and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # this worker process only; the kernel inherits it
    root_p = Path(root)
    nb, seconds, record = execute(root_p / Path(notebook).with_suffix(".py"), root_p)
    stamp(nb, record, seconds)
    out = Path(cache_dir) / Path(notebook).name
    tmp = out.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(out)  # atomic: an interrupted build never leaves a half-written cache entry
    return str(out), seconds


def execute_book(book: Book, cache_dir: Path, jobs: int | None = None, log=print) -> dict[str, tuple]:
    """Execute every written chapter whose cache entry is stale, ``jobs`` at a time.

    Returns ``{chapter id: (executed notebook, seconds or None when cached)}``. A chapter that fails
    raises after the others have finished, naming the chapter and the cell.
    """
    import nbformat

    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
        raise ValueError(f"jobs must be a positive integer (chapters executed at once), got {jobs!r}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    results, todo, last = {}, [], {}
    for ch in book.written:
        nb = cache_entry(cache_dir, ch)
        if nb is not None and not stale_reasons(nb, book.root):
            results[ch.id] = (nb, None)
            log(f"  {ch.slug}: up to date (cached)")
            continue
        todo.append(ch)
        # How long it took last time (a stale entry still knows), else its budget.
        seconds = nb.metadata.get("vlm_primer", {}).get("seconds") if nb is not None else None
        last[ch.id] = seconds or ch.cpu_budget_s
    if not todo:
        return results
    jobs = min(jobs or os.cpu_count() or 1, len(todo))
    todo.sort(key=lambda c: -last[c.id])  # the longest first, so the others fill in beside it
    log(f"  executing {len(todo)} chapter(s), {jobs} at a time: {', '.join(c.slug for c in todo)}")
    errors = []
    # spawn, not fork: the caller may have threads (a pytest-xdist worker does), and a forked child
    # would inherit their locks.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
        futures = {pool.submit(_run_one, ch.notebook, str(book.root), str(cache_dir), threads): ch for ch in todo}
        for fut in as_completed(futures):
            ch = futures[fut]
            try:
                path, seconds = fut.result()
            except Exception as e:  # noqa: BLE001 - reported with the chapter's name below
                errors.append(f"chapter {ch.id} ({ch.script}) failed:\n{e}")
                log(f"  {ch.slug}: FAILED")
                continue
            over = f"  -- OVER ITS {ch.cpu_budget_s} s BUDGET" if seconds > ch.cpu_budget_s else ""
            log(f"  {ch.slug}: executed in {seconds:.1f} s (budget {ch.cpu_budget_s} s){over}")
            results[ch.id] = (nbformat.read(path, as_version=4), seconds)
    if errors:
        raise RuntimeError("\n\n".join(errors))
    return results


def sync(py: Path, root: Path, force: bool = False) -> float:
    """Execute a chapter's ``.py`` and write the paired ``.ipynb`` with its outputs and its record; return seconds.

    The ``.py`` is the source. An ``.ipynb`` that is newer and whose cells differ holds edits the ``.py`` lacks
    (made in the notebook without jupytext's pairing): it is refused, not overwritten, unless ``force``.

    Widgets are stored as their default state (see :mod:`vlm_primer.book.static`), so the saved
    notebook reads well before it is run; running the cell brings the live widget back. The record
    (the hashes of the ``.py`` and of every project file it read) is how ``book check`` later tells
    that the saved outputs are stale.
    """
    import jupytext

    py = Path(py)
    if py.suffix != ".py" or not py.is_file():
        raise ValueError(f"sync takes an existing jupytext .py notebook, got {py}")
    from vlm_primer.book.check import pair_problems
    from vlm_primer.book.static import make_static

    ipynb = py.with_suffix(".ipynb")
    differs = pair_problems(ipynb) if not force and ipynb.is_file() and ipynb.stat().st_mtime > py.stat().st_mtime \
        else []
    if differs:
        raise FileExistsError(f"{ipynb} is newer than {py.name} and differs from it ({differs[0]}): "
                              f"syncing would overwrite its edits. Bring them into {py.name} (`jupytext --sync "
                              f"{ipynb}` does), or pass --force to discard them")

    # The .py header names the kernel `make` installs, as the .ipynb will (JupyterLab's jupytext refuses
    # a pair whose files differ while the .ipynb is the newer one).
    source = jupytext.read(py)
    source.metadata["kernelspec"] = dict(KERNELSPEC)
    source.metadata["jupytext"] = {"formats": "ipynb,py:percent"}
    text = jupytext.writes(source, fmt="py:percent")
    if text != py.read_text(encoding="utf-8"):
        py.write_text(text, encoding="utf-8")
    nb, seconds, record = execute(py, root)
    # What a reader opening the saved notebook sees before running it: widgets at their default state.
    nb = make_static(nb)
    stamp(nb, record)
    nb.metadata["jupytext"] = {"formats": "ipynb,py:percent"}
    jupytext.write(nb, ipynb)
    os.utime(py)  # the .py stays the newer file of the pair
    return seconds
