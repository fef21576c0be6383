"""Component interaction figures (tables of `interp_lib.analyses.interactions`): per model the
components x components Pearson r of their signed DLA contributions across prompts, in
hierarchical-clustering order with its dendrogram; per compared pair of models r_a, r_b and
r_a - r_b in one shared order, the pairs that pass Benjamini-Hochberg marked. Diverging colour
maps centred at zero (red = positive); NaN (constant components) grey."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..analyses.interactions import square
from ..style import DELTA_CMAP, ModelStyle
from . import save_figure

MAX_TICK_LABELS = 48  # more components: every k-th labelled


def cluster_order(r: np.ndarray):
    """(order, linkage or None): average-linkage clustering on the distance 1 - r (NaN taken
    as r = 0); components whose correlations are all NaN go last."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    defined = np.where(np.isfinite(r).any(axis=1) & (np.isfinite(r).sum(axis=1) > 1))[0]
    undefined = [i for i in range(r.shape[0]) if i not in set(defined)]
    if defined.size < 3:
        return [*defined.tolist(), *undefined], None
    sub = np.nan_to_num(r[np.ix_(defined, defined)], nan=0.0)
    dist = np.clip(1.0 - (sub + sub.T) / 2, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    link = linkage(squareform(dist, checks=False), method="average")
    return [*defined[leaves_list(link)].tolist(), *undefined], (link, defined)


def _cmap():
    import matplotlib

    return matplotlib.colormaps[DELTA_CMAP].with_extremes(bad="#bbbbbb")


def _ticks(ax, names: list) -> None:
    step = max(1, math.ceil(len(names) / MAX_TICK_LABELS))
    pos = list(range(0, len(names), step))
    size = 7 if len(names) <= 24 else 5.5
    ax.set_xticks(pos, [names[i] for i in pos], rotation=90, fontsize=size)
    ax.set_yticks(pos, [names[i] for i in pos], fontsize=size)


def plot_model_correlations(corr: pd.DataFrame, model: str, path, style: ModelStyle | None = None) -> None:
    """The clustered r matrix of `model` (rows of the correlations table) saved to `path`."""
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import dendrogram

    rows = corr[corr["model"] == model]
    if rows.empty:
        raise ValueError(f"interaction figure: no correlations of model {model}")
    r, names = square(rows, "r")
    order, link = cluster_order(r)
    n = len(names)
    size = min(14.0, max(5.0, 0.22 * n + 2.5))
    fig = plt.figure(figsize=(size + 1.2, size + 1.0))
    ax = fig.add_axes((0.14, 0.1, 0.68, 0.68))
    if link is not None:
        den = fig.add_axes((0.14, 0.79, 0.68, 0.1))
        dendrogram(link[0], ax=den, no_labels=True, color_threshold=0, above_threshold_color="#555555")
        den.set_xlim(0, 10 * n)  # leaf k at 10 k + 5: over column k (constant components, last, have none)
        den.set_axis_off()
    im = ax.imshow(r[np.ix_(order, order)], cmap=_cmap(), vmin=-1, vmax=1, interpolation="nearest")
    _ticks(ax, [names[i] for i in order])
    cax = fig.add_axes((0.85, 0.1, 0.025, 0.68))
    fig.colorbar(im, cax=cax).set_label("Pearson r across prompts")
    label = (style or ModelStyle()).label(model)
    n_const = int((~np.isfinite(r).any(axis=1)).sum())
    fig.suptitle(f"{label}: correlation of signed DLA contributions across {int(rows['n_prompts'].iloc[0])} prompts"
                 + (f" ({n_const} constant, grey)" if n_const else ""), fontsize=10, y=0.97)
    save_figure(fig, path, tight=False)


def plot_pair_differences(diff: pd.DataFrame, model_a: str, model_b: str, path,
                          style: ModelStyle | None = None) -> None:
    """r_a, r_b and r_a - r_b of one compared pair (rows of the differences table), ordered by
    clustering the mean (r_a + r_b) / 2; cells with q_fdr <= fdr outlined."""
    import matplotlib.pyplot as plt

    rows = diff[(diff["model_a"] == model_a) & (diff["model_b"] == model_b)]
    if rows.empty:
        raise ValueError(f"interaction figure: no differences of {model_a} vs {model_b}")
    ra, names = square(rows, "r_a")
    rb, _ = square(rows, "r_b", names)
    d, _ = square(rows, "difference", names)
    sig, _ = square(rows.assign(significant=rows["significant"].astype(float)), "significant", names)
    order, _ = cluster_order((ra + rb) / 2)
    ix = np.ix_(order, order)
    style = style or ModelStyle()
    la, lb = style.label(model_a), style.label(model_b)
    n = len(names)
    panel = min(9.0, max(3.6, 0.16 * n + 2.0))
    fig, axes = plt.subplots(1, 3, figsize=(3 * panel + 1.5, panel + 1.4), layout="constrained")
    lim = max(1e-6, float(np.nanmax(np.abs(d))) if np.isfinite(d).any() else 1.0)
    for ax, mat, title, vmax in ((axes[0], ra, f"r: {la}", 1.0), (axes[1], rb, f"r: {lb}", 1.0),
                                 (axes[2], d, f"r({la}) - r({lb})", lim)):
        im = ax.imshow(mat[ix], cmap=_cmap(), vmin=-vmax, vmax=vmax, interpolation="nearest")
        _ticks(ax, [names[i] for i in order])
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    ii, jj = np.where(np.nan_to_num(sig[ix]) > 0)
    axes[2].scatter(jj, ii, s=max(4.0, 400.0 / max(n, 1)), facecolors="none", edgecolors="black", linewidths=0.8)
    first = rows.iloc[0]
    n_sig = int(rows["significant"].astype(bool).sum())
    n_tested = int(np.isfinite(rows["p_perm"].to_numpy(float)).sum())
    fig.suptitle(f"{la} vs {lb}: {int(first['n_prompts'])} prompts; {n_sig} of {n_tested} component pairs differ "
                 "beyond the permutation null after Benjamini-Hochberg (circled)", fontsize=10)
    save_figure(fig, path, tight=False)


def draw_all(correlations: pd.DataFrame, differences: pd.DataFrame, models: list, pairs: list, out_models: list,
             out_pairs: list, style: ModelStyle | None = None) -> None:
    """Every figure: one per model (`out_models`, in `models` order), one per pair."""
    from tqdm.auto import tqdm

    for model, path in tqdm(list(zip(models, out_models)), desc="interaction matrices per model"):
        plot_model_correlations(correlations, model, path, style)
    for (a, b), path in tqdm(list(zip(pairs, out_pairs)), desc="interaction differences per pair"):
        plot_pair_differences(differences, a, b, path, style)
