"""Tables of the adapter edits (pandas and numpy only): means with bootstrap intervals,
which layers' updates are necessary or sufficient, and the minimal sufficient sets.

Per prompt (a row of the job's table), `reproduces` says whether the edited model still
makes the fine-tune's decision within the margin (interp_lib.adapter_edits.minimal). A
layer's update (or a module group's) is **necessary** on a scenario when removing it
leaves some prompt not reproduced, and **sufficient** when the base with it alone
reproduces every prompt.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..noise import below_noise
from ..stats import grouped_mean_ci

ALL = "ALL"  # the scenario of rows pooled over scenarios
SUMMARY_KEYS = ["model", "kind", "group", "layer", "layers", "source", "experiment", "scenario", "labelling"]
SUMMARY_COLUMNS = [*SUMMARY_KEYS, "n", "mean_delta_change", "ci_low", "ci_high", "mean_toward_goal", "toward_ci_low",
                   "toward_ci_high", "mean_p_defect", "p_ci_low", "p_ci_high", "mean_p_defect_change",
                   "mean_goal_change", "mean_goal_gap", "median_gap_fraction", "flip_share", "reproduce_share",
                   "noise_floor", "below_noise"]
VERDICT_COLUMNS = ["model", "scenario", "labelling", "group", "layer", "n_scenarios", "n_prompts", "necessary",
                   "sufficient", "in_minimal_set", "ablation_flips", "ablation_mean", "sufficiency_mean",
                   "ablation_gap_median", "sufficiency_gap_median", "noise_floor"]
_NO_LAYER = -1  # stands for NaN in group keys (pandas drops NaN keys)


def _keyed(results: pd.DataFrame) -> pd.DataFrame:
    df = results[results["kind"] != "unedited"].copy()
    df["layer"] = df["layer"].fillna(_NO_LAYER).astype(int)
    for col in ("group", "layers", "source", "experiment"):
        df[col] = df[col].fillna("").astype(str)
    return df


def _summarise(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    change = grouped_mean_ci(df, keys, "delta_change")
    p = grouped_mean_ci(df, keys, "p_defect").rename(columns={"mean": "mean_p_defect", "ci_low": "p_ci_low",
                                                               "ci_high": "p_ci_high"})
    toward = grouped_mean_ci(df, keys, "toward_goal").rename(columns={
        "mean": "mean_toward_goal", "ci_low": "toward_ci_low", "ci_high": "toward_ci_high"})
    goal = df["goal_delta"] - df["baseline_delta"]
    g = df.assign(goal_change=goal, goal_gap=goal.abs()).groupby(keys, sort=False)
    extra = g.agg(mean_p_defect_change=("p_defect_change", "mean"), mean_goal_change=("goal_change", "mean"),
                  mean_goal_gap=("goal_gap", "mean"), median_gap_fraction=("gap_fraction", "median"),
                  flip_share=("flipped", "mean"), reproduce_share=("reproduces", "mean"),
                  noise_floor=("noise_floor", "max")).reset_index()
    out = change.rename(columns={"mean": "mean_delta_change"}).merge(p.drop(columns="n"), on=keys)
    return out.merge(toward.drop(columns="n"), on=keys).merge(extra, on=keys)


def edit_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per model x kind x group x layer x source and scenario (and pooled over the scenarios
    of one labelling: scenario ALL): the mean delta change over prompts with its 95%
    bootstrap interval; the mean change towards the edit's aim (toward_goal = delta change x
    sign(goal - baseline): the base for an ablation, the fine-tune for sufficiency, the source
    for a transplant; comparable across scenarios and labellings) with its interval; the mean
    P(Defect) with its interval; the mean change the edit aims at (mean_goal_change, signed,
    and mean_goal_gap, its size); the median gap fraction (the share of that change made,
    per prompt),
    the shares of prompts flipped and reproduced, the largest noise floor, and whether the
    mean lies within 3 x that floor (below_noise)."""
    df = _keyed(results)
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    per = _summarise(df, SUMMARY_KEYS)
    pooled = _summarise(df.assign(scenario=ALL), SUMMARY_KEYS)
    out = pd.concat([per, pooled], ignore_index=True)
    out["below_noise"] = [below_noise(m, f) for m, f in zip(out["mean_delta_change"], out["noise_floor"])]
    out["layer"] = out["layer"].astype(float).where(out["layer"] != _NO_LAYER)
    return out[SUMMARY_COLUMNS]


