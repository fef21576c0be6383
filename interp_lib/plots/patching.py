"""Activation-patching plots. Inputs are the workflow's tidy tables (`patching.RESULT_COLUMNS`,
one row per experiment, scenario, variant and component; `patching.CIRCUIT_COLUMNS`, one
row per variant). delta = logit(D) - logit(C) (post-softcap) at the decision position;
delta_change = patched - baseline delta, positive = towards Defect (red), negative =
towards Cooperate (blue). Where the tables carry `noise_floor`, every figure shows the band
of effects indistinguishable from noise (|delta_change| <= NOISE_MULTIPLE x the largest
floor of the plotted prompts): grey on bar axes and colour bars, a grey dot in heatmap
cells whose mean lies in it."""

from __future__ import annotations

import logging
import math
from collections import Counter

import numpy as np
import pandas as pd

from ..noise import NOISE_MULTIPLE, largest_floor
from ..style import DELTA_LABEL, PRO_COOPERATE_COLOR, PRO_DEFECT_COLOR, ModelStyle, color_at
from . import diverging_heatmap, save_figure, zero_line

log = logging.getLogger(__name__)

CHANGE_LABEL = "delta change: patched - baseline, logit (D - C)"
METRIC_LABELS = {
    "delta_change": CHANGE_LABEL,
    "patched_delta": f"patched {DELTA_LABEL}",
    "gap_fraction": "gap fraction: delta change / (source - baseline delta)",
    "effect_size": "effect size: |delta change| / |baseline delta|",
    "atp_delta_change": "AtP estimate of the delta change, logit (D - C)",
}
MLP_COLUMN = "MLP"
_SCENARIO_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def _only(df: pd.DataFrame, column: str, value, what: str) -> pd.DataFrame:
    """The rows of `df` with `column == value`; with value None, `df` must hold one value."""
    if column not in df.columns or df.empty:
        return df
    if value is not None:
        return df[df[column] == value]
    values = pd.unique(df[column])
    if len(values) > 1:
        raise ValueError(f"{what} holds {len(values)} {column}s ({', '.join(map(str, values))}): pass {column}=...")
    return df


def _first(df: pd.DataFrame, column: str, default=None):
    return df[column].iat[0] if column in df.columns and len(df) else default


def _as_bool(series: pd.Series) -> pd.Series:
    if series.dtype == bool:
        return series
    return series.astype(str).str.lower().isin(("true", "1", "yes"))


NOISE_COLOR = "#9a9a9a"


def noise_band(results: pd.DataFrame) -> float:
    """NOISE_MULTIPLE x the largest noise floor of the results' prompts (NaN if unknown)."""
    return NOISE_MULTIPLE * largest_floor(results)


def _band_label(band: float) -> str:
    return f"noise: |delta change| \u2264 {NOISE_MULTIPLE:g} \u00d7 floor = {band:.2g}"


def _mark_noise_cells(ax, matrix: np.ndarray, band: float) -> int:
    """Grey dots on cells whose |value| is within the band; returns how many."""
    if not math.isfinite(band):
        return 0
    rows, cols = np.nonzero(np.abs(np.nan_to_num(matrix, nan=np.inf)) <= band)
    ax.scatter(cols, rows, s=6, color=NOISE_COLOR, zorder=4, linewidths=0)
    return len(rows)


def _colorbar_band(cbar, band: float) -> None:
    if math.isfinite(band):
        cbar.ax.axhspan(-band, band, color=NOISE_COLOR, alpha=0.8, zorder=3)


def patch_grid(results: pd.DataFrame, metric: str = "delta_change"):
    """(values [L, H + 1], flip counts [L, H + 1], n_variants): the metric's mean over
    variants per component of one scenario; column H is the layer's MLP."""
    comps = results.drop_duplicates("component")
    heads = comps.loc[comps["kind"] == "head", "head"]
    L = int(results["layer"].max()) + 1
    H = int(heads.max()) + 1 if len(heads) else 0
    mean = results.groupby("component", sort=False)[metric].mean()
    flips = _as_bool(results["action_flipped"]).groupby(results["component"], sort=False).sum()
    values = np.full((L, H + 1), np.nan)
    counts = np.zeros((L, H + 1), dtype=int)
    for _, c in comps.iterrows():
        col = H if c["kind"] == "mlp" or pd.isna(c["head"]) else int(c["head"])
        values[int(c["layer"]), col] = mean[c["component"]]
        counts[int(c["layer"]), col] = flips[c["component"]]
    n_variants = results["variant"].nunique() if "variant" in results.columns else 1
    return values, counts, n_variants


