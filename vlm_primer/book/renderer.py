"""The myst-nb renderer of the book: myst-nb's own, with each figure's alt text taken from its output.

Registered as the ``vlm_primer`` entry point of ``myst_nb.renderers`` (see ``pyproject.toml``) and chosen
by ``nb_render_plugin`` in the generated ``conf.py``. The alt text is put there by the executor
(from the figure's titles) or by :func:`vlm_primer.book.static.make_static` (from the section).
"""

from __future__ import annotations

from myst_nb.core.render import MimeData, NbElementRenderer


class Renderer(NbElementRenderer):
    def render_image(self, data: MimeData):
        nodes = super().render_image(data)
        alt = data.output_metadata.get("alt")
        if alt:
            for node in nodes:
                node["alt"] = str(alt)
        return nodes
