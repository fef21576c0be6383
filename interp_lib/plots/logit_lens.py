"""Logit-lens plots. Inputs: `{scenario: {model: trajectories [n_variants, L] or [L]}}`
(see `by_scenario`); positive delta = pro-Defect."""

from __future__ import annotations

import math

import numpy as np

from ..stats import mean_ci
from ..style import DELTA_CMAP, DELTA_LABEL, ModelStyle, symmetric_limit, text_color_for
from . import save_figure, zero_line

X_LABEL = "layer (residual stream after block)"


def by_scenario(records) -> dict:
    """{scenario: {model: array [n_variants, L]}} from trajectory records (input order kept,
    variants sorted)."""
    out: dict = {}
    for rec in sorted(records, key=lambda r: r["variant"]):
        out.setdefault(rec["scenario"], {}).setdefault(rec["model"], []).append(rec["trajectory"])
    return {s: {m: np.asarray(t, dtype=float) for m, t in ms.items()} for s, ms in out.items()}


def _2d(traj) -> np.ndarray:
    arr = np.asarray(traj, dtype=float)
    return arr[None] if arr.ndim == 1 else arr


class LogitLensVisualizer:
    """Logit-lens figures. `style` fixes model order, labels and colours (default: the
    order models are given in); `model_labels` arguments override its labels."""

    def __init__(self, action_tokens: dict | None = None, style: ModelStyle | None = None):
        self.action_tokens = action_tokens
        self.style = style or ModelStyle()

    def _style(self, models, model_labels=None) -> ModelStyle:
        style = self.style.with_models(models)
        if model_labels:
            style = ModelStyle(style.order, {**style.labels, **model_labels}, style.colors)
        return style

    def _draw_lines(self, ax, trajectories: dict, style: ModelStyle) -> None:
        for model in style.sort(trajectories):
            arr = _2d(trajectories[model])
            x = np.arange(arr.shape[1])
            color = style.color(model)
            if arr.shape[0] > 1:
                for row in arr:
                    ax.plot(x, row, color=color, linewidth=0.7, alpha=0.35)
            ax.plot(x, arr.mean(0), color=color, linewidth=2.0, marker="o", markersize=3, label=style.label(model))
        zero_line(ax)
        ax.grid(alpha=0.3)
        from matplotlib.ticker import MaxNLocator

        if x.size <= 13:
            ax.set_xticks(x)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
        ax.text(0.01, 0.98, "pro-Defect \u2191", transform=ax.transAxes, ha="left", va="top", fontsize=8, color="#b2182b")
        ax.text(0.01, 0.02, "pro-Cooperate \u2193", transform=ax.transAxes, ha="left", va="bottom", fontsize=8,
                color="#2166ac")

    def plot_model_comparison(self, trajectories: dict, scenario: str, model_labels: dict | None = None,
                              ax=None, save_path=None):
        """One scenario: delta per layer, one colour per model (thick = mean over variants,
        thin = single variants). `trajectories`: {model: [n_variants, L] or [L]}."""
        import matplotlib.pyplot as plt

        style = self._style(trajectories, model_labels)
        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(8, 4.8))
        self._draw_lines(ax, trajectories, style)
        n_var = max(_2d(t).shape[0] for t in trajectories.values())
        ax.set_title(f"Logit lens, scenario {scenario}\n(thick: mean of {n_var} prompt variants; thin: single variants)")
        ax.set_xlabel(X_LABEL)
        ax.set_ylabel(DELTA_LABEL)
        ax.legend(title="model", fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        if save_path is not None and fig is not None:
            save_figure(fig, save_path)
        return fig or ax.figure

    def plot_scenario_grid(self, results: dict, model_labels: dict | None = None, save_path=None):
        """One panel per scenario (shared axes). `results`: {scenario: {model: trajectories}}."""
        import matplotlib.pyplot as plt

        models = [m for ms in results.values() for m in ms]
        style = self._style(models, model_labels)
        n = len(results)
        ncols = min(3, n)
        nrows = math.ceil(n / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), sharex=True, sharey=True,
                                 squeeze=False)
        for ax, (scenario, trajs) in zip(axes.flat, results.items()):
            self._draw_lines(ax, trajs, style)
            ax.set_title(scenario)
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel(DELTA_LABEL)
        for col in range(ncols):  # x labels under the lowest visible panel of each column
            rows = [r for r in range(nrows) if r * ncols + col < n]
            ax = axes[rows[-1], col]
            ax.set_xlabel(X_LABEL)
            ax.xaxis.set_tick_params(labelbottom=True)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, title="model", loc="upper center", ncol=min(len(labels), 5),
                   bbox_to_anchor=(0.5, 0.0), fontsize=9)
        fig.suptitle("Logit lens: delta (D - C) after each layer, all scenarios\n"
                     "(thick: mean over prompt variants; thin: single variants)")
        fig.tight_layout()
        if save_path is not None:
            save_figure(fig, save_path)
        return fig

    def plot_final_comparison_heatmap(self, results: dict, model_labels: dict | None = None, save_path=None):
        """Models x scenarios: the final layer's delta (mean over variants), annotated with
        that mean and its bootstrap 95% interval."""
        import matplotlib.pyplot as plt

        scenarios = list(results)
        style = self._style([m for ms in results.values() for m in ms], model_labels)
        models = style.sort(m for ms in results.values() for m in ms)
        mean = np.full((len(models), len(scenarios)), np.nan)
        lo, hi = mean.copy(), mean.copy()
        for j, s in enumerate(scenarios):
            for i, m in enumerate(models):
                if m in results[s]:
                    final = _2d(results[s][m])[:, -1]
                    mean[i, j], lo[i, j], hi[i, j] = mean_ci(final)
        lim = symmetric_limit(mean)
        fig, ax = plt.subplots(figsize=(1.7 * len(scenarios) + 3, 0.75 * len(models) + 2))
        im = ax.imshow(mean, cmap=DELTA_CMAP, vmin=-lim, vmax=lim, aspect="auto")
        for i in range(len(models)):
            for j in range(len(scenarios)):
                if np.isfinite(mean[i, j]):
                    interval = f"\n[{lo[i, j]:+.2f}, {hi[i, j]:+.2f}]" if np.isfinite(lo[i, j]) else ""
                    ax.text(j, i, f"{mean[i, j]:+.2f}{interval}", ha="center",
                            va="center", fontsize=8, color=text_color_for(mean[i, j], lim))
        ax.set_xticks(range(len(scenarios)), scenarios, rotation=20, ha="right")
        ax.set_yticks(range(len(models)), [style.label(m) for m in models])
        ax.set_xlabel("scenario")
        ax.set_ylabel("model")
        ax.set_title("Final-layer delta (D - C): mean over prompt variants [bootstrap 95% interval]\n"
                     "red = prefers Defect (action2), blue = prefers Cooperate (action1)")
        cbar = fig.colorbar(im, ax=ax)
        cbar.set_label(DELTA_LABEL)
        fig.tight_layout()
        if save_path is not None:
            save_figure(fig, save_path)
        return fig
