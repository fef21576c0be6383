"""Activation-patching figure of one experiment and scenario: the layers x (heads, MLP)
heatmap of a metric's mean over the prompt variants (in the patch_plots_experiment job, for
each scenario, and the counterfactual component heatmap). Conventions: patching_common."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import diverging_heatmap
from .patching_common import (
    PatchingFigures,
    _as_bool,
    _band_label,
    _colorbar_band,
    _first,
    _fmt,
    _mark_noise_cells,
    _only,
    metric_label,
    noise_band,
)

MLP_COLUMN = "MLP"


def patch_grid(results: pd.DataFrame, metric: str = "delta_change"):
    """(values [L, H + 1], flip counts [L, H + 1], n_variants): the metric's mean over
    variants per component of one scenario; column H is the layer's MLP."""
    comps = results.drop_duplicates("component")
    heads = comps.loc[comps["kind"] == "head", "head"]
    L = int(results["layer"].max()) + 1
    H = int(heads.max()) + 1 if len(heads) else 0
    mean = results.groupby("component", sort=False)[metric].mean()
    flips = _as_bool(results["action_flipped"]).groupby(results["component"], sort=False).sum()
    values = np.full((L, H + 1), np.nan)
    counts = np.zeros((L, H + 1), dtype=int)
    for _, c in comps.iterrows():
        col = H if c["kind"] == "mlp" or pd.isna(c["head"]) else int(c["head"])
        values[int(c["layer"]), col] = mean[c["component"]]
        counts[int(c["layer"]), col] = flips[c["component"]]
    n_variants = results["variant"].nunique() if "variant" in results.columns else 1
    return values, counts, n_variants


class PatchGridPlots(PatchingFigures):
    """The per-scenario heatmap (`plot_patch_heatmap`)."""

    def plot_patch_heatmap(self, results: pd.DataFrame, metric: str = "delta_change", title: str | None = None,
                           out=None, scenario: str | None = None, annotate: bool | None = None, save_path=None):
        """Layers (rows, layer 0 at the top) x heads H0.. and the layer's MLP: the metric's
        mean over the variants of one experiment and scenario, colour scale symmetric about
        zero. Black frames mark components whose patch flips the target's action in at least
        one variant."""
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle

        out = out if out is not None else save_path
        results = _only(_only(results, "experiment", None, "results"), "scenario", scenario, "results")
        if results.empty:
            raise ValueError("no patching results to plot")
        values, flips, n_var = patch_grid(results, metric)
        L, C = values.shape
        H = C - 1
        fig, ax = plt.subplots(figsize=(max(6.5, 0.75 * C + 3.5), max(4.2, 0.3 * L + 2.6)))
        im, lim = diverging_heatmap(ax, values, annotate=L * C <= 128 if annotate is None else annotate, fmt=_fmt)
        for l, c in zip(*np.nonzero(flips)):
            ax.add_patch(Rectangle((c - 0.45, l - 0.45), 0.9, 0.9, fill=False, edgecolor="black",
                                   linewidth=2.0 if L <= 12 else 1.4))
        ax.axvline(H - 0.5, color="black", linewidth=1.2)  # heads | MLP
        ax.set_xticks(range(C), [f"H{h}" for h in range(H)] + [MLP_COLUMN])
        step = 1 if L <= 40 else 2
        ax.set_yticks(range(0, L, step), [f"L{l}" for l in range(0, L, step)], fontsize=10 if L <= 16 else 8)
        n_flip = int((flips > 0).sum())
        flip_note = (f"black frame: the patch flips the action in \u2265 1 of {n_var} variants ({n_flip} component{'s' if n_flip > 1 else ''})"
                     if n_flip else f"no single patch flips the action in any of the {n_var} variants")
        band = noise_band(results) if metric == "delta_change" else math.nan
        n_noise = _mark_noise_cells(ax, values, band)
        if math.isfinite(band):
            flip_note += f"\ngrey dot: {_band_label(band)} ({n_noise} of {L * C} components; grey on the colour bar)"
        ax.set_xlabel(f"attention head | MLP of the layer\n{flip_note}")
        ax.set_ylabel("layer")
        if title is None:
            scen = _first(results, "scenario", "")
            base, src = results["baseline_delta"].mean(), results["source_delta"].mean()
            what = f"mean over {n_var} prompt variants" if n_var > 1 else "one prompt variant"
            title = (f"Activation patching {self._pair(results)}\n"
                     f"scenario {scen}: patched positions: {_first(results, 'positions', '?')}, "
                     f"head site: {_first(results, 'head_site', '?')}; {what}\n"
                     f"mean delta (D - C): target baseline {base:+.2f}, source {src:+.2f}\n"
                     "red = patch moves the target towards Defect, blue = towards Cooperate")
        ax.set_title(title, fontsize=10)
        cbar = fig.colorbar(im, ax=ax)
        cbar.set_label(metric_label(metric).replace(", ", "\n", 1))
        _colorbar_band(cbar, band)
        return self._finish(fig, out)
