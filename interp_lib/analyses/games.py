"""Behaviour per game (issue 28 item 3), from the decisions table (no model runs).

One row per model and scenario, with the scenario's game, format and state beside the
decision: P(the game's second action), i.e. P(Defect) in the games that have one, as the
mean of sigmoid(delta) over the prompt variants with its bootstrap 95% interval; the mean
delta with its interval; the share of variants decided for the second action; and for a
counterbalanced scenario (its standard row) the label bias and the share of swapped pairs
decided alike. A model whose decisions flip with the labels (same_decision_share 0) writes a
token, not a choice in the game: `decides_by` says `token` there, `meaning` where every pair
agrees, `mixed` between, and is empty without a swapped sibling.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..contexts import state_of

COLUMNS = ["model", "game", "metric", "format", "preprompt", "state", "scenario", "labelling", "n",
           "p_second", "ci_low", "ci_high", "mean_delta", "delta_ci_low", "delta_ci_high", "second_share",
           "label_bias", "label_bias_ci_low", "label_bias_ci_high", "same_decision_share", "decides_by"]


def games_table(decisions: pd.DataFrame, label_bias: pd.DataFrame, scenario_meta: dict) -> pd.DataFrame:
    """`decisions` as analyses.behaviour.decisions_table, `label_bias` as behaviour.label_bias;
    `scenario_meta` maps scenario -> {game, metric, format, preprompt, self_last, opponent_last}."""
    from ..stats import mean_ci

    bias = label_bias.set_index(["model", "scenario"]) if len(label_bias) else None
    rows = []
    for (model, scenario), g in decisions.groupby(["model", "scenario"], sort=False):
        if scenario not in scenario_meta:
            raise ValueError(f"scenario_meta: no entry for scenario {scenario!r}")
        meta = scenario_meta[scenario]
        p, p_lo, p_hi = mean_ci(g["p_defect"].to_numpy())
        d, d_lo, d_hi = mean_ci(g["delta"].to_numpy())
        row = {"model": model, "game": meta["game"], "metric": meta["metric"], "format": meta.get("format", "table"),
               "preprompt": meta.get("preprompt") or "", "state": state_of(meta), "scenario": scenario,
               "labelling": g["labelling"].iat[0], "n": len(g), "p_second": p, "ci_low": p_lo, "ci_high": p_hi,
               "mean_delta": d, "delta_ci_low": d_lo, "delta_ci_high": d_hi,
               "second_share": float((g["delta"] > 0).mean()), "label_bias": np.nan, "label_bias_ci_low": np.nan,
               "label_bias_ci_high": np.nan, "same_decision_share": np.nan, "decides_by": ""}
        if bias is not None and (model, scenario) in bias.index:
            b = bias.loc[(model, scenario)]
            same = float(b["same_decision_share"])
            row.update(label_bias=float(b["label_bias"]), label_bias_ci_low=float(b["ci_low"]),
                       label_bias_ci_high=float(b["ci_high"]), same_decision_share=same,
                       decides_by="meaning" if same == 1.0 else "token" if same == 0.0 else "mixed")
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)
