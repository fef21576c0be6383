"""The figure of one fine-tune's adapter edits (from adapter_edits.summary's table).

Every panel shows the change towards the edit's aim (toward_goal: delta change x the sign of
aim minus baseline, in logits; comparable across scenarios whose decisions differ), mean over
the prompts of every scenario of a labelling with 95% intervals (standard labelling solid,
swapped dashed), the mean size of the whole change dotted, and the noise band grey. Left:
removing the fine-tune's update layer by layer (ablation; aim: the base), module groups at
the top layers as markers. Middle: adding it alone to the base (sufficiency; aim: the
fine-tune). Right: each transplant's curve by layer (aim: the source).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..noise import noise_band
from ..style import color_at
from . import save_figure, zero_line

STYLES = {"standard": "-", "swapped": "--"}
GROUP_MARKERS = {"attn": "^", "mlp": "s"}  # single modules: "o"
KIND_COLORS = {"ablation": "#2166ac", "sufficiency": "#b2182b"}
YLABEL = "change towards the aim (logits), mean, 95% CI"


def _pooled(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[summary["scenario"] == "ALL"]


def _curve(ax, rows: pd.DataFrame, color: str, style: str, label: str) -> None:
    rows = rows.sort_values("layer")
    x, y = rows["layer"].to_numpy(float), rows["mean_toward_goal"].to_numpy(float)
    ax.plot(x, y, style, marker="o", markersize=3, color=color, label=label)
    lo, hi = rows["toward_ci_low"].to_numpy(float), rows["toward_ci_high"].to_numpy(float)
    if np.isfinite(lo).any():
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, linewidth=0)


def _goal(ax, rows: pd.DataFrame, color: str) -> None:
    if len(rows) and np.isfinite(rows["mean_goal_gap"]).any():
        ax.axhline(float(rows["mean_goal_gap"].mean()), color=color, linestyle=":", linewidth=0.9)


def _band(ax, rows: pd.DataFrame) -> None:
    band = noise_band(float(rows["noise_floor"].max())) if len(rows) else float("nan")
    if np.isfinite(band) and band > 0:
        ax.axhspan(-band, band, color="#dddddd", zorder=0, label=f"noise band (3 x floor {band / 3:.1g})")


def _kind_panel(ax, pooled: pd.DataFrame, kind: str, title: str, goal: str) -> None:
    rows = pooled[pooled["kind"] == kind]
    color = KIND_COLORS[kind]
    for labelling, style in STYLES.items():
        sub = rows[rows["labelling"] == labelling]
        whole = sub[sub["group"] == "block"]
        if whole.empty:
            continue
        _curve(ax, whole, color, style, f"whole layer ({labelling})")
        _goal(ax, whole, color)
        for group, g in sub[sub["group"] != "block"].groupby("group", sort=False):
            ax.scatter(g["layer"], g["mean_toward_goal"], marker=GROUP_MARKERS.get(group, "o"), s=22,
                       facecolors="none" if labelling == "swapped" else color, edgecolors=color, zorder=3,
                       label=f"{group} ({labelling})")
    _band(ax, rows)
    zero_line(ax)
    ax.set_title(f"{title}\n(dotted: {goal})", fontsize=10)
    ax.set_xlabel("layer")
    ax.set_ylabel(YLABEL)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")


def _transplant_panel(ax, pooled: pd.DataFrame, model: str) -> None:
    rows = pooled[(pooled["kind"] == "transplant") & (pooled["group"] == "block")]
    if rows.empty:
        ax.text(0.5, 0.5, f"no experiment has {model} as its target:\nno transplant", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    for i, (source, sub) in enumerate(rows.groupby("source", sort=False)):
        color = color_at(i + 1)
        for labelling, style in STYLES.items():
            part = sub[sub["labelling"] == labelling]
            if len(part):
                _curve(ax, part, color, style, f"{source}'s update ({labelling})")
                _goal(ax, part, color)
    _band(ax, pooled[pooled["kind"] == "transplant"])
    zero_line(ax)
    ax.set_title(f"transplant: a source's update in place of {model}'s (aim: the source)\n(dotted: |source - {model}|)",
                 fontsize=10)
    ax.set_xlabel("layer")
    ax.set_ylabel(YLABEL)
    ax.legend(fontsize=7, loc="best")


def plot_adapter_edits(summary: pd.DataFrame, path, label: str | None = None) -> None:
    """One fine-tune's figure (module doc) from its rows of edit_summary.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = str(summary["model"].iloc[0]) if len(summary) else (label or "")
    pooled = _pooled(summary)
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    _kind_panel(axes[0], pooled, "ablation", f"ablation: {model} without one layer's update (aim: the base)",
                "|base - fine-tune|")
    _kind_panel(axes[1], pooled, "sufficiency", f"sufficiency: the base with one layer's update (aim: {model})",
                "|fine-tune - base|")
    _transplant_panel(axes[2], pooled, model)
    layers = pooled["layer"].dropna()
    if len(layers):
        ticks = sorted(layers.astype(int).unique())
        step = max(1, -(-len(ticks) // 16))
        for ax in axes:
            if ax.axison:
                ax.set_xticks(ticks[::step], [f"L{t}" for t in ticks[::step]])
    per = summary[summary["scenario"] != "ALL"].drop_duplicates("scenario")
    counts = ", ".join(f"{n} {lab}" for lab, n in per["labelling"].value_counts(sort=False).items())
    fig.suptitle(f"Adapter edits of {label or model}: means over every scenario's prompts per labelling "
                 f"(scenarios: {counts})", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)
