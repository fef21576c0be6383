"""Plots of the analyses, one module per analysis (matplotlib, imported on demand).

Shared conventions (see `interp_lib.style`): models in config order with fixed colours
and labels; deltas coloured with a diverging map centred at zero (red = pro-Defect,
blue = pro-Cooperate) and labelled "delta logit (D - C)".
"""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, path, dpi: int = 150, tight: bool = True) -> None:
    """Saves `fig` to `path` (atomically, parent created) and closes it; `tight` crops it to
    its artists (one more layout pass; a figure that sets its own margins passes False)."""
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight" if tight else None, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)


def zero_line(ax, orientation: str = "h") -> None:
    """A thin black line at delta = 0."""
    (ax.axhline if orientation == "h" else ax.axvline)(0.0, color="black", linewidth=0.8, zorder=1)


def diverging_heatmap(ax, matrix, cmap: str | None = None, annotate: bool = True, fmt=None):
    """imshow of a [rows, columns] matrix on a colour scale symmetric about zero, each
    finite cell annotated with its value (`fmt`, default "+0.00"); returns (image, limit)."""
    import numpy as np

    from ..style import DELTA_CMAP, symmetric_limit, text_color_for

    matrix = np.asarray(matrix, dtype=float)
    fmt = fmt or (lambda v: f"{v:+.2f}")
    lim = symmetric_limit(matrix)
    image = ax.imshow(matrix, cmap=cmap or DELTA_CMAP, vmin=-lim, vmax=lim, aspect="auto")
    if annotate:
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                ax.text(j, i, fmt(value), ha="center", va="center", fontsize=7, color=text_color_for(value, lim))
    return image, lim
