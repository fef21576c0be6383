"""Tables built from patching results: per-experiment summary, component consistency
across scenarios, circuits, and the cross-experiment summary. All inputs and outputs are
tidy DataFrames (one row per observation).

Noise: `noise_floor` is a prompt's largest deviation in patches that must change nothing
(`patching.noise_floor`); an effect within NOISE_MULTIPLE times the largest floor of the
prompts it is averaged over is flagged `*_below_noise` (indistinguishable from noise).
Tables from results without a noise_floor column get NaN floors and no flags."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..noise import below_noise, largest_floor


def atp_agreement(exact: np.ndarray, estimate: np.ndarray, k: int = 10) -> dict:
    """Spearman rank correlation of AtP estimates with exact delta_change, and the recall of
    the exact top-k (by |delta_change|) within the AtP top-k."""
    from scipy.stats import spearmanr

    k = min(k, len(exact))
    top_exact = set(np.argsort(-np.abs(exact), kind="stable")[:k])
    top_atp = set(np.argsort(-np.abs(estimate), kind="stable")[:k])
    rho = spearmanr(exact, estimate).statistic if len(exact) > 1 else np.nan
    return {"atp_spearman": float(rho), f"atp_top{k}_recall": len(top_exact & top_atp) / k}


def _atp_columns(g: pd.DataFrame, pooled: bool) -> dict:
    """Spearman over every patch of `g`; top-10 recall over patches for one prompt, and for
    the pooled row over components ranked by mean |effect| across the prompts: pooled over
    patches, one component repeated over 18 prompts fills the top 10 by itself, so that
    recall would say whether AtP gets one component's size right, not which components it
    finds (measured 2026-12-07: 0.0 for a top group AtP ranks 3rd-4th instead of 1st)."""
    if "atp_delta_change" not in g or g["atp_delta_change"].isna().all():
        return {"atp_spearman": np.nan, "atp_top10_recall": np.nan}
    out = atp_agreement(g["delta_change"].to_numpy(), g["atp_delta_change"].to_numpy(), 10)
    if not pooled:
        return out
    per_component = (g[["component", "delta_change", "atp_delta_change"]].set_index("component")
                     .abs().groupby(level=0, sort=False).mean())
    by_component = atp_agreement(per_component["delta_change"].to_numpy(),
                                 per_component["atp_delta_change"].to_numpy(), 10)
    return {**by_component, "atp_spearman": out["atp_spearman"]}  # the recall over components


def prompt_summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (scenario, variant), then one "ALL" row: baseline and source behaviour,
    patches run, flips, the strongest single component (largest |delta_change|), and the
    agreement of attribution patching with exact patching (Spearman, top-10 recall; the
    ALL row's Spearman pools every patch of the experiment, its recall ranks components by
    mean |delta_change|), the noise floor (ALL: the largest) and
    how many patches are within NOISE_MULTIPLE times it."""
    rows = []
    groups = list(results.groupby(["scenario", "variant"], sort=False)) + [(("ALL", ""), results)]
    for (scenario, variant), g in groups:
        best = g.loc[g["delta_change"].abs().idxmax()]
        pooled = scenario == "ALL"
        floor = largest_floor(g)
        n_noise = int(g["below_noise"].astype(bool).sum()) if "below_noise" in g else np.nan
        rows.append({
            "experiment": g["experiment"].iat[0], "scenario": scenario, "variant": variant,
            "positions": g["positions"].iat[0], "head_site": g["head_site"].iat[0],
            "baseline_delta": np.nan if pooled else g["baseline_delta"].iat[0],
            "source_delta": np.nan if pooled else g["source_delta"].iat[0],
            "baseline_action": "" if pooled else g["baseline_action"].iat[0],
            "source_action": "" if pooled else ("D" if g["source_delta"].iat[0] > 0 else "C"),
            "n_patches": len(g), "n_flips": int(g["action_flipped"].sum()),
            "max_abs_delta_change": abs(best["delta_change"]),
            "strongest_component": best["component"], "strongest_delta_change": best["delta_change"],
            "strongest_gap_fraction": best["gap_fraction"],
            "noise_floor": floor, "n_below_noise": n_noise,
            "strongest_below_noise": below_noise(best["delta_change"], floor),
            **_atp_columns(g, pooled),
        })
    return pd.DataFrame(rows)


