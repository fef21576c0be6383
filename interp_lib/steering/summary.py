"""A steering experiment's tables, from its per-scenario results (jobs.steering.COLUMNS).

summary: one row per (scenario, direction, layer, alpha): means over the scenario's prompt
variants with 95% bootstrap intervals.

layer ranking: per layer, at the largest positive alpha, the mean delta change over every
standard-labelling prompt steered (swapped-label scenarios are kept apart, as everywhere),
next to the random control of the same norm and the noise floor; relative_norm = |v_l| /
the mean |activation| there (how hard alpha = 1 pushes at that layer). `toward_expected` =
effect x expected_sign x sign(alpha) (> 0: the change the direction was built to make).
Layers whose effect is within NOISE_MULTIPLE noise floors ("below noise"), no larger than
the control's ("within control") or against the expected sign ("against expected") are
labelled and left unranked; the rest are ranked by toward_expected (rank 1 = the best layer).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..contexts import game_of
from ..noise import below_noise
from ..stats import grouped_mean_ci
from .directions import MAIN
SUMMARY_KEYS = ["steering", "target", "scenario", "labelling", "in_sample", "site", "positions", "direction",
                "layer", "alpha"]
LAYER_COLUMNS = ["steering", "target", "site", "positions", "prompts", "layer", "alpha", "relative_norm", "n",
                 "effect", "ci_low",
                 "ci_high", "p_defect_change", "p_ci_low", "p_ci_high", "flip_share", "expected_sign",
                 "toward_expected", "control_effect", "noise_floor", "status", "rank"]


def steering_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Means over prompt variants: delta change and P(Defect) with intervals, flip share."""
    delta = grouped_mean_ci(results, SUMMARY_KEYS, "delta_change").rename(
        columns={"mean": "mean_delta_change"})
    p = grouped_mean_ci(results, SUMMARY_KEYS, "p_defect").rename(
        columns={"mean": "mean_p_defect", "ci_low": "p_ci_low", "ci_high": "p_ci_high"}).drop(columns="n")
    extra = results.groupby(SUMMARY_KEYS, sort=False).agg(
        baseline_p_defect=("baseline_p_defect", "mean"), flip_share=("flipped", "mean"),
        noise_floor=("noise_floor", "max"), expected_sign=("expected_sign", "first")).reset_index()
    out = delta.merge(p, on=SUMMARY_KEYS).merge(extra, on=SUMMARY_KEYS)
    out["mean_p_defect_change"] = out["mean_p_defect"] - out["baseline_p_defect"]
    return out


def ranking_alpha(alphas) -> float:
    """The largest positive alpha (the largest |alpha| when none is positive)."""
    alphas = np.asarray(sorted(set(float(a) for a in alphas)))
    positive = alphas[alphas > 0]
    return float(positive.max() if positive.size else alphas[np.abs(alphas).argmax()])


def layer_ranking(results: pd.DataFrame, alpha: float | None = None) -> pd.DataFrame:
    """One row per layer (LAYER_COLUMNS) at `alpha` (default ranking_alpha), best first."""
    alpha = ranking_alpha(results["alpha"]) if alpha is None else float(alpha)
    standard = results["labelling"] == "standard"
    rows = results[standard] if standard.any() else results
    prompts = "standard labelling" if standard.any() else "swapped labelling"
    at = rows[np.isclose(rows["alpha"], alpha)]
    keys = ["steering", "target", "site", "positions", "layer"]
    main = at[at["direction"] == MAIN]
    effect = grouped_mean_ci(main, keys, "delta_change").rename(columns={"mean": "effect"})
    p = grouped_mean_ci(main, keys, "p_defect_change").rename(
        columns={"mean": "p_defect_change", "ci_low": "p_ci_low", "ci_high": "p_ci_high"}).drop(columns="n")
    main = main.assign(relative_norm=main["direction_norm"] / main["activation_norm"])
    extra = main.groupby(keys, sort=False).agg(flip_share=("flipped", "mean"), expected_sign=("expected_sign", "first"),
                                               relative_norm=("relative_norm", "mean")).reset_index()
    floor = rows.groupby(keys, sort=False)["noise_floor"].max().rename("noise_floor").reset_index()
    controls = at[at["direction"] != MAIN]
    if len(controls):
        per_control = controls.groupby([*keys, "direction"], sort=False)["delta_change"].mean().reset_index()
        idx = per_control["delta_change"].abs().groupby([per_control[k] for k in keys]).idxmax()
        control = per_control.loc[idx.to_numpy(), [*keys, "delta_change"]].rename(
            columns={"delta_change": "control_effect"})
    else:
        control = extra[keys].assign(control_effect=np.nan)
    out = effect.merge(p, on=keys).merge(extra, on=keys).merge(floor, on=keys).merge(control, on=keys, how="left")
    out["prompts"], out["alpha"] = prompts, alpha
    out["toward_expected"] = out["effect"] * out["expected_sign"] * np.sign(alpha)
    out["status"] = [_status(e, t, f, c) for e, t, f, c in
                     zip(out["effect"], out["toward_expected"], out["noise_floor"], out["control_effect"])]
    ok = out["status"] == "ranked"
    out["rank"] = pd.Series(pd.NA, index=out.index, dtype="Int64")
    out.loc[ok, "rank"] = out.loc[ok, "toward_expected"].rank(ascending=False, method="min").astype(int)
    out = out.sort_values(["rank", "toward_expected"], ascending=[True, False], na_position="last", kind="stable")
    return out[LAYER_COLUMNS].reset_index(drop=True)


def _status(effect: float, toward: float, floor: float, control: float) -> str:
    if below_noise(effect, floor):
        return "below noise"
    if np.isfinite(control) and abs(effect) <= abs(control):
        return "within control"
    if toward <= 0:
        return "against expected"
    return "ranked"


def best_layer(ranking: pd.DataFrame) -> int | None:
    """The rank-1 layer of a layer_ranking table (None when no layer is ranked)."""
    ranked = ranking[ranking["rank"].notna()]
    return None if ranked.empty else int(ranked.sort_values("rank").iloc[0]["layer"])


def context_layer_ranking(results: pd.DataFrame, contexts: dict[str, str]) -> pd.DataFrame:
    """Per context (`contexts`: scenario -> context, interp_lib.contexts), layer_ranking of its
    prompts (one steering experiment's per-scenario results), columns context and game first."""
    unknown = sorted(set(results["scenario"]) - set(contexts))
    if unknown:
        raise ValueError(f"contexts: no entry for scenario {unknown[0]!r}")
    frames = []
    per_context = results["scenario"].map(contexts)
    for context in dict.fromkeys(per_context):
        ranking = layer_ranking(results[per_context == context])
        ranking.insert(0, "game", game_of(context))
        ranking.insert(0, "context", context)
        frames.append(ranking)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
