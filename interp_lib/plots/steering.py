"""The figure of one steering experiment (from steering.summary's two tables).

Left: mean delta change per layer x alpha over the standard-labelling prompts (red =
towards Defect). Middle: the layer ranking's effect at its alpha, with 95% intervals, the
random control of the same norm and the noise band. Right: P(Defect) against alpha at the
best layer, one line per scenario (swapped-label scenarios dashed) with 95% bands.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from ..noise import noise_band
from ..steering.directions import MAIN
from . import diverging_heatmap, save_figure, zero_line

CONTROL_COLOR = "#7f7f7f"
MAX_TICKS = 16  # layer labels (and heatmap annotations) beyond this many layers are thinned


def _tick_step(n: int) -> int:
    return max(1, -(-n // MAX_TICKS))


def layer_alpha_matrix(summary: pd.DataFrame) -> tuple[np.ndarray, list, list]:
    """([layers, alphas] mean delta change of the direction over the standard-labelling
    scenarios' prompts, layers, alphas)."""
    main = summary[summary["direction"] == MAIN]
    if (main["labelling"] == "standard").any():
        main = main[main["labelling"] == "standard"]
    weighted = main.assign(total=main["mean_delta_change"] * main["n"])
    cell = weighted.groupby(["layer", "alpha"])[["total", "n"]].sum()
    means = (cell["total"] / cell["n"]).unstack("alpha")
    return means.to_numpy(float), list(means.index), list(means.columns)


def plot_steering(summary: pd.DataFrame, layers: pd.DataFrame, path, title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = str(summary["steering"].iloc[0])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1.1, 1, 1.2]})
    matrix, layer_ids, alphas = layer_alpha_matrix(summary)
    image, _ = diverging_heatmap(axes[0], matrix, fmt=lambda v: f"{v:+.1f}", annotate=len(layer_ids) <= MAX_TICKS)
    axes[0].set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    shown = range(0, len(layer_ids), _tick_step(len(layer_ids)))
    axes[0].set_yticks(list(shown), [f"L{int(layer_ids[i])}" for i in shown])
    axes[0].set_xlabel("alpha")
    axes[0].set_ylabel("steered layer")
    axes[0].set_title("mean delta change (standard labelling)", fontsize=10)
    fig.colorbar(image, ax=axes[0], label="delta logit (D - C) change", shrink=0.85)

    _ranking_panel(axes[1], layers)
    _curves_panel(axes[2], summary, layers)
    site, positions = summary["site"].iloc[0], summary["positions"].iloc[0]
    target = summary["target"].iloc[0]
    fig.suptitle(title or f"Steering {name}: {target}, site {site}, positions {positions}", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


def _ranking_panel(ax, layers: pd.DataFrame) -> None:
    order = layers.sort_values("layer")
    x = order["layer"].to_numpy(int)
    effect = order["effect"].to_numpy(float)
    err = np.vstack([effect - order["ci_low"].to_numpy(float), order["ci_high"].to_numpy(float) - effect])
    from matplotlib.colors import to_rgba

    colors = [to_rgba("#d62728" if e > 0 else "#1f77b4", 0.9 if s == "ranked" else 0.3)
              for e, s in zip(effect, order["status"])]
    ax.bar(x, effect, color=colors)
    ax.errorbar(x, effect, yerr=np.nan_to_num(err), fmt="none", ecolor="black", capsize=3, linewidth=0.8)
    if order["control_effect"].notna().any():
        ax.scatter(x, order["control_effect"], marker="x", color=CONTROL_COLOR, zorder=3,
                   label="random direction, same norm")
    band = noise_band(float(order["noise_floor"].max()))
    if np.isfinite(band) and band > 0:
        ax.axhspan(-band, band, color="#dddddd", zorder=0, label="noise band")
    zero_line(ax)
    best = order[order["rank"] == 1]
    for _, row in best.iterrows():
        ax.annotate("best", (row["layer"], row["effect"]), textcoords="offset points",
                    xytext=(0, 6 if row["effect"] >= 0 else -12), ha="center", fontsize=8)
    shown = x[::_tick_step(len(x))]
    ax.set_xticks(shown, [f"L{layer}" for layer in shown])
    ax.set_xlabel("steered layer")
    ax.set_ylabel("delta change (95% CI)")
    alpha = float(order["alpha"].iloc[0])
    ax.set_title(f"effect at alpha = {alpha:g} ({order['prompts'].iloc[0]})", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")


def _curves_panel(ax, summary: pd.DataFrame, layers: pd.DataFrame) -> None:
    ranked = layers[layers["rank"] == 1]
    if ranked.empty:
        ax.text(0.5, 0.5, "no layer ranked:\nevery effect is below noise,\nwithin the control\nor against the expected sign",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    layer = int(ranked.iloc[0]["layer"])
    at = summary[summary["layer"] == layer]
    # as many scenarios as a config has (40 in the games overlays): the palette repeats
    colors = itertools.cycle(["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"])
    for scenario, rows in at[at["direction"] == MAIN].groupby("scenario", sort=False):
        rows = rows.sort_values("alpha")
        color = next(colors)
        style = "--" if (rows["labelling"] == "swapped").all() else "-"
        ax.plot(rows["alpha"], rows["mean_p_defect"], style, marker="o", markersize=3, color=color, label=scenario)
        ax.fill_between(rows["alpha"], rows["p_ci_low"], rows["p_ci_high"], color=color, alpha=0.15, linewidth=0)
    control = at[at["direction"] != MAIN].groupby("alpha")["mean_p_defect"].mean()
    if len(control):
        ax.plot(control.index, control.to_numpy(), ":", color=CONTROL_COLOR, label="random direction (mean)")
    ax.axhline(0.5, color="black", linewidth=0.6, linestyle=":")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("alpha")
    ax.set_ylabel("P(Defect | {C, D})")
    ax.set_title(f"best layer L{layer}: P(Defect) per scenario", fontsize=10)
    ax.legend(fontsize=7, loc="best")
