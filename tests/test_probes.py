"""Linear probes: accuracy on synthetic features with a planted linear signal, the
cross-validation schemes (swapped siblings kept together, the stratified k-fold
fallback, no probe for one class), the features read from a real cache of a tiny random
Gemma-2, and the figure."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from test_hooked import tiny_gemma2

from interp_lib.cache import CacheError, collect_variant, file_attrs, write_cache
from interp_lib.model.hooked import HookedModel
from interp_lib.analyses.probes import (
    COLUMNS,
    KFOLD,
    LOSO,
    ONE_CLASS,
    TOO_FEW,
    ProbeData,
    cv_splits,
    probe_accuracy,
    probe_features,
    probe_table,
    probe_targets,
    prompt_groups,
)


def meta_of(scenarios, opponent_last="C"):
    """scenario_meta: a name ending in _swapped is the swapped sibling of the name without it."""
    meta = {}
    for s in scenarios:
        swapped = s.endswith("_swapped")
        meta[s] = {"opponent_last": opponent_last if isinstance(opponent_last, str) else opponent_last[s],
                   "labelling": "swapped" if swapped else "standard",
                   "group": s.removesuffix("_swapped")}
    return meta


def synthetic(y, scenarios, d=16, layers=4, planted=(), strength=3.0, seed=0, labelling=None):
    """ProbeData of labels y [n] (1 = Defect): noise, plus +-strength along one direction at
    the `planted` layers."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    X = rng.normal(size=(len(y), layers, d)).astype(np.float32)
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    for layer in planted:
        X[:, layer] += (strength * (2 * y[:, None] - 1) * u).astype(np.float32)
    delta = np.where(y == 1, 1.0, -1.0) * rng.uniform(0.1, 2.0, len(y))
    scenarios = np.asarray(scenarios, dtype=object)
    if labelling is None:
        labelling = np.where([s.endswith("_swapped") for s in scenarios], "swapped", "standard").astype(object)
    return ProbeData(X, scenarios, np.arange(len(y)) % 8 + 1, labelling, delta)


def test_planted_signal_is_found_and_noise_stays_at_chance():
    # 6 scenarios x 8 variants, classes balanced in every scenario: leave-one-scenario-out
    # applies. Seed 3 (chosen once): the noise layers score 28 and 25 of 48, at least 3
    # predictions inside the interval's edges; the planted layers 48 of 48.
    n_scen, n_var = 6, 8
    scenarios = np.repeat([f"S{i}" for i in range(n_scen)], n_var)
    y = np.tile(np.arange(n_var) % 2, n_scen)
    data = synthetic(y, scenarios, planted=(1, 3), seed=3)
    meta = meta_of([f"S{i}" for i in range(n_scen)], opponent_last={f"S{i}": "CD"[i % 2] for i in range(n_scen)})
    df = probe_accuracy(data, meta, "m")
    assert list(df.columns) == COLUMNS
    assert set(df["target"]) == {"decision", "opponent_last"}  # one labelling: no action_token
    dec = df[df["target"] == "decision"].set_index("layer")
    assert (dec["cv"] == LOSO).all() and (dec["n_folds"] == n_scen).all()
    assert (dec["site"] == "resid_post").all() and (dec["n_prompts"] == 48).all() and (dec["n_positive"] == 24).all()
    assert (dec["chance"] == 0.5).all()
    assert (dec.loc[[1, 3], "accuracy"] >= 0.9).all()
    for layer in (0, 2):
        assert dec.loc[layer, "ci_low"] <= 0.5 <= dec.loc[layer, "ci_high"], dec.loc[layer]
    assert (dec["ci_low"] <= dec["accuracy"]).all() and (dec["accuracy"] <= dec["ci_high"]).all()


def test_one_class_has_no_probe_but_a_chance_level():
    scenarios = np.repeat(["A", "B", "C"], 4)
    data = synthetic(np.tile([0, 1], 6), scenarios)
    df = probe_accuracy(data, meta_of(["A", "B", "C"], opponent_last="C"), "m")
    opp = df[df["target"] == "opponent_last"]
    assert len(opp) == 4 and opp["accuracy"].isna().all() and opp["ci_low"].isna().all()
    assert (opp["cv"] == ONE_CLASS).all() and (opp["chance"] == 1.0).all() and (opp["n_folds"] == 0).all()
    assert (opp["n_positive"] == 0).all()


