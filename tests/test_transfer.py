"""Mechanism transfer across games and prompts (issue 28 item 4): each number of the transfer
tables against a direct recomputation (scipy, sklearn, pandas), hand cases for the verdicts and
the IPD circuit's consensus."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from interp_lib.analyses.probe_transfer import probe_transfer
from interp_lib.analyses.probes import ProbeData, make_probe
from interp_lib.analyses.transfer import (balanced_mean, bootstrap_spearman, circuit_summary, component_transfer,
                                          dla_change, null_band, spearman, split_half_reliability, verdict)
from interp_lib.contexts import TRAINING_SYMBOLS, context_of, game_of, has_transfer, scenario_contexts
from interp_lib.jobs.circuit_transfer import ipd_circuit


def test_contexts_name_game_format_preprompt_and_new_symbols():
    from interp_lib.prompts import DEFAULT_SYMBOLS

    assert TRAINING_SYMBOLS == DEFAULT_SYMBOLS
    assert context_of({}) == "ipd"
    # the schema's defaults are the training prompts
    assert context_of({"game": "ipd", "format": "table", "preprompt": None, "symbols": ["action1", "action2"]}) == "ipd"
    assert context_of({"game": "stag_hunt", "labelling": "swapped"}) == "stag_hunt"
    assert context_of({"game": "ipd", "format": "friend"}) == "ipd/friend"
    assert context_of({"preprompt": "utilitarian", "symbols": ["action3", "action4"]}) == \
        "ipd/preprompt_utilitarian/action3+action4"
    assert context_of({"game": "chicken", "format": "unrelated_pick"}) == "unrelated_pick"
    assert game_of("chicken/table_reversed") == "chicken" and game_of("unrelated_pick") == ""
    contexts = scenario_contexts({"a": {}, "a_swapped": {"labelling": "swapped"}, "b": {"game": "chicken"}})
    assert contexts == {"a": "ipd", "a_swapped": "ipd", "b": "chicken"}
    assert has_transfer(contexts) and not has_transfer({"a": "ipd"}) and not has_transfer({"b": "chicken"})


def test_spearman_equals_scipy_with_ties():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 12)), rng.normal(size=(3, 12))
    a[0, :4] = 1.0  # ties
    for x, y, r in zip(a, b, spearman(a, b)):
        assert r == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))


def test_summation_order_noise_does_not_break_ties():
    """Two components with exactly equal float32 deltas, averaged in another order, differ by an
    ulp; ranked as they are, that ulp moves Spearman (scipy does), tied it does not."""
    rng = np.random.default_rng(2)
    deltas = rng.normal(size=(3, 40)).astype(np.float32).astype(float)
    deltas[:, 1] = deltas[:, 0]  # a tie
    a = deltas.mean(0)
    b = a.copy()
    b[1] = np.nextafter(b[1], np.inf)  # the same mean, summed in another order
    other = rng.normal(size=40)
    assert spearmanr(a, other).statistic != spearmanr(b, other).statistic
    assert spearman(a, other) == spearman(b, other) == pytest.approx(spearmanr(a, other).statistic, abs=1e-12)
    assert spearman(a + 1e-3 * np.arange(40), other) != spearman(a, other)  # real gaps still rank


def test_split_half_reliability_of_identical_and_of_pure_noise_prompts():
    signal = np.arange(10.0)
    assert split_half_reliability(np.tile(signal, (8, 1))) == pytest.approx(1.0)
    noise = np.random.default_rng(1).normal(size=(40, 300))  # many components: a stable estimate
    assert 0 <= split_half_reliability(noise) < 0.3
    assert np.isnan(split_half_reliability(noise[:3]))


def _prompts(contexts_of_scenarios: dict, n_variants: int, means: dict, noise: float, seed: int = 0):
    """Long table (scenario, variant, component, value) with per-context component means."""
    rng = np.random.default_rng(seed)
    rows = []
    for scenario, context in contexts_of_scenarios.items():
        for v in range(1, n_variants + 1):
            for c, m in means[context].items():
                rows.append({"scenario": scenario, "variant": v, "component": c, "value": m + noise * rng.normal()})
    return pd.DataFrame(rows)


def test_component_transfer_against_a_direct_recomputation():
    comps = [f"L{l}H{h}" for l in range(3) for h in range(2)] + [f"L{l}_MLP" for l in range(3)]
    rng = np.random.default_rng(2)
    ipd = dict(zip(comps, rng.normal(size=len(comps))))
    same = dict(ipd)  # a game with the IPD's ranking
    other = dict(zip(comps, rng.normal(size=len(comps))))
    contexts = {"CD": "ipd", "CD_swapped": "ipd", "SH": "stag_hunt", "CH": "chicken"}
    values = _prompts(contexts, 6, {"ipd": ipd, "stag_hunt": same, "chicken": other}, noise=0.05)
    floors = pd.Series({s: 0.01 for s in contexts})
    table = component_transfer(values, contexts, "value", 3, {"analysis": "test", "experiment": "e", "source": "s",
                                                              "target": "t"}, floors)
    assert list(table["context"]) == ["stag_hunt", "chicken"]
    means = values.assign(context=values["scenario"].map(contexts)).groupby(["context", "component"])["value"].mean()
    for row in table.itertuples():
        expected = spearmanr(means["ipd"][comps], means[row.context][comps]).statistic
        assert row.spearman == pytest.approx(expected, abs=1e-12)
        assert row.ci_low <= row.spearman <= row.ci_high
        assert row.n_prompts_ipd == 12 and row.n_prompts_context == 6 and row.n_components == len(comps)
        top_ipd = means["ipd"].abs().sort_values(ascending=False).index[:3].tolist()
        top_ctx = means[row.context].abs().sort_values(ascending=False).index[:3].tolist()
        both = [c for c in top_ipd if c in top_ctx]
        same = [c for c in both if np.sign(means["ipd"][c]) == np.sign(means[row.context][c])]
        assert row.shared == ";".join(same) and row.shared_opposite == ";".join(c for c in both if c not in same)
    sh, ch = table.iloc[0], table.iloc[1]
    assert sh["verdict"] == "same ranking" and sh["spearman"] > 0.95 and sh["n_shared"] == 3
    assert sh["noise_ceiling"] == pytest.approx(np.sqrt(sh["reliability_ipd"] * sh["reliability_context"]))
    assert ch["spearman"] < sh["spearman"]


def test_bootstrap_interval_narrows_with_prompts():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=20)
    few = truth + rng.normal(size=(4, 20))
    many = truth + rng.normal(size=(60, 20))
    lo_f, hi_f = bootstrap_spearman(few, few[::-1])
    lo_m, hi_m = bootstrap_spearman(many, many[::-1])
    assert hi_m - lo_m < hi_f - lo_f


def test_verdicts():
    assert verdict(np.nan, np.nan, 0.9) == "too few prompts"
    assert verdict(0.7, 0.95, 0.9) == "same ranking"
    assert verdict(0.2, 0.6, 0.9) == "partly shared"
    assert verdict(-0.8, -0.2, 0.9) == "opposite ranking"
    assert verdict(-0.2, 0.3, 0.9) == "no shared ranking"
    assert verdict(-0.7, 0.95, 0.4) == "undetermined"  # holds 0 and the ceiling
    assert verdict(0.2, 0.6, np.nan) == "ranking below noise"
    # within the null band (what unrelated rankings of these components reach) is no direction
    assert verdict(0.05, 0.3, 0.9, band=0.11) == "no shared ranking"
    assert verdict(-0.3, -0.05, 0.9, band=0.11) == "no shared ranking"
    assert null_band(301) == pytest.approx(1.96 / np.sqrt(300))


def _simulate(same: bool, seed: int, k: int = 300, n: int = 6, noise: float = 1.0):
    """Prompts x components of two contexts whose true component means share their ranking
    (same) or are independent, with noise per prompt."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=k)
    other = truth if same else rng.normal(size=k)
    return truth + noise * rng.normal(size=(n, k)), other + noise * rng.normal(size=(n, k))


