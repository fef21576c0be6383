"""Direct-logit-attribution plots. Inputs are `DLAResult`s (one prompt, or a mean over
variants from `dla.average_results`); contributions are pre-softcap logit units,
positive = pro-Defect (red), negative = pro-Cooperate (blue). Every figure states the
reconstruction residual (the largest |sum of components - pre-softcap delta| of its
prompts) and shades it as a grey band on bar axes and colour bars: contributions within
it are not resolved by the decomposition's float error."""

from __future__ import annotations

import math

import numpy as np

from ..analyses.dla import DLAResult
from ..stats import mean_ci
from ..style import DELTA_CMAP, DELTA_LABEL, PRO_COOPERATE_COLOR, PRO_DEFECT_COLOR, ModelStyle
from . import diverging_heatmap, save_figure, zero_line

CONTRIB_LABEL = f"{DELTA_LABEL}, pre-softcap contribution"


def _what(result: DLAResult) -> str:
    if result.variant is not None:
        return f"prompt variant {result.variant}"
    return f"mean over {result.n_variants} prompt variants"


RESIDUAL_COLOR = "#9a9a9a"


def _residual(result: DLAResult) -> str:
    if not np.isfinite(result.max_abs_error):
        return "reconstruction residual unknown"
    return f"reconstruction residual {result.max_abs_error:.2g}"


def _residual_band(ax, width: float, orient: str = "h"):
    """Grey band |value| <= width on a bar axis (orient "h": horizontal band) or colour bar."""
    if np.isfinite(width) and width > 0:
        span = ax.axhspan if orient == "h" else ax.axvspan
        span(-width, width, color=RESIDUAL_COLOR, alpha=0.35, zorder=1, linewidth=0)


def _sign_colors(values) -> list:
    return [PRO_DEFECT_COLOR if v > 0 else PRO_COOPERATE_COLOR for v in values]


def _by_magnitude(result: DLAResult, top_k: int) -> list:
    comps = [(name, value) for name, _, _, _, value in result.components()]
    return sorted(comps, key=lambda c: -abs(c[1]))[:top_k]