def per_scenario_means(results: pd.DataFrame, metric: str = "delta_change") -> pd.DataFrame:
    """components x scenarios: the metric's mean over variants (scenarios in table order)."""
    per = results.groupby(["component", "scenario"], sort=False)[metric].mean().unstack("scenario")
    scenarios = list(pd.unique(results["scenario"]))
    components = list(pd.unique(results["component"]))
    return per.reindex(index=components, columns=scenarios)


def rank_components(per: pd.DataFrame) -> list:
    """Components by mean |per-scenario mean| (as `patching_summary.component_consistency`)."""
    score = per.abs().mean(axis=1)
    return list(score.sort_values(ascending=False, kind="stable").index)


def _parse_attempts(text) -> list:
    """"1:0.53;2:-0.1" -> [(1, 0.53), (2, -0.1)] (empty for NaN / "")."""
    if not isinstance(text, str) or not text.strip():
        return []
    out = []
    for part in text.split(";"):
        k, d = part.split(":")
        out.append((int(k), float(d)))
    return out


def _split_names(text) -> list:
    return [n for n in text.split(";") if n] if isinstance(text, str) else []


def _ranking(patches: pd.DataFrame | None, variant, ranking: str, baseline: float, source: float) -> list:
    """The order in which circuit discovery added components for one variant: the
    candidates (single patch toward the source's action) by score, descending, ties in
    table order (`patching.circuits.rank_toward_source`, as `discover_circuit`)."""
    from ..patching.circuits import rank_toward_source

    if patches is None or patches.empty:
        return []
    g = patches[patches["variant"] == variant] if "variant" in patches.columns else patches
    column = "atp_delta_change" if ranking == "atp" and "atp_delta_change" in g.columns else "delta_change"
    if column != "delta_change" and g[column].isna().all():
        return []
    scores = None if column == "delta_change" else g[column].to_numpy(dtype=float)
    ranked, n_candidates, _ = rank_toward_source(g["component"].tolist(), g["delta_change"].to_numpy(dtype=float),
                                                 scores, baseline, source, len(g))
    return [name for name, _ in ranked[:n_candidates]]


def _int_or(value, default: int) -> int:
    return int(value) if isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value) else default


def circuit_variants(circuits, patches: pd.DataFrame | None = None) -> list:
    """One dict per variant of a circuit table (or a `CircuitDiscovery`): its attempts, the
    name of the k-th candidate added by the greedy search (None where unknown), the
    circuit's kind (minimal / greedy / none) and the size of the greedy prefix it came from.
    Tables written before circuits were pruned (no circuit_kind) read as greedy prefixes."""
    from ..patching import CircuitDiscovery, circuit_record

    if isinstance(circuits, CircuitDiscovery):
        record = {"variant": 1, **circuit_record(circuits)}
        ranked = [name for name, _ in circuits.ranked_components]
        circuits = pd.DataFrame([record])
    else:
        ranked = None
    out = []
    for _, r in circuits.sort_values("variant", kind="stable").iterrows():
        attempts = _parse_attempts(r.get("attempts"))
        circuit = _split_names(r.get("circuit"))
        flipped = bool(_as_bool(pd.Series([r["flipped"]])).iat[0])
        kind = r.get("circuit_kind") if isinstance(r.get("circuit_kind"), str) else ("greedy" if flipped else "none")
        greedy_size = _int_or(r.get("greedy_size"), len(circuit))
        ranking = r.get("ranking") if isinstance(r.get("ranking"), str) else "exact"
        base, src = float(r["baseline_delta"]), float(r["source_delta"])
        order = ranked if ranked is not None else _ranking(patches, r["variant"], ranking, base, src)
        if not set(circuit) <= set(order[:greedy_size]):
            if order:
                log.warning("variant %s: the ranking rebuilt from the patches does not hold the circuit %s in "
                            "its first %d components", r["variant"], circuit, greedy_size)
            order = circuit if len(circuit) == greedy_size else []  # a pruned circuit names no step
        names = [order[k - 1] if k - 1 < len(order) else None for k, _ in attempts]
        out.append({
            "variant": r["variant"], "flipped": flipped, "kind": kind, "greedy_size": greedy_size,
            "circuit": circuit, "dropped": [n for n in order[:greedy_size] if n not in circuit],
            "excluded": _int_or(r.get("excluded_opposing"), 0), "baseline": base, "source": src,
            "patched": float(r["patched_delta"]), "gap": float(r["gap_recovered"]),
            "attempts": attempts, "names": names, "ranking": ranking,
            "reason": r.get("reason") if isinstance(r.get("reason"), str) else "",
        })
    return out