def test_the_interval_holds_its_estimate_and_reaches_the_ceiling_for_the_same_ranking():
    """The bias of resampled means (each resample's noise lowers its correlation) must not push
    the interval below its own estimate: with the same true ranking, the basic interval holds
    the estimate and reaches the noise ceiling in nearly every run; with independent rankings
    the verdict is never a shared or opposite ranking beyond the null band."""
    outcomes = {True: [], False: []}
    for same in (True, False):
        for seed in range(20):
            a, b = _simulate(same, seed)
            rho = float(spearman(a.mean(0), b.mean(0)))
            lo, hi = bootstrap_spearman(a, b, n_resamples=500, seed=seed)
            assert lo <= rho <= hi
            ceiling = np.sqrt(split_half_reliability(a) * split_half_reliability(b))
            outcomes[same].append(verdict(lo, hi, ceiling, null_band(a.shape[1])))
    assert outcomes[True].count("same ranking") >= 18
    assert not {"same ranking", "partly shared", "opposite ranking"} & set(outcomes[False])


def test_too_few_prompts_has_no_interval():
    contexts = {"CD": "ipd", "SH": "stag_hunt"}
    values = _prompts(contexts, 2, {"ipd": {"a": 1, "b": 2, "c": 3}, "stag_hunt": {"a": 1, "b": 2, "c": 3}}, 0.1)
    row = component_transfer(values, contexts, "value", 2, {}).iloc[0]
    assert np.isnan(row["ci_low"]) and row["verdict"] == "too few prompts"


