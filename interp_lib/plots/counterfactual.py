"""Figures of counterfactual prompt patching within one model: the residual stream's
layer x position heatmap (exact and AtP) and the component heatmap.

delta change = patched - baseline delta (D - C) of the target prompt; red = towards Defect.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..noise import NOISE_MULTIPLE, largest_floor
from ..style import DELTA_CMAP, symmetric_limit
from . import save_figure

NOISE_COLOR = "#bdbdbd"


def residual_matrix(residual: pd.DataFrame, metric: str, variant) -> tuple[np.ndarray, pd.DataFrame]:
    """([L, T] metric of one target variant, its per-position rows (tokens))."""
    one = residual[residual["variant"] == variant]
    L, T = int(one["layer"].max()) + 1, int(one["position"].max()) + 1
    matrix = np.full((L, T), np.nan)
    matrix[one["layer"].to_numpy(int), one["position"].to_numpy(int)] = one[metric].to_numpy(float)
    return matrix, one[one["layer"] == 0].sort_values("position")


def _token_label(row) -> str:
    if _true(row["token_differs"]):
        return f"{row['source_token'].strip() or '_'}\u2192{row['target_token'].strip() or '_'}"
    return row["target_token"].replace("\n", "\\n").strip() or "_"


def _true(value) -> bool:
    return str(value).lower() in ("true", "1", "yes")


def _panel_note(name: str, matrix: np.ndarray, exact: np.ndarray, band: float) -> str:
    """The exact panel's noise band; the AtP panel's agreement with the exact grid."""
    if name == "exact":
        return (f": grey = |delta change| \u2264 {NOISE_MULTIPLE:g} \u00d7 noise floor = {band:.2g}"
                if math.isfinite(band) else "")
    note = f": largest |estimate| {np.nanmax(np.abs(matrix)):.3g}"
    if np.isfinite(exact).any():
        from scipy.stats import spearmanr

        both = np.isfinite(exact) & np.isfinite(matrix)
        rho = spearmanr(exact[both], matrix[both]).statistic
        note += (f" (exact: {np.nanmax(np.abs(exact)):.3g}); Spearman \u03c1 with exact {rho:.2f}; sign right on the "
                 f"largest exact cell: {'yes' if _largest_sign_agrees(exact, matrix) else 'no'}")
    return note


def _largest_sign_agrees(exact: np.ndarray, estimate: np.ndarray) -> bool:
    i = np.unravel_index(np.nanargmax(np.abs(exact)), exact.shape)
    return bool(np.sign(exact[i]) == np.sign(estimate[i]))


def plot_residual_heatmap(residual: pd.DataFrame, out, variant=None, title: str | None = None) -> None:
    """Layers (rows) x prompt positions (columns, the tokens as tick labels; a changed token
    shown as source\u2192target in bold red), one panel per available metric: exact
    delta change (cells within NOISE_MULTIPLE x the noise floor greyed) and its AtP estimate;
    both on one colour scale symmetric about zero."""
    import matplotlib.pyplot as plt

    if residual.empty:
        raise ValueError("no residual patching results to plot")
    variant = residual["variant"].min() if variant is None else variant
    exact, tokens = residual_matrix(residual, "delta_change", variant)
    atp, _ = residual_matrix(residual, "atp_delta_change", variant)
    panels = [("exact", exact)] if np.isfinite(exact).any() else []
    panels.append(("AtP estimate", atp))
    L, T = atp.shape
    lim = symmetric_limit(np.concatenate([m[np.isfinite(m)] for _, m in panels]))
    band = NOISE_MULTIPLE * largest_floor(residual)
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8.0, 0.11 * T + 2.5), len(panels) * (0.28 * L + 1.6) + 1.6),
                             squeeze=False)
    cmap = plt.get_cmap(DELTA_CMAP).with_extremes(bad=NOISE_COLOR)
    for ax, (name, matrix) in zip(axes[:, 0], panels):
        shown = np.ma.masked_invalid(matrix)
        if name == "exact" and math.isfinite(band):
            shown = np.ma.masked_where(np.abs(np.nan_to_num(matrix)) <= band, shown)
        image = ax.imshow(shown, cmap=cmap, vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
        ax.set_yticks(range(L), [f"L{l}" for l in range(L)], fontsize=7 if L > 16 else 9)
        ax.set_ylabel("layer (resid_pre)")
        ax.set_title(name + _panel_note(name, matrix, exact, band), fontsize=9, loc="left")
        ax.set_xticks(range(T), [_token_label(r) for _, r in tokens.iterrows()], rotation=90,
                      fontsize=5 if T > 80 else 7)
        for tick, (_, row) in zip(ax.get_xticklabels(), tokens.iterrows()):
            if _true(row["token_differs"]):
                tick.set_color("#b2182b")
                tick.set_fontweight("bold")
        fig.colorbar(image, ax=ax, pad=0.01, fraction=0.03).set_label("delta change (D - C)", fontsize=8)
    first = residual[residual["variant"] == variant].iloc[0]
    fig.suptitle(title or (
        f"Residual-stream patching in {first['model']}: {first['source_scenario']} (source, variant "
        f"{first['source_variant']}) into {first['target_scenario']} (target, variant {variant})\n"
        f"target delta {first['baseline_delta']:+.2f}, source delta {first['source_delta']:+.2f}; "
        "a cell patches one position's resid_pre at one layer; red = towards Defect"), fontsize=10)
    fig.tight_layout()
    save_figure(fig, out)


def plot_component_heatmap(components: pd.DataFrame, out) -> None:
    """Layers x (heads, MLP): mean delta change over the variants (the patching heatmap)."""
    from ..style import ModelStyle
    from .patching_grids import PatchGridPlots

    if components.empty:
        raise ValueError("no component patching results to plot")
    first = components.iloc[0]
    n = components["variant"].nunique()
    title = (f"Counterfactual patching in {first['model']}: {first['source_scenario']} (source) into "
             f"{first['target_scenario']} (target)\npatched positions: {first['positions']}, head site: "
             f"{first['head_site']}; mean over {n} prompt variant{'s' if n > 1 else ''} "
             f"({first.get('labelling', 'standard')} labelling)\n"
             f"mean delta (D - C): target {components['baseline_delta'].mean():+.2f}, source "
             f"{components['source_delta'].mean():+.2f}; red = towards Defect")
    style = ModelStyle.from_names([first["model"]])
    PatchGridPlots(style=style).plot_patch_heatmap(components, title=title, out=out)
