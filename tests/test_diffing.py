"""Model diffing's building blocks (interp_lib.diffing, jobs.adl, jobs.crosscoder) against naive
computations and hand cases; the workflow's outputs are tests/test_diffing_workflow.py's."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from interp_lib.analyses.logit_lens import ActionReadout
from interp_lib.diffing.adl import ClassActivations, class_positions, cosine_matrix, difference_stats, group_key, \
    lens_delta, span_alignment, span_rank, split_key, state_groups, top_tokens
from interp_lib.diffing.dataset import held_out_prompts
from interp_lib.diffing.tables import cosine_rows
from interp_lib.jobs.adl import difference_rows
from interp_lib.jobs.crosscoder import _pearson_ci, checked_latents, choose_layer
from interp_lib.report.diffing import state_overview


def test_difference_stats_equal_a_naive_paired_mean_and_bootstrap():
    rng = np.random.default_rng(0)
    n, L, d = 12, 3, 8
    ref = rng.normal(size=(n, L, d)).astype(np.float32)
    shift = np.zeros((L, d))
    shift[2, 0] = 3.0  # a real difference at layer 2 only
    model = (ref + shift + 0.1 * rng.normal(size=(n, L, d))).astype(np.float32)
    direction = rng.normal(size=d)
    st = difference_stats(model, ref, direction, n_resamples=300, seed=1)
    diff = model.astype(float) - ref.astype(float)
    np.testing.assert_allclose(st.mean, diff.mean(0), atol=1e-12)
    np.testing.assert_allclose(st.norm, [np.linalg.norm(diff[:, l].mean(0)) for l in range(L)], atol=1e-12)
    naive_noise = [np.sqrt(sum(np.var(diff[:, l, k], ddof=1) for k in range(d)) / n) for l in range(L)]
    np.testing.assert_allclose(st.noise_norm, naive_noise, rtol=1e-10)
    # the same resamples, drawn by hand
    draws = np.random.default_rng(1)
    norms = [np.linalg.norm(diff[draws.integers(0, n, n)].mean(0), axis=-1) for _ in range(300)]
    np.testing.assert_allclose(st.norm_low, np.minimum(np.percentile(norms, 2.5, axis=0), st.norm), atol=1e-12)
    assert st.norm_low[2] > st.noise_norm[2] and st.norm_low[0] < 3 * st.noise_norm[0]  # only layer 2 stands out
    np.testing.assert_allclose(st.reference_norm, np.linalg.norm(ref.astype(float), axis=-1).mean(0), rtol=1e-6)
    # a prompt with NaN (no position of its class) is dropped from both sides
    model[0, 0, 0] = np.nan
    assert difference_stats(model, ref, direction, 50).n == n - 1


def test_lens_delta_is_the_logit_lens_of_the_difference_as_a_residual():
    rng = np.random.default_rng(2)
    d = 6
    readout = ActionReadout(rng.normal(size=(2, d)), 1 + rng.random(d), 0.0, None)
    v = rng.normal(size=(4, d))
    # the final norm with eps 0 on v itself: logit D - logit C
    assert lens_delta(v, readout.direction) == pytest.approx(readout.delta(v), abs=1e-12)
    assert lens_delta(7.0 * v, readout.direction) == pytest.approx(lens_delta(v, readout.direction))  # size-free
    assert np.isnan(lens_delta(np.zeros(d), readout.direction))


def test_top_tokens_by_hand():
    W_U = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.5, 0.5]], dtype=np.float32)
    ids, logits = top_tokens(np.array([2.0, 1.0]), W_U, np.ones(2), 2)
    rms = np.sqrt((4 + 1) / 2)
    assert ids.tolist() == [[0, 3], [2, 1]]
    np.testing.assert_allclose(logits, [[2 / rms, 1.5 / rms], [-2 / rms, 1 / rms]], rtol=1e-6)


def test_span_alignment_by_hand():
    cols = np.zeros((4, 2))
    cols[0, 0], cols[1, 1] = 2.0, -3.0
    best, frac = span_alignment(np.array([3.0, 4.0, 0.0, 0.0]), cols)
    assert best == pytest.approx(0.8) and frac == pytest.approx(1.0)
    best, frac = span_alignment(np.array([1.0, 0.0, 1.0, 0.0]), cols)
    assert best == pytest.approx(1 / np.sqrt(2)) and frac == pytest.approx(1 / np.sqrt(2))
    assert span_rank(np.concatenate([cols, cols[:, :1] * 5], axis=1)) == 2
    assert np.isnan(span_alignment(np.ones(4), np.zeros((4, 0)))[0])


def test_cosine_matrix_and_rows():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    cos = cosine_matrix(a)
    assert cos[0, 1] == pytest.approx(1 / np.sqrt(2)) and cos[0, 0] == pytest.approx(1.0) and np.isnan(cos[2, 0])
    vectors = {"A": {"ipd|standard": np.array([[1.0, 0.0]])}, "B": {"ipd|standard": np.array([[0.0, 2.0]]),
                                                                  "x|swapped": np.ones((1, 2))}}
    rows = cosine_rows(vectors, "base")
    assert len(rows) == 4  # the keys both have, every ordered pair
    assert rows.set_index(["model_a", "model_b"])["cosine"][("A", "B")] == pytest.approx(0.0)


def test_state_groups_and_keys():
    idx = np.array([0, 2, 3, 5])
    state = np.array(["CC", "x", "CD", "CC", "x", "CD"], dtype=object)
    groups = {name: members.tolist() for name, members in state_groups(idx, state)}
    assert groups == {"all": [0, 2, 3, 5], "CC": [0, 3], "CD": [2, 5]}
    assert [name for name, _ in state_groups(np.array([0, 3]), state)] == ["all"]  # one state: pooled only
    for key in (("ipd", "standard", "all"), ("ipd", "swapped", "CD")):
        assert split_key(group_key(*key[:2], key[2])) == key
    assert group_key("ipd", "standard") == "ipd|standard"  # the pooled key of tables written before the states


def _tit_for_tat_pair(n_per: int = 6, L: int = 2, d: int = 4, seed: int = 0):
    """A model and a reference on 2 states x 2 labellings: the model's difference is +v after
    C (CC) and -v after D (CD), so its pooled mean is ~0; returns (model, ref, states, v)."""
    rng = np.random.default_rng(seed)
    v = np.zeros((L, d))
    v[:, 0] = 2.0
    scen = [s + suffix for s in ("CC", "CD") for suffix in ("", "_swapped") for _ in range(n_per)]
    n = len(scen)
    ref = rng.normal(size=(n, L, d))
    sign = np.array([1.0 if s.startswith("CC") else -1.0 for s in scen])
    model = ref + sign[:, None, None] * v + 0.05 * rng.normal(size=(n, L, d))

    def acts(x):
        return ClassActivations({"decision": x.astype(np.float32), "action_mentions": np.full_like(x, np.nan, np.float32),
                                 "prompt": x.astype(np.float32)}, np.array(scen, dtype=object),
                                np.arange(n) % n_per, np.array(["swapped" if "_swapped" in s else "standard"
                                                               for s in scen], dtype=object),
                                np.zeros(n), np.tile([7, 9], (n, 1)))
    states = {s: s[:2] for s in set(scen)}
    return acts(model), acts(ref), states, v, model - ref, np.array(scen)


class _Readout:
    def __init__(self, ids):
        self.direction = np.eye(4)[0] * (1.0 if ids["D"] == 9 else -1.0)  # > 0 along v = towards Defect


def test_difference_rows_split_a_conditional_policy_by_state():
    acts_m, acts_r, states, v, diff, scen = _tit_for_tat_pair()
    contexts = {s: "ipd" for s in states}
    rows, vectors = difference_rows("F", "R", acts_m, acts_r, contexts, _Readout, 50, 0, states)
    table = pd.DataFrame(rows)
    assert set(table["state"]) == {"all", "CC", "CD"}
    for state, pick in (("all", np.ones(len(scen), bool)), ("CC", np.char.startswith(scen.astype(str), "CC")),
                        ("CD", np.char.startswith(scen.astype(str), "CD"))):
        lab = np.array(["_swapped" in s for s in scen])
        expected = diff[pick & ~lab].mean(0)  # standard labelling
        np.testing.assert_allclose(vectors[group_key("ipd", "standard", state)], expected, rtol=1e-5, atol=1e-6)
        got = table[(table["state"] == state) & (table["labelling"] == "standard")
                    & (table["position_class"] == "decision")].sort_values("layer")
        np.testing.assert_allclose(got["norm"], np.linalg.norm(expected, axis=-1), rtol=1e-5)
        assert (got["n_prompts"] == (pick & ~lab).sum()).all()
    dec = table[table["position_class"] == "decision"].set_index(["state", "labelling", "layer"])
    assert dec.loc[("CC", "standard", 1), "lens_ci_low"] > 0 and dec.loc[("CD", "standard", 1), "lens_ci_high"] < 0
    # pooled over both states the policy cancels: the mean is within its own noise
    assert dec.loc[("all", "standard", 1), "norm"] < 3 * dec.loc[("all", "standard", 1), "noise_norm"]
    pooled_only, _ = difference_rows("F", "R", acts_m, acts_r, contexts, _Readout, 50, 0, None)
    assert set(pd.DataFrame(pooled_only)["state"]) == {"all"}
    with pytest.raises(ValueError, match="^states: no state given for scenario CD_swapped$"):
        difference_rows("F", "R", acts_m, acts_r, contexts, _Readout, 50, 0,
                        {s: v for s, v in states.items() if s != "CD_swapped"})


def test_state_overview_reads_each_state_in_both_labellings():
    acts_m, acts_r, states, *_ = _tit_for_tat_pair()
    rows, _ = difference_rows("F", "R", acts_m, acts_r, {s: "ipd" for s in states}, _Readout, 50, 0, states)
    table = pd.DataFrame(rows)
    # the swapped labelling's Defect token is the other one: flip its lens, as a real decision would read
    swapped = table["labelling"] == "swapped"
    table.loc[swapped, ["lens_delta", "lens_ci_low", "lens_ci_high"]] = \
        -table.loc[swapped, ["lens_delta", "lens_ci_high", "lens_ci_low"]].to_numpy()
    steer = pd.DataFrame({"steering": "ADL F - R | CC", "alpha": 1.0, "direction": ["mean difference"] * 2 + ["random 1"] * 2,
                          "expected_sign": -1, "layer": [0, 1, 0, 1], "delta_change": [-1.0, -3.0, 0.5, -0.2],
                          "flipped": [False, True, False, False]})
    got = state_overview(table, steer).set_index("state")
    assert list(got.index) == ["CC", "CD"]
    assert got.loc["CC", "reads as"] == "token preference" and got.loc["CD", "reads as"] == "token preference"
    assert got.loc["CC", "steered: best layer"] == 1 and got.loc["CC", "random: mean |change|"] == pytest.approx(0.2)
    assert np.isnan(got.loc["CD", "steered: best layer"])  # that state was not steered
    table.loc[swapped, ["lens_delta", "lens_ci_low", "lens_ci_high"]] = \
        -table.loc[swapped, ["lens_delta", "lens_ci_high", "lens_ci_low"]].to_numpy()
    assert (state_overview(table, None)["reads as"] == "decision").all()


def test_the_adl_figure_shows_each_states_lens_and_reads_tables_without_states(tmp_path, monkeypatch):
    import interp_lib.plots.diffing as plots

    acts_m, acts_r, states, *_ = _tit_for_tat_pair()
    rows, _ = difference_rows("F", "R", acts_m, acts_r, {s: "ipd" for s in states}, _Readout, 50, 0, states)
    table = pd.DataFrame(rows)
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig))
    plots.plot_adl(table, pd.DataFrame(columns=["steering"]), tmp_path / "adl.png")
    panel = figures[0].axes[3]
    assert [t.get_text() for t in panel.get_xticklabels()] == ["CC", "CD"]
    # one errorbar per labelling: the standard one at the states' last-layer lens
    (standard, _), last = panel.containers, table[(table["layer"] == 1) & (table["labelling"] == "standard")
                                                   & (table["position_class"] == "decision")]
    np.testing.assert_allclose(np.asarray(standard.lines[0].get_ydata(), float), last.set_index("state").loc[["CC", "CD"], "lens_delta"])
    # panel (b) reads the pooled rows only: one line per labelling
    assert len(figures[0].axes[1].get_lines()) == 2 + 1  # and the zero line
    plots.plot_adl(table[table["state"] == "all"].drop(columns="state"), pd.DataFrame(columns=["steering"]),
                   tmp_path / "old.png")
    assert "one state" in figures[1].axes[3].texts[0].get_text()


def test_position_classes():
    ids = np.array([1, 50, 7, 51, 9, 50])
    got = class_positions(ids, {50, 51})
    assert got["decision"].tolist() == [5] and got["action_mentions"].tolist() == [1, 3]
    assert got["prompt"].tolist() == [1, 2, 3, 4]


def test_held_out_prompts():
    prompts = [("s", v) for v in range(10)]
    held = held_out_prompts(prompts, 0.2, 0)
    assert len(held) == 2 and held == held_out_prompts(prompts, 0.2, 0) and held != held_out_prompts(prompts, 0.2, 1)
    assert len(held_out_prompts(prompts[:2], 0.9, 0)) == 1 and held_out_prompts(prompts[:1], 0.5, 0) == set()


def test_choose_layer():
    probes = pd.DataFrame({"model": ["A"] * 4 + ["B"] * 4, "target": "decision_both_labellings",
                           "layer": [0, 1, 2, 3] * 2, "accuracy": [0.5, 0.97, 1.0, 1.0, 0.5, 0.6, 0.96, 1.0]})
    assert choose_layer("auto", probes, ["A", "B"], 6)[0] == 2  # A from 1, B from 2
    assert choose_layer("auto", probes, ["A", "B"], 3)[0] == 1  # capped at n_layers - 2
    # a fine-tune without a probe (one class) is left out; none at all: the middle layer
    assert choose_layer("auto", probes, ["A", "C"], 6)[0] == 1
    assert choose_layer("auto", probes, ["C"], 6) == (3, "middle layer (the probes read no decision)")
    assert choose_layer(4, None, ["A"], 6) == (4, "diffing.crosscoder.layer")
    with pytest.raises(ValueError, match=r"^diffing.crosscoder.layer: 5 is not in 0-4"):
        choose_layer(5, None, ["A"], 6)


def test_pearson_interval_and_checked_latents():
    rng = np.random.default_rng(3)
    a = rng.normal(size=40)
    b = a + rng.normal(size=40)
    r, lo, hi = _pearson_ci(a, b)
    assert r == pytest.approx(np.corrcoef(a, b)[0, 1]) and lo < r < hi
    assert np.isnan(_pearson_ci(np.zeros(10), b[:10])[0])
    latents = pd.DataFrame({"class": ["shared", "moral-only", "fine-tune-only", "moral-only"],
                            "decision_frequency": [1.0, 0.5, 0.0, 0.2],
                            "decision_mean_activation": [9.0, 1.0, 5.0, 2.0]})
    assert checked_latents(latents, 5).index.tolist() == [3, 1]  # specific and firing at the decision, strongest first
    # too few specific latents: the live ones leaning most to the fine-tunes fill up, never a base-leaning one
    latents = pd.DataFrame({"class": ["shared", "moral-only", "shared", "shared", "dead"],
                            "decision_frequency": [1.0, 0.5, 0.3, 0.2, 0.0], "decision_mean_activation": 1.0,
                            "relative_norm_base": [0.6, 0.1, 1.0, 0.9, 0.0],
                            "relative_norm_A": [1.0, 1.0, 0.5, 1.0, 1.0], "relative_norm_B": [0.9, 0.2, 0.4, 1.0, 1.0]})
    assert checked_latents(latents, 5, "base").index.tolist() == [1, 0, 3]  # lean 0.35, then 0.1; #2 leans to base


def test_a_bad_crosscoder_layer_is_one_line_naming_the_key():
    from interp_lib.config import ConfigError, read_yaml, validate_config

    from conftest import REPO

    config = read_yaml(REPO / "config.yaml")
    config["diffing"]["crosscoder"]["layer"] = "middle"
    with pytest.raises(ConfigError, match=r"^config: diffing\.crosscoder\.layer: 'middle' is not one of \['auto'\]$"):
        validate_config(config)
    config["diffing"]["crosscoder"]["layer"] = 3
    assert validate_config(config)["diffing"]["crosscoder"]["layer"] == 3


def test_steering_names_carry_their_state():
    from interp_lib.diffing.adl import steering_name, steering_state

    assert steering_name("F", "R") == "ADL F - R" and steering_state("ADL F - R") == "all"
    assert steering_name("F", "R", "CD") == "ADL F - R | CD" and steering_state(steering_name("F", "R", "CD")) == "CD"