def test_unknown_scenario_is_named():
    values = _prompts({"CD": "ipd"}, 2, {"ipd": {"a": 1.0}}, 0.0)
    with pytest.raises(ValueError, match="no entry for scenario 'CD'"):
        component_transfer(values, {}, "value", 1, {})


def test_dla_change_is_source_minus_target_per_prompt():
    rows = lambda model, k: pd.DataFrame(  # noqa: E731
        [{"model": model, "scenario": s, "variant": v, "component": c, "kind": kind, "contribution": k * (v + i)}
         for s in ("CD", "SH") for v in (1, 2) for i, (c, kind) in enumerate([("embed", "embed"), ("L0H0", "head"),
                                                                              ("L0_MLP", "mlp")])])
    change = dla_change(rows("src", 3.0), rows("tgt", 1.0))
    assert "embed" not in set(change["component"]) and len(change) == 8
    assert np.allclose(change["dla_change"], 2.0 * (change["variant"] + change["component"].map({"L0H0": 1,
                                                                                              "L0_MLP": 2})))
    with pytest.raises(ValueError, match="different prompts"):
        dla_change(rows("src", 1.0), rows("tgt", 1.0).iloc[:-1])


def test_ipd_circuit_is_the_majority_of_the_flipped_circuits():
    circuits = pd.DataFrame({"flipped": [True, True, True, False],
                             "circuit": ["L1_MLP;L0H1", "L1_MLP;L2H0", "L1_MLP;L0H1;L2H0", "L3H0"]})
    members, support = ipd_circuit(circuits)
    assert members == ["L1_MLP", "L0H1", "L2H0"] and support == pytest.approx(2 / 3)
    members, support = ipd_circuit(pd.DataFrame({"flipped": [True, True, True],
                                                 "circuit": ["L0H0", "L1H0", "L1H0;L2H0"]}))
    assert members == ["L1H0"] and support == pytest.approx(2 / 3)
    lone, _ = ipd_circuit(pd.DataFrame({"flipped": [True, True, True], "circuit": ["A", "B", "C"]}))
    assert lone == ["A"]  # none reaches half: the most frequent (ties by name)
    assert ipd_circuit(pd.DataFrame({"flipped": [False], "circuit": ["L0H0"]}))[0] == []