def _flip_label(v: dict) -> str:
    """Legend text of a variant that flipped: the greedy flip point and the circuit's kind."""
    k, m = v["greedy_size"], len(v["circuit"])
    if v["kind"] == "minimal" and m < k:
        dropped = f" (dropped {', '.join(v['dropped'])})" if v["dropped"] else ""
        return f"flips at k = {k} (greedy); minimal circuit of {m} after pruning{dropped}"
    if v["kind"] == "minimal":
        return f"flips at k = {k}; the greedy prefix is the minimal circuit"
    return f"flips at k = {k} (greedy prefix, not checked for minimality)"


def _kinds_summary(flipped: list) -> str:
    """"minimal circuits of 4, 5 components" (and the greedy ones, if any were returned)."""
    parts = []
    for kind in ("minimal", "greedy"):
        sizes = sorted({len(v["circuit"]) for v in flipped if v["kind"] == kind})
        if sizes:
            parts.append(f"{kind} circuits of {', '.join(map(str, sizes))} components")
    return "; ".join(parts)


def _tick_name(names: list) -> str:
    """The k-th component over variants: one name, or the commonest ones "A / B (+n)"."""
    counts = Counter(n for n in names if n)
    if not counts:
        return "?"
    common = [n for n, _ in counts.most_common()]
    label = " / ".join(common[:2])
    return label + (f" (+{len(common) - 2})" if len(common) > 2 else "")


def _fmt(value: float) -> str:
    """"+0.12" / "-0.12", and "0.00" where the sign would be noise."""
    return f"{value:+.2f}" if abs(value) >= 0.005 else "0.00"


def _message(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=10, wrap=True,
            bbox=dict(boxstyle="round,pad=0.6", facecolor="#f4f4f4", edgecolor="#999999"))


