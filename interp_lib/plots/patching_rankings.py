"""Activation-patching figures of one experiment over its scenarios: the strongest
components (bars, with each scenario's mean) and their consistency across scenarios
(heatmap, with sign agreement and top-k counts from the experiment's top_components table);
the patch_plots_experiment job. Conventions: patching_common."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..style import PRO_COOPERATE_COLOR, PRO_DEFECT_COLOR, color_at
from . import diverging_heatmap, zero_line
from .patching_common import (
    NOISE_COLOR,
    PatchingFigures,
    _band_label,
    _colorbar_band,
    _first,
    _fmt,
    _mark_noise_cells,
    _only,
    metric_label,
    noise_band,
)

_SCENARIO_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def per_scenario_means(results: pd.DataFrame, metric: str = "delta_change") -> pd.DataFrame:
    """components x scenarios: the metric's mean over variants (scenarios in table order)."""
    per = results.groupby(["component", "scenario"], sort=False)[metric].mean().unstack("scenario")
    scenarios = list(pd.unique(results["scenario"]))
    components = list(pd.unique(results["component"]))
    return per.reindex(index=components, columns=scenarios)


def rank_components(per: pd.DataFrame) -> list:
    """Components by mean |per-scenario mean| (as `report.patching_tables.component_consistency`)."""
    score = per.abs().mean(axis=1)
    return list(score.sort_values(ascending=False, kind="stable").index)


