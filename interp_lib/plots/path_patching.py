"""Path-patching figures: one per experiment, the progressive curves (no torch).

A row per patched scenario (its labelling named), a column per site (attn_out, mlp_out,
both); in each panel one line per start layer a: the mean delta change over prompt variants
of patching layers a..b, against b, with its 95% bootstrap band; a ring marks the mean
curve's saturation layer (interp_lib.patching.saturation). Grey band: |delta change| <= 3 x
the largest noise floor; dotted line: the mean gap source - baseline delta (a patch that
carried the whole difference would end there). Inputs: `path_patch_summary` and
`path_saturation_table` (interp_lib.report.path_patching_tables).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..noise import NOISE_MULTIPLE
from . import save_figure, zero_line

# the sites of interp_lib.patching.paths.PATH_SITES, in its order
SITE_TITLES = {"attn_out": "attn_out (every head)", "mlp_out": "mlp_out", "both": "attn_out + mlp_out"}
NOISE_COLOR = "#9a9a9a"


def plot_path_patching(summary: pd.DataFrame, path, experiment: str, labels: dict | None = None) -> None:
    """Saves experiment `experiment`'s progressive path-patching curves to `path`; a figure
    that says so when the summary has no rows of it (path patching switched off)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or {}
    rows = summary[summary["experiment"] == experiment] if not summary.empty else summary
    if rows.empty:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{experiment}: no path patching (analysis.path_patching is off)", ha="center",
                va="center", fontsize=10)
        save_figure(fig, path)
        return
    curves = rows[["scenario", "labelling"]].drop_duplicates().to_numpy().tolist()
    sites = [s for s in SITE_TITLES if s in set(rows["site"])]
    starts = sorted(set(rows["layer_from"]))
    last = int(rows["layer_to"].max())
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(starts)))
    fig, axes = plt.subplots(len(curves), len(sites), figsize=(3.6 * len(sites) + 1.4, 2.3 * len(curves) + 0.9),
                             squeeze=False, sharex=True)
    for i, (scenario, labelling) in enumerate(curves):
        scen = rows[(rows["scenario"] == scenario) & (rows["labelling"] == labelling)]
        lim = np.nanmax(np.abs(scen[["ci_low", "ci_high", "mean_delta_change"]].to_numpy(float)))
        gap = float(scen["mean_source_delta"].mean() - scen["mean_baseline_delta"].mean())
        lim = max(lim if math.isfinite(lim) else 0.0, abs(gap), 1e-3) * 1.12
        for j, site in enumerate(sites):
            ax = axes[i, j]
            band = NOISE_MULTIPLE * float(scen["noise_floor"].max())
            if math.isfinite(band) and band > 0:
                ax.axhspan(-band, band, color=NOISE_COLOR, alpha=0.35, linewidth=0, zorder=0)
            zero_line(ax)
            ax.axhline(gap, color="black", linestyle=":", linewidth=1.0, zorder=1)
            for color, a in zip(colors, starts):
                c = scen[(scen["site"] == site) & (scen["layer_from"] == a)].sort_values("layer_to")
                if c.empty:
                    continue
                b = c["layer_to"].to_numpy()
                ax.fill_between(b, c["ci_low"].to_numpy(float), c["ci_high"].to_numpy(float), color=color,
                                alpha=0.18, linewidth=0)
                ax.plot(b, c["mean_delta_change"].to_numpy(float), color=color, marker="o", markersize=2.5,
                        linewidth=1.4)
                sat = int(c["saturation_layer"].iat[0])
                at = c[c["layer_to"] == sat]
                ax.plot([sat], [float(at["mean_delta_change"].iat[0])], marker="o", markersize=9,
                        markerfacecolor="none", markeredgecolor=color, markeredgewidth=1.4, zorder=5)
            ax.set_ylim(-lim, lim)
            ax.set_xlim(-0.3, last + 0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3, linewidth=0.5)
            if i == 0:
                ax.set_title(SITE_TITLES.get(site, site), fontsize=9.5)
            if j == 0:
                ax.set_ylabel(f"{scenario}\n({labelling})\ndelta change", fontsize=8)
            if i == len(curves) - 1:
                ax.set_xlabel("last patched layer b (range a..b)", fontsize=8.5)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Line2D([], [], color=c, marker="o", markersize=3, label=f"from layer a = {a}")
               for c, a in zip(colors, starts)]
    handles += [Line2D([], [], marker="o", markersize=9, markerfacecolor="none", markeredgecolor="black",
                       linestyle="none", label="saturation layer"),
                Line2D([], [], color="black", linestyle=":", label="source - baseline delta"),
                Patch(color=NOISE_COLOR, alpha=0.35,
                      label=f"|delta change| \u2264 {NOISE_MULTIPLE:g} \u00d7 noise floor")]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    first = rows.iloc[0]
    src, tgt = labels.get(first["source"], first["source"]), labels.get(first["target"], first["target"])
    fig.suptitle(f"Path patching {src} \u2192 {tgt} ({experiment}; {first['positions']} positions)\n"
                 "delta change (patched - baseline, logit D - C) of layers a..b patched from the source, mean over "
                 "variants, 95% bootstrap bands", fontsize=9.5, x=0.01, ha="left")
    height = fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.42 / height))
    save_figure(fig, path)
