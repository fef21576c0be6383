"""The behavioural baseline: each model's choice on each evaluation prompt."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..cache import CacheFile

# p_defect = sigmoid(delta) = P(Defect | {C, D}); p_action2 = P(the label action2), which is
# p_defect in the standard labelling and 1 - p_defect in the swapped one.
COLUMNS = ["model", "scenario", "variant", "labelling", "template", "delta", "p_defect", "p_action2", "action"]


def action_of(delta: float) -> str:
    """"D" when delta = logit(D) - logit(C) > 0, else "C"."""
    return "D" if delta > 0 else "C"


def decisions_table(cache_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (model, scenario, variant), read from cache files' decision attrs."""
    rows = []
    for path in cache_files:
        with CacheFile(path) as cache:
            for v in cache.variants:
                attrs = cache.group(v).attrs
                delta, labelling = float(attrs["delta"]), cache.labelling(v)
                p_defect = 1.0 / (1.0 + math.exp(-delta))
                rows.append({
                    "model": str(cache.attrs["model"]),
                    "scenario": str(cache.attrs["scenario"]),
                    "variant": v,
                    "labelling": labelling,
                    "template": int(attrs.get("template", 0)),
                    "delta": delta,
                    "p_defect": p_defect,
                    "p_action2": p_defect if labelling == "standard" else 1.0 - p_defect,
                    "action": action_of(delta),
                })
    return pd.DataFrame(rows, columns=COLUMNS)


SUMMARY_COLUMNS = ["model", "scenario", "labelling", "n", "mean_delta", "ci_low", "ci_high", "defect_share"]
LABEL_BIAS_COLUMNS = ["model", "scenario", "n_pairs", "delta_standard", "delta_swapped", "label_bias", "ci_low",
                      "ci_high", "same_decision_share"]


def behaviour_summary(decisions: pd.DataFrame) -> pd.DataFrame:
    """Per model, scenario and labelling: mean delta over the prompt variants with its
    bootstrap 95% interval, and the share of variants decided Defect."""
    from ..stats import grouped_mean_ci

    dec = _with_labelling(decisions)
    out = grouped_mean_ci(dec, ["model", "scenario", "labelling"], "delta").rename(columns={"mean": "mean_delta"})
    share = dec.groupby(["model", "scenario", "labelling"], sort=False)["action"].apply(lambda a: (a == "D").mean())
    out["defect_share"] = [share[(m, s, lab)] for m, s, lab in zip(out["model"], out["scenario"], out["labelling"])]
    return out[SUMMARY_COLUMNS]


def label_bias(decisions: pd.DataFrame) -> pd.DataFrame:
    """Per model and counterbalanced scenario S (decisions of S and of its swapped sibling
    S_swapped, variant k with variant k: the same wording and ordering): label_bias = mean
    over pairs of delta(standard) - delta(swapped), with its bootstrap 95% interval. delta
    is logit(Defect) - logit(Cooperate) in both, so a model that decides by meaning alone
    has label_bias 0; a preference b for the token of action2 regardless of its meaning
    gives label_bias = 2b (positive: favours the label action2)."""
    from ..tokens import SWAPPED_SUFFIX
    from ..stats import mean_ci

    dec = _with_labelling(decisions)
    rows = []
    swapped_names = set(dec.loc[dec["labelling"] == "swapped", "scenario"])
    for (model, scenario), std in dec[dec["labelling"] == "standard"].groupby(["model", "scenario"], sort=False):
        if scenario + SWAPPED_SUFFIX not in swapped_names:
            continue
        swp = dec[(dec["model"] == model) & (dec["scenario"] == scenario + SWAPPED_SUFFIX)]
        pairs = std.merge(swp, on="variant", suffixes=("_std", "_swp"))
        if pairs.empty:
            continue
        d_std, d_swp = pairs["delta_std"].to_numpy(), pairs["delta_swp"].to_numpy()
        mean, lo, hi = mean_ci(d_std - d_swp)
        rows.append({"model": model, "scenario": scenario, "n_pairs": len(pairs), "delta_standard": float(d_std.mean()),
                     "delta_swapped": float(d_swp.mean()), "label_bias": mean, "ci_low": lo, "ci_high": hi,
                     "same_decision_share": float(np.mean((d_std > 0) == (d_swp > 0)))})
    return pd.DataFrame(rows, columns=LABEL_BIAS_COLUMNS)


def _with_labelling(decisions: pd.DataFrame) -> pd.DataFrame:
    if "labelling" in decisions.columns:
        return decisions
    return decisions.assign(labelling="standard")  # tables written before labellings existed
