"""Steering and probes on the embedded family, from the workflow's outputs (config.yaml's
steering experiments and the probe of every model), checked against the caches read
independently with h5py."""

import h5py
import numpy as np
import pandas as pd
import pytest

from interp_lib.steering.summary import MAIN

STEERING = ["PT3De_minus_PT2_on_PT2", "PT4_decision_on_PT4"]
SCENARIOS = ["CC_continue", "CC_temptation", "CD_punished", "CD_punished_swapped", "DC_exploited", "DD_trapped"]
STANDARD = [s for s in SCENARIOS if not s.endswith("_swapped")]


def _per_scenario(results, name) -> pd.DataFrame:
    return pd.concat([pd.read_csv(results / f"steering/per/{name}/{s}.csv") for s in SCENARIOS], ignore_index=True)


@pytest.mark.parametrize("name", STEERING)
def test_alpha_zero_reproduces_the_cached_delta(workflow_dir, name):
    results = workflow_dir / "results"
    table = _per_scenario(results, name)
    zero = table[table["alpha"] == 0.0]
    assert len(zero) == len(table) / 7  # one of the 7 alphas (0 is added to config.yaml's six)
    target = table["target"].iloc[0]
    worst = 0.0
    for scenario, rows in zero.groupby("scenario"):
        with h5py.File(results / f"cache/{target}/{scenario}.h5", "r") as f:
            for _, row in rows.iterrows():
                cached = float(f[str(row["variant"])].attrs["delta"])
                assert row["baseline_delta"] == pytest.approx(cached, abs=1e-6)
                worst = max(worst, abs(row["delta"] - cached))
    assert worst < 1e-4, worst  # float32 forward passes from a cached layer; measured ~4e-6
    assert table["noise_floor"].max() == pytest.approx(worst)


def test_steering_pt2_towards_pt3de_lowers_defection_at_the_best_layer(workflow_dir):
    """A measured fact of the embedded family: the PT3_COREDe - PT2_COREDe direction, added
    to PT2_COREDe at the best-ranked layer with the largest alpha, lowers P(Defect) on every
    prompt of every standard-labelling scenario, and by more than a random direction."""
    results = workflow_dir / "results"
    name = "PT3De_minus_PT2_on_PT2"
    layers = pd.read_csv(results / f"steering/steering_layers_{name}.csv")
    best = layers[layers["rank"] == 1].iloc[0]
    assert best["expected_sign"] == -1  # PT3_COREDe defects less than PT2_COREDe
    assert best["status"] == "ranked" and best["ci_high"] < 0
    table = _per_scenario(results, name)
    at = table[(table["layer"] == best["layer"]) & (table["alpha"] == best["alpha"])]
    main, control = at[at["direction"] == MAIN], at[at["direction"] != MAIN]
    for scenario in STANDARD:
        rows = main[main["scenario"] == scenario]
        assert len(rows) == 3 and (rows["p_defect"] < rows["baseline_p_defect"]).all(), scenario
        assert rows["delta_change"].mean() < control.loc[control["scenario"] == scenario, "delta_change"].mean()
    summary = pd.read_csv(results / f"steering/steering_{name}.csv")
    cell = summary[(summary["direction"] == MAIN) & (summary["layer"] == best["layer"])
                   & (summary["alpha"] == best["alpha"]) & summary["scenario"].isin(STANDARD)]
    assert (cell["mean_p_defect"] < cell["baseline_p_defect"]).all() and len(cell) == len(STANDARD)


def test_a_decision_direction_raises_defection_with_alpha(workflow_dir):
    """PT4's own Defect-minus-Cooperate direction (MLP outputs): a larger alpha at the best
    layer means a larger mean delta, and a negative alpha a smaller one."""
    results = workflow_dir / "results"
    layers = pd.read_csv(results / "steering/steering_layers_PT4_decision_on_PT4.csv")
    best = layers[layers["rank"] == 1].iloc[0]
    assert best["expected_sign"] == 1 and best["effect"] > 0
    table = _per_scenario(results, "PT4_decision_on_PT4")
    main = table[(table["direction"] == MAIN) & (table["layer"] == best["layer"])
                 & table["scenario"].isin(STANDARD)]
    means = main.groupby("alpha")["delta"].mean()
    assert (np.diff(means.to_numpy()) > 0).all(), means


