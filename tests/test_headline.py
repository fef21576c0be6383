"""interp_lib.report.headline on hand-made tables: the behaviour table is the mean over variants of
p_action2, and an experiment's strongest components are ranked by mean |delta_change| over
scenarios (each scenario's mean over variants first)."""

from __future__ import annotations

import pandas as pd
import pytest

from interp_lib.report.headline import behaviour_table, strongest_components


def test_behaviour_table_averages_the_variants_per_model_and_scenario():
    decisions = pd.DataFrame({
        "model": ["b", "b", "b", "m"], "scenario": ["S1", "S1", "S2", "S1"],
        "variant": [0, 1, 0, 0], "p_action2": [0.2, 0.4, 0.9, 0.05],
    })
    table = behaviour_table(decisions, {"m": "Moral"})
    assert list(table.index) == ["b", "Moral"]
    assert table.loc["b", "S1"] == pytest.approx(0.3)
    assert table.loc["b", "S2"] == pytest.approx(0.9)
    assert table.loc["Moral", "S1"] == pytest.approx(0.05) and pd.isna(table.loc["Moral", "S2"])


def test_strongest_components_rank_by_mean_absolute_change_over_scenarios():
    # A: +1 in S1, -1 in S2 (mean 0, mean |.| 1); B: +0.6 in both (mean |.| 0.6);
    # C: variants +0.5 and -0.5 in S1 average to 0, +0.4 in S2 (mean |.| 0.2).
    rows = []
    for comp, per in {"A": {"S1": [1.0], "S2": [-1.0]}, "B": {"S1": [0.6], "S2": [0.6]},
                      "C": {"S1": [0.5, -0.5], "S2": [0.4]}}.items():
        for scenario, values in per.items():
            for variant, v in enumerate(values):
                rows.append({"component": comp, "scenario": scenario, "variant": variant, "delta_change": v,
                             "gap_fraction": 0.0, "action_flipped": False, "noise_floor": 1e-6})
    top = strongest_components(pd.DataFrame(rows), n=2)
    assert list(top["component"]) == ["A", "B"]
    assert list(top["mean |delta_change|"]) == pytest.approx([1.0, 0.6])
    assert list(top["mean delta_change"]) == pytest.approx([0.0, 0.6])
