"""Mechanism transfer across games and prompts (issue 28 item 4), from tables already computed.

A scenario's *context* is where its prompts put the decision: its game, and its format,
preprompt and action symbols where they differ from the training prompts (interp_lib.contexts).
The reference context is the IPD in the training format, "ipd"; both labellings of a
counterbalanced scenario belong to one context (their deltas are in meaning).

Components (`component_transfer`): per experiment, a value per component and prompt —
patching's delta_change (source's activation patched into the target; > 0 = towards Defect)
or the DLA change (source's signed contribution minus the target's, same prompt) — is
averaged over each context's prompts, balanced over the labellings (the mean of each
labelling's mean: read in meaning, a component's label-specific part flips sign between
labellings; on SmolLM2 the DLA change's ranks correlate at -0.78 between the two labellings of
one state while its values correlate at +0.45, so unbalanced halves of a context disagree).
Against the reference:

    spearman          Spearman correlation of the two mean vectors over components; its 95%
                      interval is the estimate +- 1.96 bootstrap standard deviations
                      (prompts resampled within each context, N_RESAMPLES; bootstrap_spearman
                      says why not percentiles).
    null_band         1.96 / sqrt(k - 1): what two unrelated rankings of the k components
                      reach by chance in 95% of cases; a direction needs the interval beyond it.
    reference_states  the IPD prompts a context is compared with: those in the context's own
                      states (own and opponent's last move) where the IPD has them, else all.
    reliability_*     how well a context's prompts determine its own ranking: the mean
                      Spearman between random halves of its prompts (N_SPLITS splits),
                      stepped up to the full count by Spearman-Brown (2r / (1 + r)).
    noise_ceiling     sqrt(reliability_ipd x reliability_context): the correlation two
                      contexts with the same true ranking would show at these prompt counts
                      (classical attenuation). Its interval is not given.
    shared / *_only   the top_k components by |mean| of each context, among those beyond
                      NOISE_MULTIPLE noise floors (patching's own floor; DLA has none, its
                      reconstruction residual is in dla_summary_stats, so every component is
                      eligible); shared = in both tops with the same sign, shared_opposite =
                      in both with opposite signs.

The verdict reads the interval: above the null band and reaching the noise ceiling "same
ranking", above the band below the ceiling "partly shared", below -band "opposite ranking";
reaching into the band, "no shared ranking" when it stays below the ceiling (the same ranking
is excluded), else "undetermined". "ranking below
noise" when either context's own halves share no ranking (no ceiling), "too few prompts" below
MIN_PROMPTS in either context.

Circuits (`circuit_summary`): the IPD circuit patched per context (jobs.circuit_transfer).
Steering per context is steering.summary.context_layer_ranking.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..contexts import REFERENCE, game_of
from ..noise import noise_band
from ..stats import CONFIDENCE, N_RESAMPLES

MIN_PROMPTS = 4
N_SPLITS = 200
PROMPT_KEYS = ["scenario", "variant"]
COLUMNS = ["analysis", "experiment", "source", "target", "context", "game", "reference_states", "n_prompts_ipd",
           "n_prompts_context", "n_components", "spearman", "ci_low", "ci_high", "null_band", "reliability_ipd",
           "reliability_context", "noise_ceiling", "verdict", "top_k", "n_shared", "shared", "shared_opposite",
           "ipd_only", "context_only", "n_above_noise_ipd", "n_above_noise_context"]
NULL_Z = 1.96  # two-sided 95% of Spearman's null over k components, ~ N(0, 1 / (k - 1))


TIE_RESOLUTION = 2.0 ** -30  # of a vector's largest |value|: closer values are tied


def tie_quantized(values: np.ndarray) -> np.ndarray:
    """values [..., k] rounded to multiples of TIE_RESOLUTION x the largest |value| along the
    last axis. Means of float32 deltas that tie exactly differ by float64 summation-order noise
    (~1e-16) once averaged in another order (another kernel set, a balanced mean); unrounded,
    that noise breaks the tie one way or the other and moves Spearman by ~1e-6."""
    values = np.asarray(values, dtype=float)
    scale = np.nanmax(np.abs(values), axis=-1, keepdims=True) * TIE_RESOLUTION
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scale > 0, np.round(values / np.where(scale > 0, scale, 1)), values)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of a [..., k] and b [..., k] along the last axis (average ranks
    for ties, values within TIE_RESOLUTION of each other tied: tie_quantized); NaN where
    either is constant."""
    from scipy.stats import rankdata

    ra, rb = rankdata(tie_quantized(a), axis=-1), rankdata(tie_quantized(b), axis=-1)
    ra, rb = ra - ra.mean(-1, keepdims=True), rb - rb.mean(-1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(-1) * (rb ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(-1) / np.where(den > 0, den, 1), np.nan)


def _groups(n: int, labels) -> list[np.ndarray]:
    """Row indices per label (one group of all n rows without labels)."""
    if labels is None:
        return [np.arange(n)]
    labels = np.asarray(labels, dtype=object)
    return [np.flatnonzero(labels == g) for g in dict.fromkeys(labels)]


def balanced_mean(values: np.ndarray, labels=None) -> np.ndarray:
    """[k] the mean over labels of each label's mean of values [n, k] (the plain mean without
    labels). With labels = the prompts' labelling, a component's label-specific part, which
    flips sign between labellings when deltas are read in meaning, cancels whatever the counts."""
    return np.mean([values[g].mean(0) for g in _groups(len(values), labels)], axis=0)


def split_half_reliability(values: np.ndarray, n_splits: int = N_SPLITS, seed: int = 0, labels=None) -> float:
    """Spearman-Brown-corrected mean split-half Spearman (floored at 0) of the per-component
    balanced means (balanced_mean) of values [prompts, components], each label's prompts split
    in two (a label with one prompt sits out); NaN below 4 prompts or without a split."""
    if values.shape[0] < 4:
        return float("nan")
    groups = [g for g in _groups(len(values), labels) if len(g) >= 2]
    if not groups:
        return float("nan")
    rng = np.random.default_rng(seed)
    first, second = [], []
    for g in groups:
        perms = g[np.argsort(rng.random((n_splits, len(g))), axis=1)]
        half = len(g) // 2
        first.append(values[perms[:, :half]].mean(1))
        second.append(values[perms[:, half:]].mean(1))
    # complementary halves of pure noise correlate negatively (their means sum to the whole's):
    # no reliability, not a negative one
    r = max(float(np.nanmean(spearman(np.mean(first, axis=0), np.mean(second, axis=0)))), 0.0)
    return 2 * r / (1 + r)


def bootstrap_spearman(ref: np.ndarray, other: np.ndarray, n_resamples: int = N_RESAMPLES,
                       seed: int = 0, confidence: float = CONFIDENCE, ref_labels=None,
                       other_labels=None) -> tuple[float, float]:
    """Normal bootstrap interval of the Spearman of the balanced component means of ref [n1, k]
    and other [n2, k]: the estimate +- z x the standard deviation of the Spearman over resamples
    (each context's prompts resampled with replacement within each label), clipped to [-1, 1].
    Not a percentile interval: resampling adds noise to each mean, which pulls every resampled
    correlation below the observed one (in simulations with the same true ranking the whole
    bootstrap distribution lay below the estimate), so percentile and basic intervals miss the
    estimate; the spread of the resamples is still a fair measure of its sampling error."""
    from scipy.stats import norm

    rng = np.random.default_rng(seed)

    def resampled(x: np.ndarray, labels) -> np.ndarray:
        return np.mean([x[g[rng.integers(0, len(g), (n_resamples, len(g)))]].mean(1)
                        for g in _groups(len(x), labels)], axis=0)

    spread = float(np.nanstd(spearman(resampled(ref, ref_labels), resampled(other, other_labels)), ddof=1))
    observed = float(spearman(balanced_mean(ref, ref_labels), balanced_mean(other, other_labels)))
    half = float(norm.ppf(0.5 + confidence / 2)) * spread
    return max(observed - half, -1.0), min(observed + half, 1.0)


def null_band(n_components: int) -> float:
    """|Spearman| that two unrelated rankings of n_components exceed 5% of the time."""
    return NULL_Z / np.sqrt(n_components - 1) if n_components > 1 else float("nan")


def verdict(ci_low: float, ci_high: float, ceiling: float, band: float = 0.0) -> str:
    """What the Spearman interval [ci_low, ci_high] says against the noise ceiling and the
    null band (+-band: what unrelated rankings of these components reach by chance)."""
    if not np.isfinite(ci_low):
        return "too few prompts"
    if not np.isfinite(ceiling):  # a context's own halves share no ranking: nothing to compare
        return "ranking below noise"
    if ci_low > band:
        return "same ranking" if ci_high >= ceiling else "partly shared"
    if ci_high < -band:
        return "opposite ranking"
    return "undetermined" if ci_high >= ceiling else "no shared ranking"


def prompt_matrix(values: pd.DataFrame, value: str, components: list[str]) -> pd.DataFrame:
    """[prompts x components] of `value`, one row per (scenario, variant), scenarios in the
    order first seen."""
    wide = values.pivot_table(index=PROMPT_KEYS, columns="component", values=value, aggfunc="first")
    order = {s: i for i, s in enumerate(dict.fromkeys(values["scenario"]))}  # first seen, not sorted
    wide = wide.iloc[np.lexsort((wide.index.get_level_values("variant"),
                                 wide.index.get_level_values("scenario").map(order)))]
    missing = [c for c in components if c not in wide.columns]
    if missing:
        raise ValueError(f"{value}: no value for component(s) {', '.join(missing[:3])}")
    if wide[components].isna().any().any():
        raise ValueError(f"{value}: a prompt lacks some components")
    return wide[components]


def _top(means: pd.Series, floor: float, top_k: int) -> tuple[list[str], int]:
    above = means[means.abs() > noise_band(floor)] if np.isfinite(floor) else means
    return list(above.abs().sort_values(ascending=False, kind="stable").index[:top_k]), len(above)


def component_transfer(values: pd.DataFrame, contexts: dict[str, str], value: str, top_k: int,
                       meta: dict, floors: pd.Series | None = None, seed: int = 0,
                       states: dict[str, str] | None = None,
                       labellings: dict[str, str] | None = None) -> pd.DataFrame:
    """COLUMNS, one row per context other than REFERENCE. `values` has scenario, variant,
    component and `value` (one experiment); `contexts` maps scenario -> context; `floors`
    (optional) maps scenario -> its noise floor; `meta` fills analysis, experiment, source,
    target; `states` (optional) maps scenario -> the moves its prompt states ("CD"): a context
    is then compared with the reference's prompts in its own states where there are any
    (reference_states), so that a game is not compared with other states of the IPD;
    `labellings` (optional) maps scenario -> its labelling: every mean is then balanced over
    the labellings (balanced_mean). Without reference prompts the frame is empty."""
    unknown = sorted(set(values["scenario"]) - set(contexts))
    if unknown:
        raise ValueError(f"contexts: no entry for scenario {unknown[0]!r}")
    components = list(dict.fromkeys(values["component"]))
    matrix = prompt_matrix(values, value, components)
    scen = matrix.index.get_level_values("scenario")
    prompt_context = np.array([contexts[s] for s in scen])
    prompt_state = np.array([(states or {}).get(s, "") for s in scen], dtype=object)
    prompt_label = np.array([(labellings or {}).get(s, "standard") for s in scen], dtype=object)
    data = matrix.to_numpy()
    band = null_band(len(components))

    def floor_of(mask) -> float:
        return float(floors.reindex(sorted(set(scen[mask]))).max()) if floors is not None else float("nan")

    is_ref = prompt_context == REFERENCE
    if not is_ref.any():
        return pd.DataFrame(columns=COLUMNS)
    references: dict = {}

    def reference(wanted: frozenset):
        """(mask, states label) of the reference prompts in the states `wanted` (all if none)."""
        mask = is_ref & np.isin(prompt_state, list(wanted))
        key = frozenset(wanted) if mask.any() and states else frozenset()
        if key not in references:
            mask = mask if key else is_ref
            ref, labels = data[mask], prompt_label[mask]
            means = pd.Series(balanced_mean(ref, labels), index=components)
            references[key] = (ref, labels, means, _top(means, floor_of(mask), top_k),
                               split_half_reliability(ref, seed=seed, labels=labels),
                               ";".join(sorted(key)) if key else "all")
        return references[key]

    rows = []
    for context in dict.fromkeys(prompt_context):
        if context == REFERENCE:
            continue
        mask = prompt_context == context
        other, labels = data[mask], prompt_label[mask]
        ref, ref_labels, ref_means, (ref_top, ref_above), rel_ref, ref_states = reference(
            frozenset(prompt_state[mask]))
        means = pd.Series(balanced_mean(other, labels), index=components)
        rho = float(spearman(ref_means.to_numpy(), means.to_numpy()))
        enough = min(len(ref), len(other)) >= MIN_PROMPTS
        lo, hi = (bootstrap_spearman(ref, other, seed=seed, ref_labels=ref_labels, other_labels=labels)
                  if enough else (np.nan, np.nan))
        rel = split_half_reliability(other, seed=seed, labels=labels)
        ceiling = float(np.sqrt(rel_ref * rel)) if rel_ref > 0 and rel > 0 else float("nan")
        top, above = _top(means, floor_of(mask), top_k)
        both = [c for c in ref_top if c in top]
        same = [c for c in both if np.sign(ref_means[c]) == np.sign(means[c])]
        rows.append({**meta, "context": context, "game": game_of(context), "reference_states": ref_states,
                     "n_prompts_ipd": len(ref), "n_prompts_context": len(other), "n_components": len(components),
                     "spearman": rho, "ci_low": lo, "ci_high": hi, "null_band": band,
                     "reliability_ipd": rel_ref, "reliability_context": rel, "noise_ceiling": ceiling,
                     "verdict": verdict(lo, hi, ceiling, band), "top_k": top_k, "n_shared": len(same),
                     "shared": ";".join(same), "shared_opposite": ";".join(c for c in both if c not in same),
                     "ipd_only": ";".join(c for c in ref_top if c not in top),
                     "context_only": ";".join(c for c in top if c not in ref_top),
                     "n_above_noise_ipd": ref_above, "n_above_noise_context": above})
    return pd.DataFrame(rows, columns=COLUMNS)


def patching_transfer(patches: pd.DataFrame, contexts: dict[str, str], top_k: int, seed: int = 0,
                      states: dict[str, str] | None = None, labellings: dict[str, str] | None = None) -> pd.DataFrame:
    """component_transfer of one experiment's patches (jobs.patching's per-scenario table)."""
    first = patches.iloc[0]
    floors = patches.groupby("scenario")["noise_floor"].max()
    meta = {"analysis": "patching", "experiment": first["experiment"], "source": first["source"],
            "target": first["target"]}
    return component_transfer(patches, contexts, "delta_change", top_k, meta, floors, seed, states, labellings)


def dla_change(source: pd.DataFrame, target: pd.DataFrame) -> pd.DataFrame:
    """Per prompt and component, source's DLA contribution minus the target's (the same
    prompts: scenario, variant), as column dla_change; `embed` left out."""
    keys = [*PROMPT_KEYS, "component"]
    a = source[source["kind"] != "embed"].set_index(keys)["contribution"]
    b = target[target["kind"] != "embed"].set_index(keys)["contribution"]
    if not a.index.sort_values().equals(b.index.sort_values()):
        raise ValueError("DLA tables of source and target cover different prompts or components")
    return (a - b.reindex(a.index)).rename("dla_change").reset_index()


def dla_transfer(source: pd.DataFrame, target: pd.DataFrame, contexts: dict[str, str], top_k: int,
                 meta: dict, seed: int = 0, states: dict[str, str] | None = None,
                 labellings: dict[str, str] | None = None) -> pd.DataFrame:
    """component_transfer of the DLA change of one experiment (source and target DLA rows as
    in dla/dla_full_results.csv)."""
    return component_transfer(dla_change(source, target), contexts, "dla_change", top_k,
                              {"analysis": "dla", **meta}, None, seed, states, labellings)


CIRCUIT_COLUMNS = ["experiment", "source", "target", "context", "game", "in_sample", "circuit", "circuit_size",
                   "circuit_support", "n_prompts", "n_to_flip", "flip_share", "flip_ci_low", "flip_ci_high",
                   "gap_recovered", "gap_ci_low", "gap_ci_high", "random_gap_recovered", "random_flip_share",
                   "noise_floor", "status"]


def circuit_summary(prompts: pd.DataFrame, contexts: dict[str, str]) -> pd.DataFrame:
    """CIRCUIT_COLUMNS, one row per (experiment, context), from jobs.circuit_transfer's rows:
    over the prompts whose source and target disagree (n_to_flip), the share the IPD circuit
    flips (95% Wilson interval) and the mean gap recovered (95% bootstrap interval), beside
    the random sets' mean gap and flip share. status: "nothing to flip", "below noise" (mean
    |patched - baseline| within the noise band), "beyond random sets" (the gap's interval
    above the random sets' mean gap), else "within random sets"."""
    from ..stats import mean_ci
    from .probes import wilson_interval

    unknown = sorted(set(prompts["scenario"]) - set(contexts))
    if unknown:
        raise ValueError(f"contexts: no entry for scenario {unknown[0]!r}")
    frame = prompts.assign(context=prompts["scenario"].map(contexts))
    rows = []
    for (experiment, context), g in frame.groupby(["experiment", "context"], sort=False):
        first = g.iloc[0]
        live = g[~g["same_action"].astype(bool)]
        n = len(live)
        k = int(live["flipped"].astype(bool).sum())
        lo, hi = wilson_interval(k, n) if n else (np.nan, np.nan)
        gap, gap_lo, gap_hi = mean_ci(live["gap_recovered"].to_numpy(float))
        random_gap = float(live["random_gap_recovered"].mean()) if n else np.nan
        floor = float(g["noise_floor"].max())
        moved = float((live["patched_delta"] - live["baseline_delta"]).abs().mean()) if n else np.nan
        status = ("nothing to flip" if not n else "below noise" if moved <= noise_band(floor) else
                  "beyond random sets" if np.isfinite(gap_lo) and gap_lo > random_gap else "within random sets")
        rows.append({"experiment": experiment, "source": first["source"], "target": first["target"],
                     "context": context, "game": game_of(context), "in_sample": context == REFERENCE,
                     "circuit": first["circuit"], "circuit_size": int(first["circuit_size"]),
                     "circuit_support": first["circuit_support"], "n_prompts": len(g), "n_to_flip": n,
                     "flip_share": k / n if n else np.nan, "flip_ci_low": lo, "flip_ci_high": hi,
                     "gap_recovered": gap, "gap_ci_low": gap_lo, "gap_ci_high": gap_hi,
                     "random_gap_recovered": random_gap,
                     "random_flip_share": float(live["random_flip_share"].mean()) if n else np.nan,
                     "noise_floor": floor, "status": status})
    return pd.DataFrame(rows, columns=CIRCUIT_COLUMNS)