class DLAVisualizer:
    """DLA figures. `style` fixes model order, labels and colours."""

    def __init__(self, action_tokens: dict | None = None, style: ModelStyle | None = None):
        self.action_tokens = action_tokens
        self.style = style or ModelStyle()

    def _label(self, model: str) -> str:
        return self.style.label(model) if model else "model"

    def plot_head_heatmap(self, result: DLAResult, cmap: str = DELTA_CMAP, ax=None, save_path=None,
                          annotate: bool | None = None):
        """Layers x heads heatmap of head contributions, colour scale symmetric about 0."""
        import matplotlib.pyplot as plt

        heads = result.head_contributions
        L, H = heads.shape
        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(max(4.5, 0.75 * H + 3), max(3.5, 0.32 * L + 2)))
        im, lim = diverging_heatmap(ax, heads, cmap, L * H <= 128 if annotate is None else annotate)
        ax.set_xticks(range(H), [f"H{h}" for h in range(H)])
        ax.set_yticks(range(L), [f"L{l}" for l in range(L)])
        ax.set_xlabel("attention head")
        ax.set_ylabel("layer")
        ax.set_title(f"DLA per attention head: {self._label(result.model)}, {result.scenario}\n"
                     f"({_what(result)}; red = pro-Defect, blue = pro-Cooperate;\n{_residual(result)}, grey on the colour bar)")
        cbar = ax.figure.colorbar(im, ax=ax)
        cbar.set_label(DELTA_LABEL)
        _residual_band(cbar.ax, result.max_abs_error, "h")
        if fig is not None:
            fig.tight_layout()
            if save_path is not None:
                save_figure(fig, save_path)  # the title may be wider than a narrow heatmap: cropped to fit
        return ax.figure

    def plot_mlp_contributions(self, result: DLAResult, variants: list | None = None, ax=None, save_path=None):
        """Bars: the embedding and each layer's MLP; heads summed per layer as a grey line.
        `variants` (the results averaged into `result`) adds error bars: the bootstrap 95%
        interval of the mean over them."""
        import matplotlib.pyplot as plt

        L = result.mlp_contributions.shape[0]
        names = ["embed"] + [f"L{l}_MLP" for l in range(L)]
        values = np.array([result.embed_contribution, *result.mlp_contributions])
        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(max(6, 0.38 * (L + 1) + 2.5), 4.5))
        x = np.arange(L + 1)
        yerr = None
        if variants and len(variants) > 1:
            stack = np.array([[r.embed_contribution, *r.mlp_contributions] for r in variants])
            ci = np.array([mean_ci(column)[1:] for column in stack.T])  # [L + 1, 2]
            yerr = np.vstack([values - ci[:, 0], ci[:, 1] - values])
        from matplotlib.patches import Patch

        ax.bar(x, values, color=_sign_colors(values), yerr=yerr, capsize=2, ecolor="black")
        attn = result.head_contributions.sum(1)
        (line,) = ax.plot(x[1:], attn, color="#777777", marker="s", markersize=3, linewidth=1,
                          label="all heads of the layer (sum)")
        _residual_band(ax, result.max_abs_error, "h")
        zero_line(ax)
        ax.set_xticks(x, names, rotation=90 if L > 8 else 45, ha="center" if L > 8 else "right", fontsize=8)
        ax.set_xlabel("component")
        ax.set_ylabel(CONTRIB_LABEL)
        bars = "; error bars: bootstrap 95% interval of the mean" if yerr is not None else ""
        ax.set_title(f"DLA of the embedding and MLPs: {self._label(result.model)}, {result.scenario}\n"
                     f"({_what(result)}{bars}; {_residual(result)}: grey band)")
        ax.legend(handles=[Patch(color=PRO_DEFECT_COLOR, label="embed / MLP, pro-Defect (> 0)"),
                           Patch(color=PRO_COOPERATE_COLOR, label="embed / MLP, pro-Cooperate (< 0)"), line],
                  fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        if fig is not None:
            fig.tight_layout()
            if save_path is not None:
                save_figure(fig, save_path, tight=False)  # tight_layout has set the margins
        return ax.figure

    def _top_bars(self, ax, result: DLAResult, top_k: int) -> None:
        comps = _by_magnitude(result, top_k)[::-1]  # largest at the top
        names = [c[0] for c in comps]
        values = [c[1] for c in comps]
        ax.barh(range(len(comps)), values, color=_sign_colors(values), zorder=2)
        _residual_band(ax, result.max_abs_error, "v")
        ax.set_yticks(range(len(comps)), names, fontsize=8)
        zero_line(ax, "v")
        ax.set_xlabel(CONTRIB_LABEL)
        ax.grid(axis="x", alpha=0.3)

    def plot_top_components(self, result: DLAResult, top_k: int = 20, ax=None, save_path=None):
        """The top_k components by |contribution|, largest at the top."""
        import matplotlib.pyplot as plt

        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(7, 0.28 * top_k + 2))
        self._top_bars(ax, result, top_k)
        ax.set_ylabel("component")
        ax.set_title(f"Top {top_k} components by |DLA|: {self._label(result.model)}, {result.scenario}\n"
                     f"({_what(result)}; red = pro-Defect, blue = pro-Cooperate; {_residual(result)}: grey band)")
        if fig is not None:
            fig.tight_layout()
            if save_path is not None:
                save_figure(fig, save_path)
        return ax.figure

    def plot_top_components_by_scenario(self, results: dict, top_k: int = 20, save_path=None):
        """One model, one panel per scenario: `results` {scenario: DLAResult (mean)}."""
        import matplotlib.pyplot as plt

        n = len(results)
        ncols = min(3, n)
        nrows = math.ceil(n / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, (0.26 * top_k + 1.6) * nrows), squeeze=False)
        first = next(iter(results.values()))
        for ax, (scenario, res) in zip(axes.flat, results.items()):
            self._top_bars(ax, res, top_k)
            ax.set_title(f"{scenario}\n({_what(res)}; {_residual(res)})", fontsize=10)
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel("component")
        fig.suptitle(f"Top {top_k} DLA components by |contribution|: {self._label(first.model)}\n"
                     "(red = pro-Defect, blue = pro-Cooperate; pre-softcap logit units; "
                     "grey band: the reconstruction residual)")
        fig.tight_layout()
        if save_path is not None:
            save_figure(fig, save_path, tight=False)  # tight_layout has set the margins
        return fig

    def plot_model_comparison(self, results: dict, model_labels: dict | None = None, scenario: str = "",
                              top_n: int = 12, save_path=None):
        """All models on one scenario: `results` {model: DLAResult (mean over variants)}.

        Top: per layer, the heads' sum and the MLP (lines, model colours). Bottom: the
        components with the largest |contribution| in any model (grouped bars)."""
        import matplotlib.pyplot as plt

        style = self.style.with_models(results)
        if model_labels:
            style = ModelStyle(style.order, {**style.labels, **model_labels}, style.colors)
        models = style.sort(results)
        fig = plt.figure(figsize=(12, 8.5))
        grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.15])
        ax_attn, ax_mlp = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
        ax_attn.sharey(ax_mlp)
        for m in models:
            res = results[m]
            layers = np.arange(res.n_layers)
            kw = dict(color=style.color(m), marker="o", markersize=3, linewidth=1.5, label=style.label(m))
            ax_attn.plot(layers, res.head_contributions.sum(1), **kw)
            ax_mlp.plot(layers, res.mlp_contributions, **kw)
        from matplotlib.ticker import MaxNLocator

        for ax, what in ((ax_attn, "attention (sum over heads)"), (ax_mlp, "MLP")):
            ax.xaxis.set_major_locator(MaxNLocator(nbins=13, integer=True))
            zero_line(ax)
            ax.set_title(f"{what} per layer")
            ax.set_xlabel("layer")
            ax.grid(alpha=0.3)
        ax_attn.set_ylabel(CONTRIB_LABEL)
        ax_mlp.legend(title="model", fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))

        # components that rank highest by |contribution| in any model
        score: dict = {}
        for m in models:
            for name, value in _by_magnitude(results[m], top_n):
                score[name] = max(score.get(name, 0.0), abs(value))
        names = sorted(score, key=lambda n: -score[n])[:top_n]
        ax = fig.add_subplot(grid[1, :])
        width = 0.8 / max(1, len(models))
        for i, m in enumerate(models):
            lookup = {c[0]: c[4] for c in results[m].components()}
            ax.bar(np.arange(len(names)) + (i - (len(models) - 1) / 2) * width, [lookup.get(n, np.nan) for n in names],
                   width=width, color=style.color(m), label=style.label(m))
        residual = max((r.max_abs_error for r in results.values() if np.isfinite(r.max_abs_error)), default=np.nan)
        _residual_band(ax, residual, "h")
        zero_line(ax)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_xlabel("component (largest |contribution| in any model)")
        ax.set_ylabel(CONTRIB_LABEL)
        ax.grid(axis="y", alpha=0.3)
        n_var = max(r.n_variants for r in results.values())
        fig.suptitle(f"DLA model comparison, scenario {scenario} (mean over {n_var} prompt variants)\n"
                     f"> 0 pro-Defect, < 0 pro-Cooperate; largest reconstruction residual {residual:.2g} (grey band)")
        fig.tight_layout()
        if save_path is not None:
            save_figure(fig, save_path, tight=False)  # tight_layout has set the margins
        return fig


