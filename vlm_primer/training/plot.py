"""A live loss plot for notebooks: one image output, replaced in place while training.

Inside a Jupyter kernel the curve is rendered to a PNG (with a pyplot-free Agg figure, so it works
whatever ``MPLBACKEND`` says and the inline backend never shows a duplicate) and shown once with
``IPython.display.display(..., display_id=True)``; later updates replace that output through the
handle, so the cell ends with a single, final plot. Outside a kernel nothing is drawn.
"""

from __future__ import annotations

import io
import time
from typing import Any

THROUGHPUT_KEYS = {"samples_per_s", "tokens_per_s", "data_wait", "mfu"}  # wall-clock figures, not curves
SKIP_KEYS = {"step", "loss", "lr", "grad_norm", "epoch", "skipped"} | THROUGHPUT_KEYS


def in_jupyter_kernel() -> bool:
    """True when running inside a Jupyter (IPython ZMQ) kernel, e.g. a notebook or nbval."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class LivePlot:
    """Training (and eval) curves of a trainer history, redrawn in one notebook output.

    ``update(history)`` redraws at most every ``min_interval`` seconds (rendering a PNG costs tens
    of milliseconds in the kernel, and decoding it costs the browser as much again on the same
    machine); ``close(history)`` always draws the final state.
    """

    min_interval: float = 2.0

    def __init__(self, title: str = "training") -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=(6, 3.2), dpi=80)
        FigureCanvasAgg(self.fig)
        self.ax = self.fig.add_subplot()
        self.title, self.handle, self._last = title, None, float("-inf")

    def draw(self, history: list[dict[str, Any]]) -> bytes:
        """Render the curves of ``history`` and return the PNG bytes."""
        ax = self.ax
        ax.clear()
        rows = [h for h in history if "loss" in h]
        ax.plot([h["step"] for h in rows], [h["loss"] for h in rows], label="train loss")
        metrics = sorted({k for h in history for k in h} - SKIP_KEYS)
        for key in metrics:
            pts = [(h["step"], h[key]) for h in history if isinstance(h.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=key)
        ax.set_xlabel("step")
        ax.set_title(self.title)
        ax.grid(alpha=0.3)
        if rows or metrics:
            ax.legend(loc="best", fontsize=8)
        self.fig.tight_layout()
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png")
        return buf.getvalue()

    def update(self, history: list[dict[str, Any]], *, force: bool = False) -> None:
        if not force and time.monotonic() - self._last < self.min_interval:
            return
        from IPython.display import Image, display

        image = Image(data=self.draw(history), format="png")
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)
        self._last = time.monotonic()

    def close(self, history: list[dict[str, Any]]) -> None:
        """Draw the final state (the one output the cell keeps)."""
        self.update(history, force=True)
