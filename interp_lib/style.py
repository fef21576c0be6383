"""Shared plot style: model order, labels and colours, and the delta colour scale.

Every analysis draws models in config order with the same colour and label, and
colours deltas with one diverging map centred at zero (red = pro-Defect, blue =
pro-Cooperate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

DELTA_CMAP = "RdBu_r"
DELTA_LABEL = "delta logit (D - C)"
PRO_DEFECT_COLOR = "#b2182b"  # the red end of RdBu_r
PRO_COOPERATE_COLOR = "#2166ac"  # the blue end
# Okabe-Ito (colour-blind safe) without its yellow, then tab10 for long model lists.
PALETTE = ("#555555", "#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
_EXTRA = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf")


def color_at(index: int) -> str:
    colors = PALETTE + _EXTRA
    return colors[index % len(colors)]


@dataclass(frozen=True)
class ModelStyle:
    """Model order (config order), display labels and colours.

    Models not in `order` (analysed but not configured) are placed after it.
    """

    order: tuple = ()
    labels: dict = field(default_factory=dict)
    colors: dict = field(default_factory=dict)

    @classmethod
    def from_names(cls, names: Iterable[str], labels: dict | None = None) -> "ModelStyle":
        names = tuple(dict.fromkeys(names))
        labels = {n: (labels or {}).get(n) or n for n in names}
        return cls(order=names, labels=labels, colors={n: color_at(i) for i, n in enumerate(names)})

    @classmethod
    def from_entries(cls, entries: dict) -> "ModelStyle":
        """From {name: (position in the config's model list, label)}: a subset of the
        models keeps the colours it has in the full list."""
        ordered = sorted(entries.items(), key=lambda kv: kv[1][0])
        return cls(order=tuple(n for n, _ in ordered), labels={n: lab for n, (_, lab) in ordered},
                   colors={n: color_at(i) for n, (i, _) in ordered})

    @classmethod
    def from_config(cls, config: dict) -> "ModelStyle":
        models = config["models"]
        return cls.from_names(models, {n: spec.get("label") for n, spec in models.items()})

    def label(self, name: str) -> str:
        return self.labels.get(name, name)

    def color(self, name: str) -> str:
        return self.colors.get(name, "#999999")

    def with_models(self, names: Iterable[str]) -> "ModelStyle":
        """This style plus any of `names` it lacks (appended alphabetically, new colours)."""
        extra = sorted(set(names) - set(self.order))
        if not extra:
            return self
        order = self.order + tuple(extra)
        return ModelStyle(order=order, labels={**{n: n for n in extra}, **self.labels},
                          colors={**self.colors, **{n: color_at(len(self.order) + i) for i, n in enumerate(extra)}})

    def sort(self, names: Iterable[str]) -> list:
        """`names` (deduplicated) in config order; unknown names last, alphabetically."""
        names = list(dict.fromkeys(names))
        rank = {n: i for i, n in enumerate(self.order)}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def symmetric_limit(values, floor: float = 1e-6) -> float:
    """max |value| (ignoring NaN), at least `floor`: use as vmin=-lim, vmax=+lim."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    return max(float(np.abs(arr).max()) if arr.size else 0.0, floor)


def delta_norm(values):
    """A matplotlib Normalize symmetric about zero for `values` (white = 0)."""
    from matplotlib.colors import Normalize

    lim = symmetric_limit(values)
    return Normalize(vmin=-lim, vmax=lim)


def text_color_for(value: float, lim: float) -> str:
    """Black or white annotation text, readable on the RdBu_r cell colour of `value`."""
    return "white" if abs(value) > 0.6 * lim else "black"
