"""A clip as an inline animation that works offline: matplotlib's JavaScript player, without its icon font.

Explained in notebook 08, §The world in motion. ``FuncAnimation.to_jshtml`` embeds every frame as a PNG and a small
player, but loads its button icons from a CDN (Font Awesome) and leaves the frame image without alt text; the book
is offline and every image needs alt text, so :func:`animate_frames` swaps the icons for plain characters and names
the image.
"""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import torch
from matplotlib import animation

__all__ = ["animate_frames"]

_ICONS = {"fa-play fa-flip-horizontal": "◀", "fa-fast-backward": "|◀", "fa-step-backward": "‹", "fa-pause": "||",
          "fa-play": "▶", "fa-step-forward": "›", "fa-fast-forward": "▶|", "fa-minus": "−", "fa-plus": "+"}
# one or two characters that common fonts have (the player's buttons are narrow)


def animate_frames(frames: torch.Tensor, title: str, interval: int = 250, size: float = 2.4) -> str:
    """Frames ``(T, 3, H, W)`` in ``[0, 1]`` -> the HTML of a looping player (no network, alt text = ``title``)."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3 or len(frames) < 1:
        raise ValueError(f"frames must be a (T, 3, H, W) tensor, got {getattr(frames, 'shape', type(frames).__name__)}")
    fig, ax = plt.subplots(figsize=(size, size * 1.08))
    image = ax.imshow(frames[0].permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_axis_off()

    def show(t: int):
        image.set_data(frames[t].permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(f"{title}: frame {t}", fontsize=9)
        return (image,)

    html = animation.FuncAnimation(fig, show, frames=len(frames), interval=interval, blit=True).to_jshtml(
        default_mode="loop")
    plt.close(fig)
    html = re.sub(r'<link rel="stylesheet"\s*href="https?://[^"]*">', "", html)
    for icon, text in _ICONS.items():
        html = html.replace(f'<i class="fa {icon}"></i>', text)
    return html.replace("<img id=", f'<img alt="{title.replace(chr(34), "")}" id=', 1)