def test_swapped_sibling_is_never_split_from_its_scenario():
    names = ["CC_continue", "CD_punished", "CD_punished_swapped", "DD_trapped"]
    scenarios = np.repeat(names, 4)
    data = synthetic(np.tile([0, 1], 8), scenarios)
    meta = meta_of(names)
    groups = prompt_groups(data, meta)
    assert set(groups[np.isin(scenarios, ["CD_punished", "CD_punished_swapped"])]) == {"CD_punished"}
    targets = probe_targets(data, meta)
    assert set(targets) == {"decision", "opponent_last", "decision_both_labellings", "action_token"}
    swapped = scenarios == "CD_punished_swapped"
    every, token = targets["action_token"]
    _, defect = targets["decision_both_labellings"]
    assert np.array_equal(every, np.arange(16)) and np.array_equal(token, np.where(swapped, 1 - defect, defect))
    standard, decision = targets["decision"]
    assert np.array_equal(standard, np.flatnonzero(~swapped))  # one labelling: the standard prompts
    assert np.array_equal(decision, defect[~swapped])
    scheme, splits = cv_splits(token, groups)
    assert scheme == LOSO and len(splits) == 3
    pair = np.flatnonzero(np.isin(scenarios, ["CD_punished", "CD_punished_swapped"]))
    for train, test in splits:
        assert np.isin(pair, test).all() or not np.isin(pair, test).any()
        assert not np.isin(pair, train).any() or np.isin(pair, train).all()
        assert len(set(train) | set(test)) == len(scenarios) and not set(train) & set(test)
    df = probe_accuracy(data, meta, "m")
    assert (df.loc[df["target"] == "action_token", "n_folds"] == 3).all()


def test_a_one_class_training_fold_falls_back_to_stratified_kfold():
    # only scenario S0 defects: leaving it out would train on Cooperate alone
    scenarios = np.repeat(["S0", "S1", "S2"], 8)
    y = (scenarios == "S0").astype(int)
    groups = np.asarray(scenarios, dtype=object)
    scheme, splits = cv_splits(y, groups, seed=0)
    assert scheme == KFOLD and len(splits) == 5  # min(5, 8 minority prompts)
    assert sorted(np.concatenate([test for _, test in splits])) == list(range(24))
    assert all(set(y[train]) == {0, 1} for train, _ in splits)
    y3 = y.copy()
    y3[3:8] = 0  # 3 Defect prompts: 3 folds
    assert cv_splits(y3, groups)[0] == KFOLD and len(cv_splits(y3, groups)[1]) == 3
    y1 = np.zeros(24, int)
    y1[0] = 1
    assert cv_splits(y1, groups) == (TOO_FEW, [])
    df = probe_accuracy(synthetic(y, scenarios, planted=(2,)), meta_of(["S0", "S1", "S2"]), "m")
    dec = df[df["target"] == "decision"]
    assert (dec["cv"] == KFOLD).all() and (dec["n_folds"] == 5).all() and dec["accuracy"].notna().all()
    assert dec["chance"].iloc[0] == pytest.approx(16 / 24)
    one = probe_accuracy(synthetic(y1, scenarios), meta_of(["S0", "S1", "S2"]), "m")
    one = one[one["target"] == "decision"]
    assert one["accuracy"].isna().all() and (one["cv"] == TOO_FEW).all()
    assert one["chance"].iloc[0] == pytest.approx(23 / 24)


def test_probe_table_keeps_the_order_and_checks_columns():
    frames = [pd.DataFrame({c: [i] for c in COLUMNS}) for i in (2, 0, 1)]
    assert probe_table(frames)["model"].tolist() == [2, 0, 1]
    assert list(probe_table([]).columns) == COLUMNS
    with pytest.raises(ValueError, match="missing columns accuracy"):
        probe_table([frames[0].drop(columns="accuracy")])