class RankingPlots(PatchingFigures):
    """The top components over scenarios (`plot_top_components`) and their consistency
    across scenarios (`plot_consistency`)."""

    def plot_top_components(self, results: pd.DataFrame, top_k: int = 30, metric: str = "delta_change",
                            title: str | None = None, out=None, save_path=None):
        """Bars: the top_k components by mean |metric| over scenarios (each a mean over
        variants), signed mean over scenarios, red = towards Defect, blue = towards
        Cooperate; dots: the single scenarios; right: how many scenarios share the sign."""
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
        from matplotlib.transforms import blended_transform_factory

        out = out if out is not None else save_path
        results = _only(results, "experiment", None, "results")
        if results.empty:
            raise ValueError("no patching results to plot")
        per = per_scenario_means(results, metric)
        top = rank_components(per)[:top_k]
        scenarios = list(per.columns)
        S, K = len(scenarios), len(top)
        sub = per.loc[top[::-1]]  # largest at the top
        mean = sub.mean(axis=1).to_numpy()
        y = np.arange(K)
        fig, ax = plt.subplots(figsize=(9, 0.3 * K + 2.4))
        ax.barh(y, mean, height=0.75, color=[PRO_DEFECT_COLOR if v > 0 else PRO_COOPERATE_COLOR for v in mean],
                alpha=0.55, zorder=2)
        handles = [Patch(color=PRO_DEFECT_COLOR, alpha=0.55, label="mean over scenarios > 0 (towards Defect)"),
                   Patch(color=PRO_COOPERATE_COLOR, alpha=0.55, label="mean over scenarios < 0 (towards Cooperate)")]
        offsets = (np.arange(S) - (S - 1) / 2) * (0.6 / max(S, 1)) if S > 1 else np.zeros(1)
        for j, scen in enumerate(scenarios):
            marker = _SCENARIO_MARKERS[j % len(_SCENARIO_MARKERS)]
            ax.scatter(sub[scen].to_numpy(), y + offsets[j], s=16, marker=marker, color=color_at(j + 8),
                       edgecolor="black", linewidth=0.4, zorder=3)
            handles.append(Line2D([], [], linestyle="", marker=marker, markersize=5, color=color_at(j + 8),
                                  markeredgecolor="black", markeredgewidth=0.4, label=scen))
        band = noise_band(results) if metric == "delta_change" else math.nan
        if math.isfinite(band):
            ax.axvspan(-band, band, color=NOISE_COLOR, alpha=0.35, zorder=1, linewidth=0)
            handles.insert(2, Patch(color=NOISE_COLOR, alpha=0.35, label=_band_label(band)))
        zero_line(ax, "v")
        ax.set_yticks(y, list(sub.index), fontsize=8)
        ax.set_ylim(-0.6, K - 0.4)
        ax.set_ylabel("component")
        ax.set_xlabel(metric_label(metric) + " (mean over variants)")
        ax.grid(axis="x", alpha=0.3)
        # sign agreement beside each bar
        signs = np.sign(sub.to_numpy())
        agree = (signs == np.sign(mean)[:, None]).sum(axis=1)
        trans = blended_transform_factory(ax.transAxes, ax.transData)
        ax.text(1.02, K - 0.4, "same sign\nas mean", transform=trans, ha="left", va="bottom", fontsize=8)
        for yi, a in zip(y, agree):
            ax.text(1.02, yi, f"{a}/{S}", transform=trans, ha="left", va="center", fontsize=8,
                    color="black" if a == S else "#b35806")
        ax.legend(handles=handles, title="scenario (dots)", fontsize=8, title_fontsize=8, loc="upper left",
                  bbox_to_anchor=(1.13, 1.0))
        if title is None:
            title = (f"Top {K} patched components by mean |{metric.replace('_', ' ')}| over {S} scenarios\n"
                     f"{self._pair(results)}; positions: {_first(results, 'positions', '?')}")
        ax.set_title(title, fontsize=10, pad=26)
        return self._finish(fig, out)

    def plot_consistency(self, results: pd.DataFrame, top_k: int = 30, top_components: pd.DataFrame | None = None,
                         scenario_top_k: int | None = None, metric: str = "delta_change", title: str | None = None,
                         out=None, annotate: bool | None = None, save_path=None):
        """Heatmap of the top_k components (rows, by mean |metric| over scenarios) x scenarios:
        the metric's mean over variants; beside it, in how many scenarios the sign agrees with
        the mean and the component is among the scenario's top `scenario_top_k` (default
        top_k). `top_components` (the per-experiment table of
        `report.patching_tables.component_consistency`) gives the rows' order and both counts."""
        import matplotlib.pyplot as plt

        from ..report.patching_tables import component_consistency

        out = out if out is not None else save_path
        results = _only(results, "experiment", None, "results")
        if results.empty:
            raise ValueError("no patching results to plot")
        per = per_scenario_means(results, metric)
        scenarios = list(per.columns)
        S = len(scenarios)
        k_scen = scenario_top_k or top_k
        if top_components is None or top_components.empty or metric != "delta_change":
            top_components = component_consistency(results.assign(delta_change=results[metric]), k_scen)
        table = top_components.set_index("component")
        order = [c for c in table.index if c in per.index][:top_k]
        K = len(order)
        matrix = per.loc[order].to_numpy(dtype=float)
        agree = np.rint(table.loc[order, "sign_agreement"].to_numpy(dtype=float)
                        * table.loc[order, "n_scenarios"].to_numpy(dtype=float)).astype(int)
        in_top = table.loc[order, "n_scenarios_top_k"].to_numpy(dtype=int)
        n_scen = table.loc[order, "n_scenarios"].to_numpy(dtype=int)

        fig, (ax, side) = plt.subplots(
            1, 2, figsize=(1.0 * S + 4.8, 0.3 * K + 2.6), sharey=True, layout="constrained",
            gridspec_kw=dict(width_ratios=[max(S, 1), 1.5]))
        im, lim = diverging_heatmap(ax, matrix, annotate=K * S <= 200 if annotate is None else annotate, fmt=_fmt)
        band = noise_band(results) if metric == "delta_change" else math.nan
        n_noise = _mark_noise_cells(ax, matrix, band)
        ax.set_xticks(range(S), scenarios, rotation=30, ha="right")
        ax.set_yticks(range(K), order, fontsize=8)
        ax.set_xlabel("scenario" + (f"\ngrey dot: {_band_label(band)} ({n_noise} cells)" if math.isfinite(band) else ""))
        ax.set_ylabel("component (by mean |delta change| over scenarios)")
        side.set_xlim(-0.5, 1.5)
        side.set_xticks([0, 1], ["same sign\nas mean", f"in top {k_scen}\nof scenario"], fontsize=8)
        side.tick_params(axis="y", left=False)
        side.tick_params(axis="x", bottom=False)
        for spine in side.spines.values():
            spine.set_visible(False)
        side.axvline(0.5, color="#cccccc", linewidth=0.8)
        for i in range(K):
            full = agree[i] == n_scen[i]
            side.text(0, i, f"{agree[i]}/{n_scen[i]}", ha="center", va="center", fontsize=8,
                      color="black" if full else "#b35806", fontweight="normal" if full else "bold")
            side.text(1, i, f"{in_top[i]}/{n_scen[i]}", ha="center", va="center", fontsize=8)
        ax.set_ylim(K - 0.5, -0.5)
        cbar = fig.colorbar(im, ax=[ax, side], shrink=min(1.0, 0.4 + 0.02 * K))
        cbar.set_label(metric_label(metric) + " (mean over variants)")
        _colorbar_band(cbar, band)
        if title is None:
            title = (f"Consistency of patching effects across scenarios: {self._pair(results)}\n"
                     f"top {K} components; positions: {_first(results, 'positions', '?')}; "
                     "red = towards Defect, blue = towards Cooperate")
        fig.suptitle(title, fontsize=10)
        return self._finish(fig, out, tight=False)