def component_consistency(results: pd.DataFrame, top_k: int) -> pd.DataFrame:
    """Per component, over scenarios: mean effect, sign agreement, and in how many scenarios
    it is among the top_k by |mean delta_change| (mean over variants), and whether its mean
    effect is within NOISE_MULTIPLE times the largest noise floor. Ranked by mean |effect|."""
    per_scen = (results.groupby(["component", "scenario"], sort=False)
                .agg(delta_change=("delta_change", "mean"), gap_fraction=("gap_fraction", "mean"))
                .reset_index())
    per_scen["rank_in_scenario"] = per_scen.groupby("scenario")["delta_change"].transform(
        lambda s: s.abs().rank(ascending=False, method="first"))
    meta = results.drop_duplicates("component").set_index("component")[["kind", "layer", "head"]]
    floor = largest_floor(results)
    rows = []
    for comp, g in per_scen.groupby("component", sort=False):
        mean = g["delta_change"].mean()
        signs = np.sign(g["delta_change"].to_numpy())
        rows.append({
            "component": comp, **meta.loc[comp].to_dict(),
            "mean_delta_change": mean,
            "mean_abs_delta_change": g["delta_change"].abs().mean(),
            "mean_gap_fraction": g["gap_fraction"].mean(),
            "sign_agreement": float(np.mean(signs == np.sign(mean))) if mean != 0 else 0.0,
            "n_scenarios": len(g),
            "n_scenarios_top_k": int((g["rank_in_scenario"] <= top_k).sum()),
            "n_flips": int(results.loc[results["component"] == comp, "action_flipped"].sum()),
            "noise_floor": floor, "below_noise": below_noise(mean, floor),
        })
    out = pd.DataFrame(rows).sort_values("mean_abs_delta_change", ascending=False, kind="stable")
    out.insert(0, "rank", range(1, len(out) + 1))
    out.insert(0, "experiment", results["experiment"].iat[0])
    return out.reset_index(drop=True)


def cross_experiment_summary(experiments: dict[str, dict], top_k: int) -> pd.DataFrame:
    """One row per (experiment, scenario), plus an "ALL" row per experiment.

    `experiments` maps name -> {"results": DataFrame, "circuits": DataFrame (may be empty)}.
    `strong_elsewhere` lists this experiment's top_k components (by mean |delta_change|)
    that are also top_k in another experiment. `noise_floor` is the largest of the rows'
    prompts; `strongest_below_noise` flags a strongest effect within NOISE_MULTIPLE times it,
    `components_above_noise` counts components whose mean effect is not.
    """
    tops = {}
    for name, data in experiments.items():
        cons = component_consistency(data["results"], top_k)
        tops[name] = list(cons["component"].head(top_k))
    rows = []
    for name, data in experiments.items():
        res, circ = data["results"], data["circuits"]
        others = {c for other, comps in tops.items() if other != name for c in comps}
        shared = ";".join(c for c in tops[name] if c in others)
        groups = [(s, g) for s, g in res.groupby("scenario", sort=False)] + [("ALL", res)]
        for scenario, g in groups:
            per_comp = g.groupby("component")["delta_change"].mean()
            best = per_comp.abs().idxmax()
            gap = g.loc[g["component"] == best, "gap_fraction"].mean()
            c = circ if scenario == "ALL" or circ.empty else circ[circ["scenario"] == scenario]
            floor = largest_floor(g)
            above = sum(not below_noise(v, floor) for v in per_comp) if np.isfinite(floor) else np.nan
            rows.append({
                "experiment": name, "source": res["source"].iat[0], "target": res["target"].iat[0],
                "scenario": scenario, "positions": res["positions"].iat[0],
                "n_prompts": g[["scenario", "variant"]].drop_duplicates().shape[0],
                "patches_run": len(g), "flips": int(g["action_flipped"].sum()),
                "strongest_component": best, "strongest_mean_delta_change": per_comp[best],
                "strongest_gap_fraction": gap,
                "noise_floor": floor, "strongest_below_noise": below_noise(per_comp[best], floor),
                "components_above_noise": above,
                "circuits_flipped": int(c["flipped"].sum()) if len(c) else 0,
                "circuits_run": len(c),
                "mean_circuit_size_flipped": float(c.loc[c["flipped"], "circuit_size"].mean())
                if len(c) and c["flipped"].any() else np.nan,
                "strong_elsewhere": shared,
            })
    return pd.DataFrame(rows)


def read_csvs(paths) -> pd.DataFrame:
    """Concatenation of CSV files (empty files contribute no rows)."""
    frames = [pd.read_csv(p) for p in paths]
    frames = [f for f in frames if len(f.columns)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