def test_circuit_summary_by_hand():
    from interp_lib.analyses.probes import wilson_interval

    base = {"experiment": "e", "source": "s", "target": "t", "circuit": "L1_MLP", "circuit_size": 1,
            "circuit_support": 1.0, "noise_floor": 1e-6, "source_delta": 2.0, "baseline_delta": -2.0}
    rows = [  # SH: three prompts to flip, two flipped; one where source and target agree
        {**base, "scenario": "SH", "patched_delta": 1.0, "gap_recovered": 0.75, "flipped": True,
         "same_action": False, "random_gap_recovered": 0.0, "random_flip_share": 0.0},
        {**base, "scenario": "SH", "patched_delta": 0.5, "gap_recovered": 0.625, "flipped": True,
         "same_action": False, "random_gap_recovered": 0.1, "random_flip_share": 0.2},
        {**base, "scenario": "SH", "patched_delta": -1.0, "gap_recovered": 0.25, "flipped": False,
         "same_action": False, "random_gap_recovered": 0.05, "random_flip_share": 0.0},
        {**base, "scenario": "SH", "source_delta": -1.0, "patched_delta": -1.5, "gap_recovered": 0.5,
         "flipped": False, "same_action": True, "random_gap_recovered": 0.0, "random_flip_share": np.nan},
        {**base, "scenario": "CD", "source_delta": -1.0, "patched_delta": -1.5, "gap_recovered": 0.5,
         "flipped": False, "same_action": True, "random_gap_recovered": 0.0, "random_flip_share": np.nan},
    ]
    table = circuit_summary(pd.DataFrame(rows), {"SH": "stag_hunt", "CD": "ipd"}).set_index("context")
    sh = table.loc["stag_hunt"]
    assert (sh["n_prompts"], sh["n_to_flip"]) == (4, 3)
    assert sh["flip_share"] == pytest.approx(2 / 3)
    assert (sh["flip_ci_low"], sh["flip_ci_high"]) == pytest.approx(wilson_interval(2, 3))
    assert sh["gap_recovered"] == pytest.approx(np.mean([0.75, 0.625, 0.25]))
    assert sh["random_gap_recovered"] == pytest.approx(0.05) and sh["random_flip_share"] == pytest.approx(0.2 / 3)
    assert sh["status"] == "beyond random sets" and not sh["in_sample"]
    cd = table.loc["ipd"]
    assert cd["in_sample"] and cd["status"] == "nothing to flip" and np.isnan(cd["flip_share"])


def _probe_data(seed: int = 0):
    """Prompts whose decision is one coordinate's sign, in the IPD and two other contexts
    (in 'flipped' the same coordinate means the opposite decision)."""
    rng = np.random.default_rng(seed)
    rows = []
    for scenario, n, sign in (("CD", 60, 1), ("SH", 20, 1), ("CH", 20, -1)):
        for v in range(n):
            x = rng.normal(size=(2, 6))
            rows.append((scenario, v + 1, x, sign * x[1, 0] + 0.01))
    acts = np.stack([r[2] for r in rows]).astype(np.float32)
    return ProbeData(acts, np.array([r[0] for r in rows], dtype=object), np.array([r[1] for r in rows]),
                     np.array(["standard"] * len(rows), dtype=object), np.array([r[3] for r in rows]))


def test_probe_transfer_against_a_direct_sklearn_fit():
    data = _probe_data()
    contexts = {"CD": "ipd", "SH": "stag_hunt", "CH": "chicken"}
    table = probe_transfer(data, contexts, "m")
    assert set(table["context"]) == {"stag_hunt", "chicken"} and len(table) == 2 * 2
    train = data.scenario == "CD"
    y = (data.delta > 0).astype(int)
    for row in table.itertuples():
        test = data.scenario == {"stag_hunt": "SH", "chicken": "CH"}[row.context]
        probe = make_probe().fit(data.acts[train, row.layer], y[train])
        assert row.accuracy == pytest.approx((probe.predict(data.acts[test, row.layer]) == y[test]).mean())
        assert row.chance == pytest.approx(max(y[test].mean(), 1 - y[test].mean()))
        assert row.n_train == 60 and row.n_test == 20 and row.ci_low <= row.accuracy <= row.ci_high
    layer1 = table[table["layer"] == 1].set_index("context")
    assert layer1.loc["stag_hunt", "above_chance"] and layer1.loc["stag_hunt", "accuracy"] > 0.9
    assert layer1.loc["chicken", "accuracy"] < 0.2  # the same direction, the opposite decision