def layer_verdicts(results: pd.DataFrame, minimal_sets: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per model x scenario x module group x layer: necessary (its ablation leaves some
    prompt not reproduced), sufficient (the base with it alone reproduces every prompt),
    in_minimal_set (whole layers only), the prompts whose decision its ablation flips, the
    mean delta changes and median gap fractions of both edits. Pooled rows (scenario ALL,
    labelling all) count the scenarios in which each holds."""
    df = _keyed(results)
    df = df[df["kind"].isin(["ablation", "sufficiency"])]
    if df.empty:
        return pd.DataFrame(columns=VERDICT_COLUMNS)
    in_set: dict = {}
    if minimal_sets is not None and len(minimal_sets):
        from .conditions import parse_layers

        for row in minimal_sets.itertuples(index=False):
            if row.set_kind != "none":
                for layer in parse_layers(row.layers):
                    in_set[(row.model, row.scenario, layer)] = True
    rows = []
    for (model, scenario, group, layer), g in df.groupby(["model", "scenario", "group", "layer"], sort=False):
        abl, suf = g[g["kind"] == "ablation"], g[g["kind"] == "sufficiency"]
        rows.append({
            "model": model, "scenario": scenario, "labelling": ";".join(dict.fromkeys(g["labelling"])),
            "group": group, "layer": layer, "n_scenarios": 1, "n_prompts": int(g["variant"].nunique()),
            "necessary": int(len(abl) > 0 and not abl["reproduces"].astype(bool).all()),
            "sufficient": int(len(suf) > 0 and suf["reproduces"].astype(bool).all()),
            "in_minimal_set": int(group == "block" and in_set.get((model, scenario, layer), False)),
            "ablation_flips": int(abl["flipped"].astype(bool).sum()),
            "ablation_mean": abl["delta_change"].mean() if len(abl) else np.nan,
            "sufficiency_mean": suf["delta_change"].mean() if len(suf) else np.nan,
            "ablation_gap_median": abl["gap_fraction"].median() if len(abl) else np.nan,
            "sufficiency_gap_median": suf["gap_fraction"].median() if len(suf) else np.nan,
            "noise_floor": g["noise_floor"].max()})
    per = pd.DataFrame(rows)
    gap = {(m, gr, la): (sub[sub["kind"] == "ablation"]["gap_fraction"].median(),
                         sub[sub["kind"] == "sufficiency"]["gap_fraction"].median())
           for (m, gr, la), sub in df.groupby(["model", "group", "layer"], sort=False)}
    pooled = per.groupby(["model", "group", "layer"], sort=False).agg(
        n_scenarios=("scenario", "nunique"), n_prompts=("n_prompts", "sum"), necessary=("necessary", "sum"),
        sufficient=("sufficient", "sum"), in_minimal_set=("in_minimal_set", "sum"),
        ablation_flips=("ablation_flips", "sum"), noise_floor=("noise_floor", "max")).reset_index()
    pooled["scenario"], pooled["labelling"] = ALL, "all"
    pooled["ablation_mean"] = pooled["sufficiency_mean"] = np.nan  # means of both labellings would cancel
    pooled["ablation_gap_median"] = [gap[k][0] for k in zip(pooled["model"], pooled["group"], pooled["layer"])]
    pooled["sufficiency_gap_median"] = [gap[k][1] for k in zip(pooled["model"], pooled["group"], pooled["layer"])]
    out = pd.concat([per, pooled[VERDICT_COLUMNS]], ignore_index=True)
    out = out[out["layer"] != _NO_LAYER]
    return out[VERDICT_COLUMNS].reset_index(drop=True)
