"""Linear-probe accuracy per layer: one panel per target, a line per model with its 95%
Wilson band, and each model's chance level (majority-class share) dashed in its colour.
Input: the tidy table of `interp_lib.analyses.probes` (COLUMNS)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..analyses.probes import COLUMNS, TARGETS
from ..style import ModelStyle
from . import save_figure

TITLES = {"decision": "decision (standard labelling; 1 = Defect)",
          "opponent_last": "opponent's last move (standard labelling; 1 = D)",
          "decision_both_labellings": "Defect, both labellings (1 = Defect)",
          "action_token": "token, both labellings (1 = writes action2)"}


def plot_probe_accuracy(df: pd.DataFrame, path, style: ModelStyle | None = None) -> None:
    """Saves the figure of the probe table `df` (COLUMNS, any number of models) to `path`."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"probe table: missing columns {', '.join(missing)}")
    if df.empty:
        raise ValueError("probe table: no rows")
    targets = [t for t in TARGETS if t in set(df["target"])] + sorted(set(df["target"]) - set(TARGETS))
    style = (style or ModelStyle()).with_models(df["model"].unique())
    models = style.sort(df["model"].unique())
    ncols = min(len(targets), 2)
    nrows = -(-len(targets) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols + 1.6, 3.6 * nrows), squeeze=False, sharey=True)
    for ax in axes.flat[len(targets):]:
        ax.set_visible(False)
    for ax, target in zip(axes.flat, targets):
        no_probe = []
        for model in models:
            rows = df[(df["model"] == model) & (df["target"] == target)].sort_values("layer")
            if rows.empty:
                continue
            color, i = style.color(model), models.index(model)
            # dashes offset per model: equal chance levels show every model's colour in turn, then a gap
            ax.axhline(float(rows["chance"].iloc[0]), color=color, linewidth=1.0,
                       linestyle=(4.0 * ((len(models) + 1 - i) % (len(models) + 1)), (4.0, 4.0 * len(models))))
            if not np.isfinite(rows["accuracy"].to_numpy(float)).any():
                no_probe.append((model, rows["cv"].iloc[0]))
                continue
            layers = rows["layer"].to_numpy()
            ax.fill_between(layers, rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float), color=color,
                            alpha=0.15, linewidth=0)
            ax.plot(layers, rows["accuracy"].to_numpy(float), color=color, marker="o", markersize=3, linewidth=1.5)
        for i, (model, why) in enumerate(no_probe):
            ax.text(0.02, 0.04 + 0.07 * i, f"{style.label(model)}: no probe: {why}", transform=ax.transAxes,
                    fontsize=7.5, color=style.color(model), va="bottom")
        ax.set_ylim(0, 1.02)
        ax.set_xlim(df["layer"].min() - 0.3, df["layer"].max() + 0.3)  # also where no model has a probe
        ax.set_xlabel("layer (resid_post at the decision position)", fontsize=8.5)
        ax.set_title(TITLES.get(target, target), fontsize=9.5, loc="left")
        ax.grid(alpha=0.3, linewidth=0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
        cvs = ", ".join(sorted(set(df.loc[df["target"] == target, "cv"])))
        ax.text(0.98, 0.04, f"CV: {cvs}", transform=ax.transAxes, fontsize=6.5, ha="right", va="bottom",
                color="#555555")
    for row in axes:
        row[0].set_ylabel("cross-validated accuracy")
    handles = [Line2D([], [], color=style.color(m), marker="o", markersize=3, label=style.label(m)) for m in models]
    handles.append(Line2D([], [], color="#555555", linestyle="--", label="chance"))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    n_prompts = ", ".join(str(n) for n in sorted(set(df["n_prompts"])))
    fig.suptitle(f"Linear probes on the decision position's residual stream ({n_prompts} prompts; "
                 "bands: 95% Wilson intervals; dashed: chance = majority share)", fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    save_figure(fig, path)
