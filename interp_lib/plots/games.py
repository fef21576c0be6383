"""Behaviour per game: one panel per game, P(second action) per state and model with its 95%
bootstrap interval; the standard labelling filled, a swapped sibling open, and a model marked
`token` (its decisions flip with the labels) drawn faint. Input: the table of
`interp_lib.analyses.games` (COLUMNS)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..analyses.games import COLUMNS
from ..style import ModelStyle
from . import save_figure


def plot_games(df: pd.DataFrame, path, style: ModelStyle | None = None) -> None:
    """Saves the figure of the games table `df` (COLUMNS) to `path`."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"games table: missing columns {', '.join(missing)}")
    if df.empty:
        raise ValueError("games table: no rows")
    games = list(dict.fromkeys(df["game"]))
    style = (style or ModelStyle()).with_models(df["model"].unique())
    models = style.sort(df["model"].unique())
    fig, axes = plt.subplots(1, len(games), figsize=(3.2 * len(games) + 1.8, 3.8), squeeze=False, sharey=True)
    width = 0.8 / max(len(models), 1)
    for ax, game in zip(axes[0], games):
        g = df[df["game"] == game]
        cells = list(dict.fromkeys(zip(g["state"], g["format"], g["preprompt"])))
        for i, model in enumerate(models):
            m = g[g["model"] == model]
            for j, cell in enumerate(cells):
                for labelling, face in (("standard", style.color(model)), ("swapped", "white")):
                    r = m[(m["state"] == cell[0]) & (m["format"] == cell[1]) & (m["preprompt"] == cell[2])
                          & (m["labelling"] == labelling)]
                    if r.empty:
                        continue
                    r = r.iloc[0]
                    x = j + (i - (len(models) - 1) / 2) * width + (0.06 if labelling == "swapped" else 0)
                    bias = m[(m["state"] == cell[0]) & (m["format"] == cell[1]) & (m["preprompt"] == cell[2])]
                    faint = (bias["decides_by"] == "token").any()
                    lo, hi = float(r["ci_low"]), float(r["ci_high"])
                    err = None if not np.isfinite([lo, hi]).all() else [[r["p_second"] - lo], [hi - r["p_second"]]]
                    ax.errorbar([x], [r["p_second"]], yerr=err, fmt="o", markersize=4.5, color=style.color(model),
                                markerfacecolor=face, alpha=0.35 if faint else 1.0, capsize=2, linewidth=1)
        labels = [f"{s}" + (f"\n{f}" if f != "table" else "") + (f"\n{p}" if p else "") for s, f, p in cells]
        ax.set_xticks(range(len(cells)), labels, fontsize=7)
        ax.set_xlim(-0.6, len(cells) - 0.4)
        ax.set_ylim(-0.03, 1.03)
        ax.axhline(0.5, color="#999999", linewidth=0.6, linestyle=":")
        ax.set_title(f"{game}: {g['metric'].iat[0]}", fontsize=9, loc="left")
        ax.grid(axis="y", alpha=0.3, linewidth=0.5)
    axes[0][0].set_ylabel("P(second action), mean over variants")
    handles = [Line2D([], [], color=style.color(m), marker="o", linestyle="", label=style.label(m)) for m in models]
    handles += [Line2D([], [], color="#555555", marker="o", markerfacecolor="white", linestyle="",
                       label="swapped labels"),
                Line2D([], [], color="#555555", marker="o", alpha=0.35, linestyle="",
                       label="faint: flips with the labels (a token)")]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.suptitle("Behaviour per game and state (own, opponent's last move; - not shown); bars: bootstrap 95% "
                 "intervals", fontsize=9.5, x=0.01, ha="left")
    fig.tight_layout()
    save_figure(fig, path)
