"""Mechanism transfer across games and prompts: three panels from the tables of
analyses.transfer and analyses.probe_transfer.

(a) Spearman of each experiment's component ranking (patching: filled; DLA change: open)
    between the IPD and each context, with its 95% bootstrap interval; the bar's tick marks
    the noise ceiling (what the same true ranking would show at these prompt counts).
(b) IPD probe accuracy minus its floor (max of the test context's chance and the training
    majority's score) per layer, one row per model and context; colour map centred at zero;
    blank where the status says no accuracy could pass (one class, too few prompts).
(c) The share of prompts the IPD circuit flips per context (95% Wilson interval), beside
    random sets of its size (open markers)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..style import ModelStyle, color_at
from . import save_figure


def _contexts(*frames) -> list[str]:
    return list(dict.fromkeys(c for f in frames for c in f.get("context", [])))


def plot_transfer(components: pd.DataFrame, probes: pd.DataFrame, circuits: pd.DataFrame, path,
                  style: ModelStyle | None = None) -> None:
    """Saves the transfer figure to `path` (a panel without rows says so)."""
    import matplotlib.pyplot as plt

    contexts = _contexts(components, probes, circuits)
    # one panel above the other: a games config has some 15 contexts and 5 x 15 probe rows
    probe_rows = len(probes.groupby(["model", "context"])) if len(probes) else 1
    heights = [4.2, max(3.0, 0.14 * probe_rows), 4.2]
    fig, axes = plt.subplots(3, 1, figsize=(max(10.0, 0.6 * len(contexts) + 4), sum(heights) + 1.5),
                             gridspec_kw={"height_ratios": heights})
    xs = {c: i for i, c in enumerate(contexts)}
    # (a) component rankings
    ax = axes[0]
    experiments = list(dict.fromkeys(components["experiment"])) if len(components) else []
    width = 0.8 / max(2 * len(experiments), 1)
    for i, experiment in enumerate(experiments):
        for j, (analysis, face) in enumerate((("patching", None), ("dla", "white"))):
            rows = components[(components["experiment"] == experiment) & (components["analysis"] == analysis)]
            for _, r in rows.iterrows():
                x = xs[r["context"]] + (2 * i + j - (2 * len(experiments) - 1) / 2) * width
                lo, hi = r["ci_low"], r["ci_high"]
                err = ([[max(r["spearman"] - lo, 0.0)], [max(hi - r["spearman"], 0.0)]]
                       if np.isfinite([lo, hi]).all() else None)
                ax.errorbar([x], [r["spearman"]], yerr=err, fmt="o", color=color_at(i), markersize=4.5,
                            markerfacecolor=face or color_at(i), capsize=2, linewidth=1,
                            label=f"{experiment}" if j == 0 and _ == rows.index[0] else None)
                if np.isfinite(r["noise_ceiling"]):
                    ax.plot([x - width / 2, x + width / 2], [r["noise_ceiling"]] * 2, color="#333333", linewidth=1.5)
    ax.axhline(0, color="#999999", linewidth=0.6)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("Spearman vs the IPD (components)")
    ax.set_title("(a) component rankings: patching filled, DLA open;\n— noise ceiling", fontsize=9, loc="left")
    if experiments:
        ax.legend(fontsize=7, frameon=False, loc="lower left")
    else:
        ax.text(0.5, 0.5, "no patched scenario outside the IPD", ha="center", transform=ax.transAxes, fontsize=8)
    # (b) probes
    ax = axes[1]
    style = (style or ModelStyle()).with_models(probes["model"].unique() if len(probes) else [])
    if len(probes):
        keys = list(dict.fromkeys(zip(probes["model"], probes["context"])))
        layers = sorted(probes["layer"].unique())
        grid = np.full((len(keys), len(layers)), np.nan)
        for k, (model, context) in enumerate(keys):
            rows = probes[(probes["model"] == model) & (probes["context"] == context)].set_index("layer")
            floor = np.maximum(rows["chance"], rows["constant"])
            if (rows["status"] == "ok").all():  # else one class or too few prompts: nothing to test, blank
                grid[k] = (rows["accuracy"] - floor).reindex(layers).to_numpy(float)
        image = ax.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(keys)), [f"{style.label(m)} | {c}" for m, c in keys], fontsize=6)
        ax.set_xlabel("layer")
        fig.colorbar(image, ax=ax, fraction=0.04, label="accuracy - floor")
    else:
        ax.text(0.5, 0.5, "no probe rows", ha="center", transform=ax.transAxes, fontsize=8)
    ax.set_title("(b) IPD probe on each context: accuracy - max(chance, constant); blank: no probe, or nothing to "
                 "test (one class, too few prompts)", fontsize=9, loc="left")
    # (c) circuits
    ax = axes[2]
    experiments = list(dict.fromkeys(circuits["experiment"])) if len(circuits) else []
    width = 0.8 / max(len(experiments), 1)
    for i, experiment in enumerate(experiments):
        rows = circuits[circuits["experiment"] == experiment]
        for _, r in rows.iterrows():
            x = xs[r["context"]] + (i - (len(experiments) - 1) / 2) * width
            share, lo, hi = r["flip_share"], r["flip_ci_low"], r["flip_ci_high"]
            if not np.isfinite(share):
                continue
            ax.errorbar([x], [share], yerr=[[max(share - lo, 0.0)], [max(hi - share, 0.0)]], fmt="o", color=color_at(i),
                        markersize=4.5, capsize=2, linewidth=1, label=experiment if _ == rows.index[0] else None)
            ax.plot([x], [r["random_flip_share"]], "o", color=color_at(i), markerfacecolor="white", markersize=4)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("share of prompts flipped")
    ax.set_title("(c) the IPD circuit patched in each context;\nopen: random sets of its size", fontsize=9,
                 loc="left")
    if experiments:
        ax.legend(fontsize=7, frameon=False)
    else:
        ax.text(0.5, 0.5, "no circuit to transfer", ha="center", transform=ax.transAxes, fontsize=8)
    for ax in (axes[0], axes[2]):
        ax.set_xticks(range(len(contexts)), contexts, rotation=35, ha="right", fontsize=7)
        ax.set_xlim(-0.6, len(contexts) - 0.4)
        ax.grid(axis="y", alpha=0.3, linewidth=0.5)
    fig.tight_layout()
    save_figure(fig, path)