def test_probes_read_the_decision_at_the_last_layer(workflow_dir):
    """The decision probe (standard-labelling prompts) at the last layer predicts the cached
    decisions of every model that decides both ways; a model that decides one way has no
    probe, and its chance level is 1."""
    results = workflow_dir / "results"
    probes = pd.read_csv(results / "probes/probe_accuracy.csv")
    decisions = pd.read_csv(results / "behavior/decisions.csv")
    decisions = decisions[decisions["labelling"] == "standard"]
    last = probes["layer"].max()
    assert last == 3  # the embedded model's 4 layers
    both_ways = 0
    for model, rows in decisions.groupby("model"):
        defect = int((rows["delta"] > 0).sum())
        probe = probes[(probes["model"] == model) & (probes["target"] == "decision") & (probes["layer"] == last)]
        assert len(probe) == 1, model
        probe = probe.iloc[0]
        assert probe["n_prompts"] == len(rows) == 15 and probe["n_positive"] == defect, model
        assert probe["chance"] == pytest.approx(max(defect, len(rows) - defect) / len(rows)), model
        if 0 < defect < len(rows):
            both_ways += 1
            assert probe["accuracy"] >= 0.9 and probe["ci_low"] > 0.5, (model, probe["accuracy"])
            assert probe["ci_low"] <= probe["accuracy"] <= probe["ci_high"]
        else:
            assert np.isnan(probe["accuracy"]) and probe["cv"] == "one class" and probe["chance"] == 1, model
    assert both_ways == 2  # base and PT4_COREDe (tit-for-tat)


def test_steering_and_probes_reach_the_report_and_the_rq_summary(workflow_dir):
    results = workflow_dir / "results"
    for path in [*(f"steering/steering_{n}.png" for n in STEERING), "probes/probe_accuracy.png"]:
        assert (results / path).stat().st_size > 10_000, path
    rq = (results / "rq_summary.md").read_text()
    assert "### Steering by layer" in rq and "### Where the decision becomes linearly readable (probes)" in rq
    best = pd.read_csv(results / "steering/steering_layers_PT3De_minus_PT2_on_PT2.csv")
    assert f"best layer L{int(best.loc[best['rank'] == 1, 'layer'].iloc[0])}" in rq
    assert "steering PT3De_minus_PT2_on_PT2 rank" in rq  # the layer table beside DLA and weights


def test_bad_steering_input_is_named(workflow_dir):
    """A layer the model lacks, and a decision direction of a model that answers one way,
    stop the job with one line naming them (and write nothing)."""
    from interp_lib.jobs.steering import steer_scenario
    from interp_lib.steering import DirectionError

    results = workflow_dir / "results"
    caches = {m: [str(results / f"cache/{m}/{s}.h5") for s in STANDARD] for m in ("PT2_COREDe", "PT3_COREDe")}
    spec = {"target": "PT2_COREDe", "site": "resid_pre", "layers": [1, 9], "alphas": [1.0], "positions": "decision",
            "controls": 0, "direction": {"from": "models", "source": "PT3_COREDe", "reference": "PT2_COREDe"}}
    args = ("CC_continue", str(results / "cache/PT2_COREDe/CC_continue.h5"), caches,
            str(results / "models/PT2_COREDe"))
    with pytest.raises(ValueError, match=r"^steering\.bad\.layers: layer 9 does not exist \(PT2_COREDe has 4 "
                                         r"layers, 0-3\)$"):
        steer_scenario("bad", spec, *args)
    spec = {**spec, "layers": "all", "direction": {"from": "decisions", "model": "PT2_COREDe"}}
    with pytest.raises(DirectionError, match="^steering.bad.direction: PT2_COREDe answers Defect on all 15 "
                                             "prompts of CC_continue, CC_temptation, CD_punished, DC_exploited, "
                                             "DD_trapped; a decision direction needs prompts answered each way"):
        steer_scenario("bad", spec, *args)
