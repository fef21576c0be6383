"""Activation-patching figure of circuit discovery in one experiment and scenario: per
variant, the delta after jointly patching the top k candidates, the greedy flip point and
the minimal circuit pruned from it (the patch_plots_experiment job, for each scenario).
Conventions: patching_common."""

from __future__ import annotations

import logging
import math
from collections import Counter

import numpy as np
import pandas as pd

from ..style import DELTA_LABEL, PRO_COOPERATE_COLOR, PRO_DEFECT_COLOR
from . import zero_line
from .patching_common import PatchingFigures, _as_bool, _first, _only

log = logging.getLogger(__name__)


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
    table order (`patching.ranking.rank_toward_source`, as `discover_circuit`)."""
    from ..patching.ranking import rank_toward_source

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


def _message(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=10, wrap=True,
            bbox=dict(boxstyle="round,pad=0.6", facecolor="#f4f4f4", edgecolor="#999999"))


class CircuitPlots(PatchingFigures):
    """The circuit discovery curves (`plot_circuit_discovery`)."""

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