def test_probe_transfer_without_ipd_prompts_or_with_one_class():
    data = _probe_data()
    assert probe_transfer(data, {"CD": "chicken", "SH": "stag_hunt", "CH": "chicken"}, "m").empty
    data.delta[data.scenario == "CD"] = 1.0
    table = probe_transfer(data, {"CD": "ipd", "SH": "stag_hunt", "CH": "chicken"}, "m")
    assert table["accuracy"].isna().all() and (table["status"] == "one class in training").all()


def test_steering_transfer_is_the_layer_ranking_of_each_contexts_prompts():
    from interp_lib.steering.summary import context_layer_ranking, layer_ranking

    rng = np.random.default_rng(4)
    rows = []
    for scenario in ("CD", "SH"):
        for direction in ("mean difference", "random 1"):
            for layer in range(3):
                for v in (1, 2, 3):
                    rows.append({"steering": "s", "target": "t", "scenario": scenario, "labelling": "standard",
                                 "in_sample": scenario == "CD", "site": "resid_pre", "positions": "all",
                                 "direction": direction, "layer": layer, "alpha": 2.0, "variant": v,
                                 "direction_norm": 1.0, "activation_norm": 2.0, "expected_sign": 1,
                                 "delta_change": rng.normal() + (layer if direction == "mean difference" else 0),
                                 "p_defect_change": 0.1, "p_defect": 0.5, "baseline_p_defect": 0.4,
                                 "flipped": False, "noise_floor": 1e-6})
    results = pd.DataFrame(rows)
    table = context_layer_ranking(results, {"CD": "ipd", "SH": "stag_hunt"})
    for context, scenario in (("ipd", "CD"), ("stag_hunt", "SH")):
        got = table[table["context"] == context].drop(columns=["context", "game"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, layer_ranking(results[results["scenario"] == scenario]))


def test_a_context_is_compared_with_the_ipd_prompts_of_its_own_states():
    """A game played in state CD is ranked against the IPD's CD prompts, not its CC ones, whose
    components differ; without a matching IPD state, against every IPD prompt."""
    comps = ["L0H0", "L0H1", "L1H0", "L1H1", "L0_MLP", "L1_MLP"]
    cd = dict(zip(comps, [3.0, 2.0, 1.0, 0.5, -1.0, -2.0]))
    cc = dict(zip(comps, [-2.0, -1.0, 0.5, 1.0, 2.0, 3.0]))
    contexts = {"CC": "ipd", "CD": "ipd", "SH": "stag_hunt", "U": "unrelated_pick"}
    states = {"CC": "CC", "CD": "CD", "SH": "CD", "U": "--"}
    values = pd.concat([_prompts({"CC": "ipd"}, 5, {"ipd": cc}, 0.05, seed=1),
                        _prompts({"CD": "ipd"}, 5, {"ipd": cd}, 0.05, seed=2),
                        _prompts({"SH": "stag_hunt"}, 5, {"stag_hunt": cd}, 0.05, seed=3),
                        _prompts({"U": "unrelated_pick"}, 5, {"unrelated_pick": cd}, 0.05, seed=4)])
    table = component_transfer(values, contexts, "value", 2, {}, states=states).set_index("context")
    assert table.loc["stag_hunt", "reference_states"] == "CD" and table.loc["stag_hunt", "n_prompts_ipd"] == 5
    cd_means = values[values["scenario"] == "CD"].groupby("component")["value"].mean()[comps]
    sh_means = values[values["scenario"] == "SH"].groupby("component")["value"].mean()[comps]
    assert table.loc["stag_hunt", "spearman"] == pytest.approx(spearmanr(cd_means, sh_means).statistic)
    assert table.loc["unrelated_pick", "reference_states"] == "all"
    assert table.loc["unrelated_pick", "n_prompts_ipd"] == 10
    # the top components' signs: same sign listed as shared, opposite sign apart
    flipped = _prompts({"SH": "stag_hunt"}, 5, {"stag_hunt": {c: -v for c, v in cd.items()}}, 0.05, seed=5)
    values = pd.concat([values[values["scenario"] == "CD"], flipped])
    row = component_transfer(values, contexts, "value", 1, {}, states=states).iloc[0]
    assert row["shared"] == "" and row["shared_opposite"] == "L0H0" and row["n_shared"] == 0


def test_the_steering_figure_draws_as_many_scenarios_as_the_games_overlays_have(tmp_path):
    """The games overlays steer 40 scenarios; the figure's palette once ran out at 32."""
    from interp_lib.plots.steering import plot_steering
    from interp_lib.steering.summary import layer_ranking, steering_summary

    rows = [{"steering": "s", "target": "t", "scenario": f"S{i}", "labelling": "standard", "in_sample": True,
             "site": "resid_pre", "positions": "all", "direction": direction, "layer": layer, "alpha": alpha,
             "variant": v, "direction_norm": 1.0, "activation_norm": 2.0, "expected_sign": 1,
             "delta_change": alpha * (layer + 1) * (direction == "mean difference") + 0.01 * v,
             "p_defect_change": 0.1, "p_defect": 0.5, "baseline_p_defect": 0.4, "flipped": False,
             "noise_floor": 1e-6}
            for i in range(40) for direction in ("mean difference", "random 1") for layer in range(2)
            for alpha in (0.0, 1.0) for v in (1, 2)]
    results = pd.DataFrame(rows)
    out = tmp_path / "steering.png"
    plot_steering(steering_summary(results), layer_ranking(results), out)
    assert out.stat().st_size > 10_000


def test_means_and_halves_are_balanced_over_the_labellings():
    """A component part that flips sign between labellings (read in meaning) dominates the ranks
    of unbalanced halves; balanced over labellings it cancels, and the meaning part's ranking
    is reliable again (as the DLA change on SmolLM2 needed)."""
    rng = np.random.default_rng(6)
    meaning, label_part = rng.normal(size=300), 3 * rng.normal(size=300)
    std = meaning + label_part + 0.1 * rng.normal(size=(3, 300))
    swp = meaning - label_part + 0.1 * rng.normal(size=(3, 300))
    values, labels = np.vstack([std, swp]), ["standard"] * 3 + ["swapped"] * 3
    assert np.allclose(balanced_mean(values, labels), (std.mean(0) + swp.mean(0)) / 2)
    assert np.allclose(balanced_mean(values[:4], labels[:4]), (std.mean(0) + swp[:1].mean(0)) / 2)
    assert split_half_reliability(values) < 0.3  # unbalanced halves: the label part decides
    assert split_half_reliability(values, labels=labels) > 0.9
    lo, hi = bootstrap_spearman(values, values + 0.1 * rng.normal(size=values.shape), n_resamples=300,
                                ref_labels=labels, other_labels=labels)
    assert lo > 0.8 and hi <= 1.0


def test_the_transfer_figure_draws_the_tables_and_an_empty_circuit_table(tmp_path):
    from interp_lib.analyses.transfer import CIRCUIT_COLUMNS
    from interp_lib.plots.transfer import plot_transfer

    contexts = {"CD": "ipd", "SH": "stag_hunt", "CH": "chicken"}
    comps = {f"L{i}H0": float(i) for i in range(8)}
    values = _prompts(contexts, 6, {c: comps for c in set(contexts.values())}, 0.3)
    components = component_transfer(values, contexts, "value", 3, {"analysis": "patching", "experiment": "e",
                                                                     "source": "s", "target": "t"})
    probes = probe_transfer(_probe_data(), contexts, "m")
    out = tmp_path / "transfer.png"
    plot_transfer(components, probes, pd.DataFrame(columns=CIRCUIT_COLUMNS), out)
    assert out.stat().st_size > 10_000