class PatchingVisualizer:
    """Activation-patching figures. `style` fixes model labels and colours. Every method
    returns its Figure; with `out` it also saves it (atomically) and closes it."""

    def __init__(self, action_tokens: dict | None = None, style: ModelStyle | None = None):
        self.action_tokens = action_tokens
        self.style = style or ModelStyle()

    def _pair(self, df: pd.DataFrame, experiment=None, source=None, target=None) -> str:
        """"source -> target (experiment)" from the table's columns or the arguments."""
        source = source or _first(df, "source")
        target = target or _first(df, "target")
        experiment = experiment or _first(df, "experiment")
        pair = f"{self.style.label(source)} \u2192 {self.style.label(target)}" if source and target else ""
        if experiment and pair:
            return f"{pair} ({experiment})"
        return pair or str(experiment or "")

    @staticmethod
    def _finish(fig, out, tight: bool = True):
        if tight:
            fig.tight_layout()
        if out is not None:
            save_figure(fig, out)
        return fig

    # -- one experiment and scenario: every component -------------------------------------

    def plot_patch_heatmap(self, results: pd.DataFrame, metric: str = "delta_change", title: str | None = None,
                           out=None, scenario: str | None = None, annotate: bool | None = None, save_path=None):
        """Layers (rows, layer 0 at the top) x heads H0.. and the layer's MLP: the metric's
        mean over the variants of one experiment and scenario, colour scale symmetric about
        zero. Black frames mark components whose patch flips the target's action in at least
        one variant."""
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle

        out = out if out is not None else save_path
        results = _only(_only(results, "experiment", None, "results"), "scenario", scenario, "results")
        if results.empty:
            raise ValueError("no patching results to plot")
        values, flips, n_var = patch_grid(results, metric)
        L, C = values.shape
        H = C - 1
        fig, ax = plt.subplots(figsize=(max(6.5, 0.75 * C + 3.5), max(4.2, 0.3 * L + 2.6)))
        im, lim = diverging_heatmap(ax, values, annotate=L * C <= 128 if annotate is None else annotate, fmt=_fmt)
        for l, c in zip(*np.nonzero(flips)):
            ax.add_patch(Rectangle((c - 0.45, l - 0.45), 0.9, 0.9, fill=False, edgecolor="black",
                                   linewidth=2.0 if L <= 12 else 1.4))
        ax.axvline(H - 0.5, color="black", linewidth=1.2)  # heads | MLP
        ax.set_xticks(range(C), [f"H{h}" for h in range(H)] + [MLP_COLUMN])
        step = 1 if L <= 40 else 2
        ax.set_yticks(range(0, L, step), [f"L{l}" for l in range(0, L, step)], fontsize=10 if L <= 16 else 8)
        n_flip = int((flips > 0).sum())
        flip_note = (f"black frame: the patch flips the action in \u2265 1 of {n_var} variants ({n_flip} component{'s' if n_flip > 1 else ''})"
                     if n_flip else f"no single patch flips the action in any of the {n_var} variants")
        band = noise_band(results) if metric == "delta_change" else math.nan
        n_noise = _mark_noise_cells(ax, values, band)
        if math.isfinite(band):
            flip_note += f"\ngrey dot: {_band_label(band)} ({n_noise} of {L * C} components; grey on the colour bar)"
        ax.set_xlabel(f"attention head | MLP of the layer\n{flip_note}")
        ax.set_ylabel("layer")
        if title is None:
            scen = _first(results, "scenario", "")
            base, src = results["baseline_delta"].mean(), results["source_delta"].mean()
            what = f"mean over {n_var} prompt variants" if n_var > 1 else "one prompt variant"
            title = (f"Activation patching {self._pair(results)}\n"
                     f"scenario {scen}: patched positions: {_first(results, 'positions', '?')}, "
                     f"head site: {_first(results, 'head_site', '?')}; {what}\n"
                     f"mean delta (D - C): target baseline {base:+.2f}, source {src:+.2f}\n"
                     "red = patch moves the target towards Defect, blue = towards Cooperate")
        ax.set_title(title, fontsize=10)
        cbar = fig.colorbar(im, ax=ax)
        cbar.set_label(metric_label(metric).replace(", ", "\n", 1))
        _colorbar_band(cbar, band)
        return self._finish(fig, out)

    # -- one experiment: the strongest components over scenarios ---------------------------

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
        `patching_summary.component_consistency`) gives the rows' order and both counts."""
        import matplotlib.pyplot as plt

        from ..patching_summary import component_consistency

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

    # -- one experiment and scenario: circuit discovery ------------------------------------

    def plot_circuit_discovery(self, circuits, patches: pd.DataFrame | None = None, title: str | None = None,
                               out=None, experiment: str | None = None, scenario: str | None = None,
                               source: str | None = None, target: str | None = None,
                               circuits_run: bool = True, save_path=None):
        """Per variant, the delta after jointly patching the top k candidates (components
        whose single patch moves the target toward the source's action; k = 0: the
        target's own delta), with the target's baseline and the source's delta (means over
        variants) and the decision boundary at zero. Stars mark where the greedy search
        first flips the action; a diamond there marks the minimal circuit pruned from that
        greedy prefix, where pruning dropped members. `circuits`: circuit rows of one
        experiment and scenario (or a `CircuitDiscovery`); `patches`: the scenario's patch
        results, to name the components added at each step. An empty table (circuits not
        run) or variants where both models already agree give a figure that says so."""
        import matplotlib.pyplot as plt

        out = out if out is not None else save_path
        meta = patches if patches is not None and not patches.empty else None
        if isinstance(circuits, pd.DataFrame):
            circuits = _only(_only(circuits, "experiment", experiment, "circuits"), "scenario", scenario, "circuits")
            if meta is not None:
                meta = _only(_only(meta, "experiment", experiment, "patches"), "scenario", scenario, "patches")
            if not circuits.empty:
                meta = circuits
        experiment = experiment or (_first(meta, "experiment") if meta is not None else None)
        scenario = scenario or (_first(meta, "scenario", "") if meta is not None else "")
        source = source or (_first(meta, "source") if meta is not None else None)
        target = target or (_first(meta, "target") if meta is not None else None)
        pair = self._pair(pd.DataFrame(), experiment, source, target)
        positions = _first(meta, "positions", "?") if meta is not None else "?"

        variants = [] if isinstance(circuits, pd.DataFrame) and circuits.empty else circuit_variants(circuits, patches)
        n_max = max((len(v["attempts"]) for v in variants), default=0)
        fig, ax = plt.subplots(figsize=(10 + 0.2 * max(0, n_max - 12), 5.2) if variants else (8, 3))
        if not variants:
            ax.set_axis_off()
            why = ("circuit discovery was not run (analysis.circuits: false)" if not circuits_run
                   else "no circuit discovery results: circuit discovery was not run\n"
                        "for this experiment and scenario (analysis.circuits: false?)")
            _message(ax, why[0].upper() + why[1:])
            ax.set_title(title or f"Circuit discovery {pair}\nscenario {scenario}", fontsize=10)
            return self._finish(fig, out)

        searched = [v for v in variants if v["attempts"]]
        base = np.mean([v["baseline"] for v in variants])
        src = np.mean([v["source"] for v in variants])
        ranking = variants[0]["ranking"]
        cmap = plt.get_cmap("viridis")
        for i, v in enumerate(variants):
            color = cmap(0.1 + 0.75 * i / max(len(variants) - 1, 1))
            if not v["attempts"]:
                ax.plot([], [], linestyle="", marker="", label=f"variant {v['variant']}: already takes the source's "
                        f"action ({'D' if v['baseline'] > 0 else 'C'}), nothing to flip")
                continue
            ks = [0] + [k for k, _ in v["attempts"]]
            ds = [v["baseline"]] + [d for _, d in v["attempts"]]
            if v["flipped"]:
                label = f"variant {v['variant']}: {_flip_label(v)}"
            else:
                best = len(v["circuit"])
                gap = f", {v['gap']:.0%} of the gap" if math.isfinite(v["gap"]) else ""
                label = (f"variant {v['variant']}: no flip within {len(v['attempts'])} components "
                         f"(best k = {best}{gap})")
            ax.plot(ks, ds, color=color, marker="o", markersize=4, linewidth=1.5, label=label, zorder=3)
            if v["flipped"]:
                k = v["greedy_size"]
                ax.plot([k], [dict(v["attempts"]).get(k, v["patched"])], linestyle="", marker="*", markersize=15,
                        color=color, markeredgecolor="black", markeredgewidth=0.8, zorder=4)
                if len(v["circuit"]) < k:  # pruned: the minimal circuit is not a prefix
                    ax.plot([k], [v["patched"]], linestyle="", marker="D", markersize=8, color=color,
                            markeredgecolor="black", markeredgewidth=0.8, zorder=5)
        if any(v["flipped"] for v in searched):
            ax.plot([], [], linestyle="", marker="*", markersize=11, color="white", markeredgecolor="black",
                    label="greedy flip point: the top k candidates give the source's action")
        if any(v["flipped"] and len(v["circuit"]) < v["greedy_size"] for v in searched):
            ax.plot([], [], linestyle="", marker="D", markersize=7, color="white", markeredgecolor="black",
                    label="minimal circuit pruned from that greedy prefix (its delta)")
        style = self.style.with_models([m for m in (source, target) if m])
        ax.axhline(base, color=style.color(target) if target else "#555555", linestyle="--", linewidth=1.5,
                   label=f"target {style.label(target) if target else ''}: baseline delta {base:+.2f} (mean)",
                   zorder=2)
        ax.axhline(src, color=style.color(source) if source else "#000000", linestyle="-.", linewidth=1.5,
                   label=f"source {style.label(source) if source else ''}: delta {src:+.2f} (mean)", zorder=2)
        zero_line(ax)
        ax.text(1.0, 0.0, "decision boundary (delta = 0) ", transform=ax.get_yaxis_transform(), ha="right",
                va="bottom", fontsize=8)
        ax.text(0.01, 0.98, "Defect \u2191", transform=ax.transAxes, ha="left", va="top", fontsize=8,
                color=PRO_DEFECT_COLOR)
        ax.text(0.01, 0.02, "Cooperate \u2193", transform=ax.transAxes, ha="left", va="bottom", fontsize=8,
                color=PRO_COOPERATE_COLOR)
        ax.set_ylabel(f"{DELTA_LABEL} after the joint patch")
        ax.grid(alpha=0.3)
        lo = min([base, src, 0.0] + [d for v in searched for _, d in v["attempts"]])
        hi = max([base, src, 0.0] + [d for v in searched for _, d in v["attempts"]])
        pad = 0.12 * (hi - lo or 1.0)
        ax.set_ylim(lo - pad, hi + pad)
        if searched:
            ticks = list(range(n_max + 1))
            names = ["none"] + [_tick_name([v["names"][k - 1] for v in searched if k <= len(v["names"])])
                                for k in range(1, n_max + 1)]
            ax.set_xticks(ticks, [n if k == 0 else f"+{n}" for k, n in zip(ticks, names)],
                          rotation=45 if n_max <= 12 else 90, ha="right" if n_max <= 12 else "center",
                          rotation_mode="anchor" if n_max <= 12 else "default", fontsize=8)
            ax.set_xlim(-0.4, n_max + 0.4)
            top = ax.secondary_xaxis("top")
            numbered = ticks if n_max <= 15 else [k for k in ticks if k % 5 == 0]
            top.set_xticks(numbered, [str(k) for k in numbered], fontsize=8)
            top.set_xlabel("k = number of components patched jointly", fontsize=9)
            by = "AtP estimate of the" if ranking == "atp" else "exact"
            ax.set_xlabel(f"candidate added at step k, ranked by {by} single-patch delta change toward the "
                          "source's action\n(components that push away are left out; A / B: the variants' "
                          "rankings differ at this step)", fontsize=9)
            flipped = [v for v in searched if v["flipped"]]
            if flipped:
                greedy = sorted({v["greedy_size"] for v in flipped})
                summary = (f"flips the action in {len(flipped)}/{len(variants)} variants: greedy prefixes of "
                           f"k = {', '.join(map(str, greedy))}, {_kinds_summary(flipped)}")
                if len(flipped) < len(searched):
                    summary += f"; no flip within {n_max} candidates in {len(searched) - len(flipped)}"
            else:
                summary = f"no flip within {n_max} candidates in any variant"
            excluded = sum(v["excluded"] for v in searched)
            if excluded:
                summary += (f"\n{excluded} of the variants' strongest single patches pushed away from the "
                            "source's action and were left out")
            if len(searched) < len(variants):
                summary += f"; {len(variants) - len(searched)} variants already take the source's action"
        else:
            ax.set_xticks([])
            ax.set_xlim(-1, 1)
            action = "Defect (D)" if base > 0 else "Cooperate (C)"
            _message(ax, f"Source and target already take the same action, {action},\n"
                         f"on every prompt variant: there is no action to flip,\nso no circuit was searched.")
            summary = "source and target already agree: nothing to flip"
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        if title is None:
            title = (f"Circuit discovery {pair}, scenario {scenario}\n"
                     f"(patched positions: {positions}; exact joint patching of the top-ranked candidates; "
                     f"minimal = no member can be dropped)\n{summary}")
        ax.set_title(title, fontsize=10)
        return self._finish(fig, out)


def read_table(path) -> pd.DataFrame:
    """A CSV table; an empty file (no header) gives an empty DataFrame."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


__all__ = ["PatchingVisualizer", "CHANGE_LABEL", "patch_grid", "per_scenario_means", "read_table"]
