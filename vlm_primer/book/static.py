"""Make an executed notebook read well as a static page: widgets become their default state, figures get alt text.

A widget needs a live kernel. In the HTML book each widget output is replaced by what it showed when
the chapter ran: the figure and text its ``Output`` area captured, a list of its controls at their
default values, and a one-line note that it is interactive in JupyterLab. Progress bars (tqdm's
notebook bar is a widget too) become their final line of text. Nothing is fetched from a CDN.
"""

from __future__ import annotations

import copy
import html
import re

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
CONTROL_SUFFIXES = ("SliderModel", "DropdownModel", "CheckboxModel", "ToggleButtonsModel", "RadioButtonsModel",
                    "SelectModel", "TextModel", "IntTextModel", "FloatTextModel", "ToggleButtonModel")
LIVE_NOTE = ("Interactive: run this cell in JupyterLab (<code>make lab</code>) to move the controls; "
             "shown here at their default values.")


def _ref(value) -> str | None:
    return value[len("IPY_MODEL_"):] if isinstance(value, str) and value.startswith("IPY_MODEL_") else None


def _text(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup)).replace("\u2007", " ").strip()


def _control_value(model: dict):
    s = model["state"]
    if "_options_labels" in s and s.get("index") is not None:
        return s["_options_labels"][s["index"]]
    return s.get("value")


class _Walk:
    """Everything a widget tree shows: its controls, its captured outputs, and its text."""

    def __init__(self, state: dict):
        self.state = state
        self.controls: list[tuple[str, object]] = []
        self.outputs: list[dict] = []
        self.text: list[str] = []

    def visit(self, model_id: str) -> None:
        model = self.state.get(model_id)
        if model is None:
            return
        name, s = model["model_name"], model["state"]
        if name == "OutputModel":
            self.outputs.extend(copy.deepcopy(s.get("outputs", [])))
        elif name.endswith(CONTROL_SUFFIXES):
            self.controls.append((s.get("description") or "value", _control_value(model)))
        elif name in ("HTMLModel", "LabelModel", "HTMLMathModel"):
            if _text(s.get("value", "")):
                self.text.append(_text(s.get("value", "")))
        elif name.endswith("ProgressModel"):
            lo, hi, v = s.get("min", 0), s.get("max", 1) or 1, s.get("value", 0)
            filled = round(20 * (v - lo) / (hi - lo)) if hi > lo else 20
            self.text.append("█" * filled + "░" * (20 - filled))
        for child in s.get("children", []):
            if _ref(child):
                self.visit(_ref(child))


def static_outputs(view: dict, state: dict) -> list[dict]:
    """The nbformat outputs that stand for one widget view in a static page."""
    walk = _Walk(state)
    walk.visit(view.get("model_id", ""))
    out: list[dict] = []
    if walk.controls:
        items = "".join(f"<li><code>{html.escape(str(d))}</code> = <code>{html.escape(str(v))}</code></li>"
                        for d, v in walk.controls)
        out.append({"output_type": "display_data", "metadata": {},
                    "data": {"text/html": f'<div class="vp-widget-static"><p>{LIVE_NOTE}</p><ul>{items}</ul></div>',
                             "text/plain": "(interactive widget: run the notebook in JupyterLab)"}})
    if walk.text:
        out.append({"output_type": "stream", "name": "stdout", "text": " ".join(walk.text) + "\n"})
    return out + walk.outputs


def _headings(source: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^#{1,4}\s+(.+)$", source, flags=re.M)]


def make_static(nb) -> object:
    """A copy of executed notebook ``nb`` ready for a static page (widgets replaced, every figure with alt text)."""
    import nbformat

    nb = copy.deepcopy(nb)
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    nb.metadata.pop("widgets", None)  # no widget state: the page then loads no widget JavaScript
    section = nb.metadata.get("title", "this chapter")
    figure = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            heads = _headings(cell.source)
            section = heads[-1] if heads else section
            continue
        if cell.cell_type != "code":
            continue
        outputs = []
        for o in cell.get("outputs", []):
            view = o.get("data", {}).get(WIDGET_VIEW)
            outputs.extend(static_outputs(view, state) if view else [o])
        for o in outputs:
            if "image/png" in o.get("data", {}) or "image/jpeg" in o.get("data", {}):
                figure += 1
                md = o.setdefault("metadata", {})
                md.setdefault("alt", f"Figure {figure}, from the code of section “{section}”")
        cell.outputs = [nbformat.from_dict(o) for o in outputs]
    return nb