def write_tiny_cache(path, hooked, scenario, labelling, lengths, seed):
    tokens = {"C": 5, "D": 7} if labelling == "standard" else {"C": 7, "D": 5}  # swapped: action1 = Defect
    variants = {}
    gen = torch.Generator().manual_seed(seed)
    for v, T in enumerate(lengths, start=1):
        data = collect_variant(hooked, torch.randint(0, 97, (1, T), generator=gen), tokens)
        data["attrs"].update(prompt=f"p{v}", labelling=labelling, token_C=tokens["C"], token_D=tokens["D"])
        variants[v] = data
    write_cache(path, file_attrs(hooked, "m", scenario, "fp", "th", {**tokens, "prefix": [3]}),
                {"W_U_actions": np.zeros((2, 64), np.float32), "ln_final_gain": np.ones(64, np.float32)}, variants)


def test_features_are_the_cached_resid_post_at_the_decision_position(tmp_path):
    hooked = HookedModel(tiny_gemma2())
    paths = {"A": tmp_path / "A.h5", "A_swapped": tmp_path / "A_swapped.h5"}
    write_tiny_cache(paths["A"], hooked, "A", "standard", [20, 23, 17], seed=0)
    write_tiny_cache(paths["A_swapped"], hooked, "A_swapped", "swapped", [21, 18], seed=1)
    data = probe_features({k: str(p) for k, p in paths.items()}, fingerprint="fp")
    assert data.acts.shape == (5, 4, 64) and data.acts.dtype == np.float32
    assert data.scenario.tolist() == ["A"] * 3 + ["A_swapped"] * 2
    assert data.variant.tolist() == [1, 2, 3, 1, 2]
    assert data.labelling.tolist() == ["standard"] * 3 + ["swapped"] * 2
    i = 0
    for path in paths.values():
        with h5py.File(path, "r") as f:
            for v in sorted(int(k) for k in f if k.isdigit()):
                g = f[str(v)]
                pos = int(g.attrs["decision_position"])
                assert pos == g["input_ids"].shape[0] - 1
                assert np.array_equal(data.acts[i], g["resid_post"][()][:, pos, :])
                assert data.delta[i] == g.attrs["delta"]
                i += 1
    targets = probe_targets(data, meta_of(["A", "A_swapped"], opponent_last="D"))
    index, decision = targets["decision"]
    assert np.array_equal(decision, (data.delta[index] > 0).astype(int))
    assert targets["opponent_last"][1].tolist() == [1] * len(index)
    with pytest.raises(ValueError, match="config says labelling 'standard', its cache holds"):
        probe_targets(data, {**meta_of(["A"]), "A_swapped": {"opponent_last": "C", "group": "A"}})
    with pytest.raises(CacheError, match="fingerprint mismatch"):
        probe_features({"A": str(paths["A"])}, fingerprint="other")


def test_the_figure_is_drawn(tmp_path):
    from interp_lib.plots.probes import plot_probe_accuracy
    from interp_lib.style import ModelStyle

    rng = np.random.default_rng(0)
    rows = []
    for m, model in enumerate(["base", "tuned"]):
        for target in ("decision", "opponent_last", "action_token"):
            one_class = model == "base" and target == "decision"
            for layer in range(8):
                acc = np.nan if one_class else float(np.clip(0.5 + 0.06 * layer * (m + 1) + rng.normal(0, 0.03), 0, 1))
                rows.append({"model": model, "target": target, "layer": layer, "site": "resid_post",
                             "accuracy": acc, "ci_low": acc - 0.12, "ci_high": min(1.0, acc + 0.1),
                             "chance": 1.0 if one_class else 0.5 + 0.1 * m, "cv_baseline": np.nan if one_class else 0.3,
                             "n_prompts": 30,
                             "n_positive": 0 if one_class else 15 - 3 * m,
                             "cv": ONE_CLASS if one_class else LOSO, "n_folds": 0 if one_class else 5})
    out = tmp_path / "probe_accuracy.png"
    plot_probe_accuracy(pd.DataFrame(rows), out, ModelStyle.from_names(["base", "tuned"], {"tuned": "Tuned (PT3)"}))
    assert out.stat().st_size > 10_000