def draw_all(viz: DLAVisualizer, tables: dict, out: dict, top_k: int) -> None:
    """Every DLA figure of the workflow (the dla_plots job), each table read once.

    `tables`: {(model, scenario): (per-variant CSV, summary CSV)} of the dla_model jobs, in
    config order (models outer). `out`: {"heads": {(model, scenario): path}, "mlps": the
    same, "top": {model: path}, "comparison": {scenario: path}}. Per model and scenario the
    head heatmap and the MLP bars (means over prompt variants, bootstrap intervals over
    them), per model its top components in every scenario, per scenario every model."""
    from tqdm.auto import tqdm

    from ..analyses.dla import average_results, read_job_results

    means = {}
    for (model, scenario), (components, summary) in tqdm(tables.items(), desc="DLA per model and scenario"):
        variants = read_job_results(components, summary)
        mean = means[model, scenario] = average_results(variants)
        viz.plot_head_heatmap(mean, save_path=out["heads"][model, scenario])
        viz.plot_mlp_contributions(mean, variants, save_path=out["mlps"][model, scenario])
    for model, path in out["top"].items():
        viz.plot_top_components_by_scenario({s: r for (m, s), r in means.items() if m == model}, top_k,
                                            save_path=path)
    for scenario, path in tqdm(out["comparison"].items(), desc="DLA model comparisons"):
        viz.plot_model_comparison({m: r for (m, s), r in means.items() if s == scenario}, scenario=scenario,
                                  save_path=path)


__all__ = ["DLAVisualizer", "draw_all"]
