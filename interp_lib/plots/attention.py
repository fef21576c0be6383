"""Attention from the decision position: one panel per selected head, one row per model
(the same head compared across models), one column per prompt token. Colour = attention
weight on a sequential map from white at 0 (no attention, e.g. keys a sliding window
hides) to the panel's largest weight. Input: the tidy table of `interp_lib.analyses.attention`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..style import ModelStyle
from . import save_figure

MAX_LABELS = 320  # token labels per axis; beyond that every n-th token is labelled
MAX_TOKEN_CHARS = 16  # longer token texts are cut (with an ellipsis) to fit under their panel
# Margins in inches, set directly: tight_layout and a tight bounding box measured thousands of
# rotated tick labels three times over (most of a figure's 10-70 s)
LABEL_SPACE, TITLE_SPACE, SUPTITLE_SPACE, ROW_HEIGHT = 1.05, 0.3, 0.45, 0.3
WHY = {"dla": "top |DLA|", "patching": "top |patching delta_change|",
       "dla+patching": "top |DLA| and top |patching delta_change|"}


def attention_cmap():
    """Sequential, white at 0 (weights are probabilities >= 0), then magma's ramp, which
    keeps weights of ~0.05 visible."""
    from matplotlib import colormaps
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("attention", ["#ffffff", *colormaps["magma_r"](np.linspace(0.1, 1, 10))])


def display_token(text: str) -> str:
    """A token's text as a tick label: line breaks and tabs made visible, blank as a middle dot."""
    shown = str(text).replace("\n", "\u21b5").replace("\t", "\u21e5")
    if len(shown) > MAX_TOKEN_CHARS:
        shown = shown[:MAX_TOKEN_CHARS - 1] + "\u2026"
    return shown if shown.strip() else "\u00b7"


def _panel_matrix(rows: pd.DataFrame, models: list) -> tuple[np.ndarray, list]:
    """[models, T] weights (NaN past a shorter prompt) and the first model's tokens."""
    T = int(rows["position"].max()) + 1
    matrix = np.full((len(models), T), np.nan)
    tokens = [""] * T
    for i, model in enumerate(models):
        r = rows[rows["model"] == model]
        matrix[i, r["position"].to_numpy()] = r["weight"].to_numpy()
        if i == 0:
            for p, t in zip(r["position"], r["token"]):
                tokens[p] = t
    return matrix, tokens


def plot_attention(table: pd.DataFrame, scenario: str, out, variant: int = 1, style: ModelStyle | None = None):
    """Saves the figure of one scenario and prompt variant to `out` (table: the COLUMNS of
    `interp_lib.analyses.attention`)."""
    import matplotlib.pyplot as plt

    rows = table[(table["scenario"] == scenario) & (table["variant"] == variant)]
    if rows.empty:
        raise ValueError(f"attention table: no rows for scenario {scenario!r}, variant {variant}")
    style = (style or ModelStyle()).with_models(rows["model"].unique())
    models = style.sort(rows["model"].unique())
    heads = rows.drop_duplicates("component").sort_values(["layer", "head"])
    T = int(rows["position"].max()) + 1
    step = math.ceil(T / MAX_LABELS)
    width = min(60.0, max(10.0, 0.105 * T / step + 2.5))
    panel_h = ROW_HEIGHT * len(models) + LABEL_SPACE + TITLE_SPACE  # rows, rotated token labels, title
    height = panel_h * len(heads) + SUPTITLE_SPACE
    fig, axes = plt.subplots(len(heads), 1, figsize=(width, height), squeeze=False)
    left = 0.08 * max(len(style.label(m)) for m in models) + 0.25  # the model labels, 8 pt
    fig.subplots_adjust(left=left / width, right=1 - 0.6 / width, bottom=LABEL_SPACE / height,
                        top=1 - (SUPTITLE_SPACE + TITLE_SPACE) / height,
                        hspace=(LABEL_SPACE + TITLE_SPACE) / (ROW_HEIGHT * len(models)))
    cmap = attention_cmap()
    token_sets = {tuple(rows[rows["model"] == m].sort_values("position")["token"]) for m in models}
    for ax, (_, head) in zip(axes[:, 0], heads.iterrows()):
        matrix, tokens = _panel_matrix(rows[rows["component"] == head["component"]], models)
        vmax = np.nanmax(matrix) if np.isfinite(matrix).any() else 1.0
        im = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto",
                       interpolation="nearest")
        ax.hlines(np.arange(0.5, len(models) - 1), -0.5, T - 0.5, color="#cccccc", linewidth=0.5)  # row edges
        ax.set_yticks(range(len(models)), [style.label(m) for m in models], fontsize=8)
        for tick, model in zip(ax.get_yticklabels(), models):
            tick.set_color(style.color(model))
        ax.set_xticks(range(0, T, step), [display_token(t) for t in tokens[::step]], rotation=90, fontsize=5.5,
                      fontfamily="monospace")
        ax.tick_params(axis="x", length=1.5, pad=1)
        ax.set_xlim(-0.5, T - 0.5)
        ax.set_title(f"{head['component']} ({WHY.get(head['selected_by'], head['selected_by'])}), {scenario}",
                     fontsize=9, loc="left")
        cbar = fig.colorbar(im, ax=ax, pad=0.005, fraction=0.02, aspect=6)
        cbar.ax.tick_params(labelsize=6)
        cbar.set_label("weight", fontsize=7)
    note = "" if len(token_sets) == 1 else f"; tokens of {style.label(models[0])} (prompts differ between models)"
    label_note = "" if step == 1 else f"; every {step}th token labelled"
    fig.suptitle(f"Attention from the decision position (last token, {T} tokens), {scenario}, prompt variant "
                 f"{variant}{note}{label_note}", fontsize=11, x=0.01, y=1 - 0.1 / height, ha="left", va="top")
    save_figure(fig, out, tight=False)
