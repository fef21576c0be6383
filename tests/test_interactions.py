"""Component interaction matrices (interp_lib.analyses.interactions, interaction_stats): the
correlation and difference tables against np.corrcoef on a hand-built contribution table,
the bootstrap intervals and permutation p values against naive loops, the permutation null on
a planted difference (significant) and on models without one (not significant, p roughly
uniform), Benjamini-Hochberg against a hand-computed case, what N prompts can show, the
figures and the RQ-summary section."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kstest, norm

from interp_lib.analyses import interaction_stats as st
from interp_lib.analyses.interactions import (CORRELATION_COLUMNS, DIFFERENCE_COLUMNS, SUMMARY_COLUMNS, _pair_seed,
                                              compared_pairs, interaction_tables, square)

COMPONENTS = ["L0H0", "L0H1", "L0_MLP", "L1H0", "L1H1", "L1_MLP"]


def dla_rows(data: dict, scenarios: list, n_variants: int) -> pd.DataFrame:
    """DLA rows (dla.FULL_COLUMNS) of {model: X [N, 6]}, prompt k = variant k % n_variants + 1
    of scenario k // n_variants, with an embedding row that the analysis must leave out."""
    rows = []
    for model, x in data.items():
        for k, values in enumerate(x):
            s, v = scenarios[k // n_variants], k % n_variants + 1
            rows.append({"model": model, "scenario": s, "variant": v, "component": "embed", "kind": "embed",
                         "layer": pd.NA, "head": pd.NA, "contribution": 1.0 + k})
            for name, value in zip(COMPONENTS, values):
                mlp = name.endswith("_MLP")
                rows.append({"model": model, "scenario": s, "variant": v, "component": name,
                             "kind": "mlp" if mlp else "head", "layer": int(name[1]),
                             "head": pd.NA if mlp else int(name[-1]), "contribution": float(value)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def hand_built():
    rng = np.random.default_rng(7)
    n = 12
    a = rng.normal(size=(n, 6))
    b = rng.normal(size=(n, 6))
    b[:, 1] = 2 * b[:, 0] + 0.3 * b[:, 1]  # L0H0 and L0H1 wired together in b only
    c = rng.normal(size=(n, 6))
    c[:, 2] = 0.25  # L0_MLP constant in c
    data = {"A": a, "B": b, "C": c}
    scenarios = ["S0", "S0_swapped", "S1", "S1_swapped"]
    full = dla_rows(data, scenarios, 3)
    tables = interaction_tables(full, [("A", "B"), ("A", "C"), ("B", "missing")], n_bootstrap=300,
                                n_permutations=400, fdr=0.05, seed=5, budget=3000)
    return data, full, tables


def test_correlations_and_differences_equal_np_corrcoef(hand_built):
    data, _, (corr, diff, summary) = hand_built
    assert list(corr.columns) == CORRELATION_COLUMNS and list(diff.columns) == DIFFERENCE_COLUMNS
    assert list(summary.columns) == SUMMARY_COLUMNS
    iu = np.triu_indices(6, 1)
    for model, x in data.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            expected = np.corrcoef(x.T)[iu]
        rows = corr[corr["model"] == model]
        assert rows["component_a"].tolist() == [COMPONENTS[i] for i in iu[0]]
        assert rows["component_b"].tolist() == [COMPONENTS[j] for j in iu[1]]
        assert (rows["n_prompts"] == 12).all()
        np.testing.assert_allclose(rows["r"], expected, atol=1e-12)  # NaN where expected is NaN
    # the constant component of C: every r with it NaN, named in the summary
    c = corr[corr["model"] == "C"]
    with_const = (c["component_a"] == "L0_MLP") | (c["component_b"] == "L0_MLP")
    assert c.loc[with_const, "r"].isna().all() and c.loc[~with_const, "r"].notna().all()
    assert summary.set_index("model_b").loc["C", "constant_components"] == "C: L0_MLP"
    # pairs of models: only those with rows; difference = r_a - r_b of the same prompts
    assert summary[["model_a", "model_b"]].values.tolist() == [["A", "B"], ["A", "C"]]
    for (a, b), rows in diff.groupby(["model_a", "model_b"], sort=False):
        r_a = corr.loc[corr["model"] == a, "r"].to_numpy()
        r_b = corr.loc[corr["model"] == b, "r"].to_numpy()
        np.testing.assert_array_equal(rows["r_a"], r_a)
        np.testing.assert_array_equal(rows["r_b"], r_b)
        np.testing.assert_allclose(rows["difference"], r_a - r_b, atol=1e-15)
    ac = diff[diff["model_b"] == "C"]
    assert ac["p_perm"].isna().sum() == 5 and ac["q_fdr"].isna().sum() == 5 and not ac["significant"].iloc[:5].any()
    row = summary.set_index("model_b").loc["C"]
    assert row["n_tested"] == 10 and row["n_pairs"] == 15


def test_bootstrap_intervals_and_permutation_p_equal_naive_loops(hand_built):
    data, _, (corr, diff, _) = hand_built
    # the fixture's budget of 3000 bytes holds no pair's 300 resamples of 3 models (+ 2): one row per block
    assert st.row_blocks(6, 4 * 300 * 5, 3000) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert st.row_blocks(6, 4 * 300 * 5) == [(0, 5)]
    iu = np.triu_indices(6, 1)
    idx = st.resample_indices(12, 300, 5)
    boot = {m: np.array([np.corrcoef(x[i].T)[iu] for i in idx]) for m, x in data.items() if m != "C"}
    rows = diff[diff["model_b"] == "B"]
    d = rows["difference"].to_numpy()
    lo, hi = np.percentile(boot["A"] - boot["B"], [2.5, 97.5], axis=0)
    np.testing.assert_allclose(rows["ci_low"], np.minimum(lo, d), atol=1e-6)  # float32 resamples
    np.testing.assert_allclose(rows["ci_high"], np.maximum(hi, d), atol=1e-6)
    a = corr[corr["model"] == "A"]
    lo, hi = np.percentile(boot["A"], [2.5, 97.5], axis=0)
    np.testing.assert_allclose(a["ci_low"], np.minimum(lo, a["r"]), atol=1e-6)
    np.testing.assert_allclose(a["ci_high"], np.maximum(hi, a["r"]), atol=1e-6)
    # permutation: per prompt, swap the two models' (standardised) vectors
    swaps = _pair_seed(5, "A", "B").random((400, 12)) < 0.5
    z = {m: (data[m] - data[m].mean(0)) / data[m].std(0) for m in ("A", "B")}
    observed = np.abs(np.corrcoef(data["A"].T) - np.corrcoef(data["B"].T))[iu]
    count, null = np.zeros(len(observed)), []
    for s in swaps:
        ya, yb = np.where(s[:, None], z["B"], z["A"]), np.where(s[:, None], z["A"], z["B"])
        null.append((np.corrcoef(ya.T) - np.corrcoef(yb.T))[iu])
        count += np.abs(null[-1]) >= observed - 1e-12
    np.testing.assert_allclose(rows["p_perm"], (1 + count) / 401, atol=1e-15)
    np.testing.assert_allclose(rows["null_sd"], np.std(null, axis=0, ddof=1), rtol=1e-9)
    np.testing.assert_allclose(rows["q_fdr"], st.benjamini_hochberg(rows["p_perm"].to_numpy()))


def test_seed_fixes_every_number(hand_built):
    _, full, (corr, diff, _) = hand_built
    again = interaction_tables(full, [("A", "B"), ("A", "C")], n_bootstrap=300, n_permutations=400, seed=5)
    pd.testing.assert_frame_equal(again[0], corr)  # the default budget: one block
    pd.testing.assert_frame_equal(again[1], diff)
    other = interaction_tables(full, [("A", "B")], n_bootstrap=300, n_permutations=400, seed=6)[1]
    assert not np.allclose(other["p_perm"], diff.loc[diff["model_b"] == "B", "p_perm"])


def _correlated(rng, n: int, r: np.ndarray) -> np.ndarray:
    return rng.normal(size=(n, len(r))) @ np.linalg.cholesky(r).T


def test_permutation_null_finds_a_planted_difference():
    """L0H0 and L0H1 correlate at +0.9 in model a and -0.9 in b; nothing else differs."""
    rng = np.random.default_rng(0)
    base = np.eye(6)
    ra, rb = base.copy(), base.copy()
    ra[0, 1] = ra[1, 0] = 0.9
    rb[0, 1] = rb[1, 0] = -0.9
    xa, xb = _correlated(rng, 40, ra), _correlated(rng, 40, rb)
    _, diff, summary = interaction_tables(dla_rows({"a": xa, "b": xb}, [f"S{i}" for i in range(10)], 4), [("a", "b")],
                                          n_bootstrap=500, n_permutations=999, seed=1)
    planted = diff.iloc[0]
    assert (planted["component_a"], planted["component_b"]) == ("L0H0", "L0H1")
    assert planted["difference"] > 1.5 and planted["ci_low"] > 1.0
    assert planted["p_perm"] == pytest.approx(1 / 1000) and planted["significant"]
    assert planted["q_fdr"] <= 0.05
    assert summary.iloc[0]["n_significant"] == diff["significant"].sum() == 1


def test_permutation_null_without_a_difference():
    """Identical models: every p is 1. Models drawn from one distribution: p roughly uniform
    over many pairs and data sets, nothing passes BH."""
    rng = np.random.default_rng(3)
    structure = np.full((6, 6), 0.4) + 0.6 * np.eye(6)
    x = _correlated(rng, 30, structure)
    _, same, summary = interaction_tables(dla_rows({"a": x, "b": x.copy()}, [f"S{i}" for i in range(10)], 3),
                                          [("a", "b")], n_bootstrap=50, n_permutations=200, seed=0)
    assert (same["p_perm"] == 1.0).all() and (same["difference"] == 0).all() and not same["significant"].any()
    assert summary.iloc[0]["n_significant"] == 0
    p = []
    for k in range(30):
        xa, xb = _correlated(rng, 30, structure), _correlated(rng, 30, structure)
        _, diff, _ = interaction_tables(dla_rows({"a": xa, "b": xb}, [f"S{i}" for i in range(10)], 3), [("a", "b")],
                                        n_bootstrap=10, n_permutations=199, seed=k)
        assert not diff["significant"].any()
        p.extend(diff["p_perm"])
    p = np.asarray(p)  # 450 p values, 30 independent data sets
    assert kstest(p, "uniform").pvalue > 0.01
    assert 0.02 < (p <= 0.05).mean() < 0.09 and 0.42 < p.mean() < 0.58


def test_benjamini_hochberg_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5, np.nan])
    # sorted 0.005, 0.01, 0.03, 0.04, 0.5 (m = 5): p m / rank = 0.025, 0.025, 0.05, 0.05, 0.5,
    # then the running minimum from the top
    expected = np.array([0.025, 0.05, 0.05, 0.025, 0.5, np.nan])
    np.testing.assert_allclose(st.benjamini_hochberg(p), expected, atol=1e-15)
    assert np.isnan(st.benjamini_hochberg(np.array([np.nan]))).all()


def test_detection_limits_by_hand():
    lim = st.detection_limits(n_prompts=18, n_tests=190, fdr=0.05, n_permutations=1000, null_sd=0.2)
    z = norm.isf(0.05 / 380)
    assert z == pytest.approx(3.65, abs=0.01)
    assert lim["detectable_difference"] == pytest.approx(z * math.sqrt(2 / 17))
    assert lim["detectable_difference_null"] == pytest.approx(z * 0.2)
    assert lim["smallest_p"] == pytest.approx(1 / 1001)
    assert lim["min_discoveries"] == 4  # 190 / (0.05 x 1001) = 3.8
    assert st.detection_limits(30, 10, 0.05, 1000)["min_discoveries"] == 1
    grouped = st.detection_limits(12, 10, 0.05, 1000, n_groups=2)
    assert grouped["detectable_difference"] == pytest.approx(norm.isf(0.05 / 20) * math.sqrt(2 / 10))


def test_labelling_centring_correlates_within_labellings():
    """A component pair that only follows the labelling (sign flip) correlates at +1 pooled
    and as np.corrcoef of the data with each labelling's mean removed when centred."""
    rng = np.random.default_rng(2)
    x = rng.normal(scale=0.1, size=(12, 6))
    flip = np.repeat([1.0, -1.0, 1.0, -1.0], 3)
    x[:, 0] += 5 * flip
    x[:, 1] += 3 * flip
    x[:, 5] = 0.3 * flip  # only the labelling: constant once each labelling's mean is removed
    scenarios = ["S0", "S0_swapped", "S1", "S1_swapped"]
    full = dla_rows({"m": x, "n": x[::-1].copy()}, scenarios, 3)
    labellings = {s: "swapped" if s.endswith("_swapped") else "standard" for s in scenarios}
    pooled = interaction_tables(full, [("m", "n")], n_bootstrap=20, n_permutations=20)[0]
    corr, _, summary = interaction_tables(full, [("m", "n")], n_bootstrap=20, n_permutations=20, centring="labelling",
                                          labellings=labellings)
    assert pooled.iloc[0]["r"] > 0.99
    centred = x.copy()
    for sign in (1.0, -1.0):
        centred[flip == sign] -= centred[flip == sign].mean(0)
    centred[:, 5] = 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.corrcoef(centred.T)[np.triu_indices(6, 1)]
    assert np.isnan(expected).sum() == 5
    np.testing.assert_allclose(corr.loc[corr["model"] == "m", "r"], expected, atol=1e-12)
    assert summary.iloc[0]["constant_components"] == "m: L1_MLP; n: L1_MLP"
    assert summary.iloc[0]["n_groups"] == 2 and summary.iloc[0]["centring"] == "labelling"
    with pytest.raises(ValueError, match="centring"):
        interaction_tables(full, [], centring="scenario")


def test_models_with_other_prompts_are_refused():
    x = np.random.default_rng(0).normal(size=(6, 6))
    full = dla_rows({"a": x}, ["S0", "S1"], 3)
    other = dla_rows({"b": x}, ["S0", "S2"], 3)
    with pytest.raises(ValueError, match="model b has other prompts than a"):
        interaction_tables(pd.concat([full, other]), [("a", "b")])


def test_compared_pairs():
    models = ["base", "PT2", "De", "Ut", "GD"]
    roles = {"strategic": "PT2", "deontological": "De", "utilitarian": "Ut", "game_deontological": "GD",
             "base": "base"}
    experiments = {"x": {"source": "PT2", "target": "De"}, "y": {"source": "Ut", "target": "De"},
                   "z": {"source": "base", "target": "GD"}}
    assert compared_pairs(models, experiments, roles) == [["De", "Ut"], ["PT2", "De"], ["PT2", "Ut"], ["PT2", "GD"],
                                                          ["base", "GD"]]
    everything = compared_pairs(models, experiments, roles, "all")
    assert len(everything) == 10 and everything[:5] == compared_pairs(models, experiments, roles)
    assert compared_pairs(["PT2"], experiments, roles) == []


def test_figures(hand_built, tmp_path):
    from interp_lib.plots.interactions import cluster_order, draw_all

    _, _, (corr, diff, _) = hand_built
    out_models = [tmp_path / f"correlations_{m}.png" for m in "ABC"]
    out_pairs = [tmp_path / "differences_A_vs_B.png", tmp_path / "differences_A_vs_C.png"]
    draw_all(corr, diff, list("ABC"), [("A", "B"), ("A", "C")], out_models, out_pairs)
    assert all(p.stat().st_size > 10_000 for p in out_models + out_pairs)
    r, names = square(corr[corr["model"] == "C"], "r")
    order, _ = cluster_order(r)
    assert names[order[-1]] == "L0_MLP"  # the constant component goes last
    block = np.full((6, 6), -0.2) + 1.2 * np.eye(6)
    block[np.ix_([0, 2, 4], [0, 2, 4])] = 0.9
    np.fill_diagonal(block, 1.0)
    order, _ = cluster_order(block)
    where = sorted(order.index(i) for i in (0, 2, 4))
    assert where[2] - where[0] == 2  # the correlated block is contiguous


def test_rq_section_says_plainly_when_nothing_survives():
    from interp_lib.report.document import Document, to_markdown
    from interp_lib.report.inputs import Inputs
    from interp_lib.report.interactions import interactions_section

    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(12, 6)), rng.normal(size=(12, 6))
    full = dla_rows({"De": xa, "Ut": xb}, ["S0", "S1", "S2", "S3"], 3)
    corr, diff, summary = interaction_tables(full, [("De", "Ut")], n_bootstrap=50, n_permutations=99,
                                             labellings={"S1": "swapped", "S3": "swapped"})
    assert summary.iloc[0]["n_significant"] == 0 and summary.iloc[0]["n_labellings"] == 2
    paths = {}
    d = Path(tempfile.mkdtemp())
    for name, table in (("summary", summary), ("differences", diff)):
        paths[name] = d / f"{name}.csv"
        table.to_csv(paths[name], index=False)
    doc = Document()
    interactions_section(doc, Inputs(interactions_summary=str(paths["summary"]),
                                     interactions_differences=str(paths["differences"])),
                         {"deontological": "De", "utilitarian": "Ut"}, 5)
    text = to_markdown(doc)
    assert "No pair of components' correlation differs between them" in text
    assert "does not show that they are wired alike" in text
    assert "with 12 prompts only differences of about" in text
    assert "with 99 permutations at least 3 pairs must pass together" in text  # 15 / (0.05 x 100)
    assert "N = 12" in text
    assert "changes sign between the labellings" in text  # pooled over both labellings: the caveat
    doc = Document()
    interactions_section(doc, Inputs(interactions_summary=str(d / "absent.csv")), {}, 5)
    assert "does not exist" in to_markdown(doc)


def test_too_few_prompts_give_nan_and_say_so(tmp_path):
    from interp_lib.report.document import Document, to_markdown
    from interp_lib.report.inputs import Inputs
    from interp_lib.report.interactions import interactions_section

    x = np.random.default_rng(0).normal(size=(2, 6))
    corr, diff, summary = interaction_tables(dla_rows({"De": x, "Ut": x[::-1].copy()}, ["S0"], 2), [("De", "Ut")])
    assert corr["r"].isna().all() and diff["p_perm"].isna().all() and not diff["significant"].any()
    assert summary.iloc[0]["n_tested"] == 0
    summary.to_csv(tmp_path / "summary.csv", index=False)
    doc = Document()
    interactions_section(doc, Inputs(interactions_summary=str(tmp_path / "summary.csv")),
                         {"deontological": "De", "utilitarian": "Ut"}, 5)
    assert "No pair of components could be tested (too few prompts, 2" in to_markdown(doc)
