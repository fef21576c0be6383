"""Weight-change plots: how far fine-tuning moved each weight matrix of a merged model from
its base (`interp_lib.analyses.weight_deltas`). Values are relative Frobenius norms
||W_model - W_base|| / ||W_base|| >= 0, drawn with one sequential colour map whose scale
is shared by all panels (so models compare directly)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..style import ModelStyle
from ..analyses.weight_deltas import MODULES, head_table, module_table
from . import save_figure

WEIGHT_CMAP = "YlOrRd"  # sequential: white-yellow = unchanged, dark red = largest change
RELATIVE_LABEL = "relative change\n||W - W_base||_F / ||W_base||_F"


def _grid(n: int) -> tuple[int, int]:
    """(rows, columns) of panels: up to 3 across, 2 x 2 for four."""
    ncols = 2 if n == 4 else min(3, max(1, n))
    return math.ceil(n / ncols), ncols


def _annotate(ax, values: np.ndarray, vmax: float) -> None:
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6.5,
                        color="white" if v > 0.6 * vmax else "black")


class WeightVisualizer:
    """Weight-change figures. `style` fixes model order and labels."""

    def __init__(self, style: ModelStyle | None = None):
        self.style = style or ModelStyle()

    def _panels(self, matrices: dict, xlabels: list, xlabel: str, title: str, save_path=None,
                annotate: bool | None = None):
        import matplotlib.pyplot as plt

        models = self.style.with_models(matrices).sort(matrices)
        if not models:
            return self._empty(title, save_path)
        n_layers = max(m.shape[0] for m in matrices.values())
        n_cols = len(xlabels)
        nrows, ncols = _grid(len(models))
        vmax = max(float(np.nanmax(m)) if np.isfinite(m).any() else 0.0 for m in matrices.values()) or 1e-6
        if annotate is None:
            annotate = n_layers * n_cols <= 160
        figsize = (ncols * max(3.2, 0.55 * n_cols + 1.4), nrows * max(3.0, 0.26 * n_layers + 1.6))
        fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout="constrained", figsize=figsize)
        im = None
        for ax, model in zip(axes.flat, models):
            values = matrices[model]
            im = ax.imshow(values, cmap=WEIGHT_CMAP, vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
            if annotate:
                _annotate(ax, values, vmax)
            ax.set_xticks(range(n_cols), xlabels, rotation=45, ha="right", fontsize=8)
            step = max(1, math.ceil(values.shape[0] / 26))
            ax.set_yticks(range(0, values.shape[0], step), [f"L{l}" for l in range(0, values.shape[0], step)],
                          fontsize=8)
            ax.set_title(self.style.label(model), fontsize=10)
            ax.set_xlabel(xlabel)
        for ax in axes.flat[len(models):]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel("layer")
        cbar = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=min(0.9, 0.45 * nrows + 0.35))
        cbar.set_label(RELATIVE_LABEL)
        fig.suptitle(title)
        if save_path is not None:
            save_figure(fig, save_path)
        return fig

    @staticmethod
    def _empty(title: str, save_path=None):
        """A figure that says there is nothing to compare (no fine-tuned model has a reference)."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no fine-tuned model with a reference model\n(a configured model without an adapter "
                "on the same base)", ha="center", va="center")
        fig.suptitle(title.splitlines()[0])
        if save_path is not None:
            save_figure(fig, save_path)
        return fig

    def plot_module_heatmaps(self, df: pd.DataFrame, save_path=None, annotate: bool | None = None):
        """One panel per model: layers down, modules (q/k/v/o_proj, gate/up/down_proj)
        across, colour = relative_delta of the whole module."""
        mods = module_table(df)
        present = [m for m in MODULES if m in set(mods["module"])]
        matrices, refs = {}, set()
        for model, g in mods.groupby("model", sort=False):
            n_layers = int(g["layer"].max()) + 1
            mat = np.full((n_layers, len(present)), np.nan)
            for row in g.itertuples(index=False):
                mat[int(row.layer), present.index(row.module)] = row.relative_delta
            matrices[model] = mat
            refs.update(g["reference"].dropna().astype(str) if "reference" in g else [])
        ref = ", ".join(sorted(refs)) or "its base"
        return self._panels(matrices, present, "module",
                            f"Merged-weight change per layer and module, relative to {ref}\n"
                            "(Frobenius norms; shared colour scale)", save_path, annotate)

    def plot_head_heatmaps(self, df: pd.DataFrame, save_path=None, annotate: bool | None = None):
        """One panel per model: layers down, attention heads across, colour = relative change
        of the head's o_proj columns W_O[h]."""
        heads = head_table(df)
        n_heads = int(heads["head"].max()) + 1 if len(heads) else 0
        matrices, refs = {}, set()
        for model, g in heads.groupby("model", sort=False):
            mat = np.full((int(g["layer"].max()) + 1, n_heads), np.nan)
            for row in g.itertuples(index=False):
                mat[int(row.layer), int(row.head)] = row.relative_delta
            matrices[model] = mat
            refs.update(g["reference"].dropna().astype(str) if "reference" in g else [])
        ref = ", ".join(sorted(refs)) or "its base"
        return self._panels(matrices, [f"H{h}" for h in range(n_heads)], "attention head (columns of o_proj)",
                            f"Change of each head's output matrix W_O[h], relative to {ref}\n"
                            "(Frobenius norms; shared colour scale)", save_path, annotate)


__all__ = ["WeightVisualizer", "WEIGHT_CMAP", "RELATIVE_LABEL"]
