"""Mechanism transfer in the workflow (issue 28 item 4) on the embedded family: the default
workflow's directory, copied, with a counterbalanced Stag Hunt scenario and a Chicken one added
(the embedded vocabulary holds every word of the table format in any game). Each table of
transfer/ against a direct recomputation from the per-job files, the caches and a naive
forward pass; the RQ4 section; IPD-only configs schedule no transfer job."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import dry_run_jobs, rule_counts, snakemake, spearman_with_float_ties

EXPERIMENTS = ["PT2_to_PT3De", "PT2_to_PT3Ut", "PT3De_to_PT3Ut", "PT3Ut_to_PT3De"]
GAMES = {
    "SH_CD": {"game": "stag_hunt", "self_last": "C", "opponent_last": "D", "counterbalance": True,
              "description": "Stag hunt: the model hunted stag alone last round."},
    "CH_CD": {"game": "chicken", "self_last": "C", "opponent_last": "D",
              "description": "Chicken: the model swerved, the opponent did not."},
}
CONTEXT = {"SH_CD": "stag_hunt", "SH_CD_swapped": "stag_hunt", "CH_CD": "chicken"}
OUTPUTS = ["transfer/components.csv", "transfer/steering.csv", "transfer/probes.csv", "transfer/circuits.csv",
           "transfer/transfer.png", "rq_summary.md"]


def test_an_ipd_only_config_schedules_no_transfer_job(workflow_dir):
    assert not (workflow_dir / "results/transfer").exists()
    jobs = dry_run_jobs(workflow_dir, "-F", "all")
    assert not [r for r, _ in jobs if "transfer" in r]


@pytest.fixture(scope="module")
def games_dir(workflow_dir, tmp_path_factory):
    wd = tmp_path_factory.mktemp("games")
    shutil.copytree(workflow_dir, wd, dirs_exist_ok=True, symlinks=True)
    (wd / "games.yaml").write_text(yaml.safe_dump({"scenarios": GAMES}))
    jobs = dry_run_jobs(wd, *[f"results/{o}" for o in OUTPUTS], "--configfile", "config.yaml", "games.yaml")
    counts = rule_counts(jobs)
    # the IPD circuit on every patched scenario (6 IPD + 3 new) of each experiment; probes per model
    assert counts["circuit_transfer_scenario"] == 4 * 9 and counts["probe_transfer_model"] == 5
    assert counts["patch_scenario"] == 4 * 3 and counts["cache_activations"] == 5 * 3
    snakemake(wd, "--cores", "2", *[f"results/{o}" for o in OUTPUTS], "--configfile", "config.yaml", "games.yaml")
    return wd


def _patches(res, experiment):
    return pd.concat([pd.read_csv(f) for f in sorted((res / "patching/per" / experiment).glob("*/patches.csv"))])


def test_component_transfer_equals_scipy_on_the_patch_and_dla_tables(games_dir):
    res = games_dir / "results"
    table = pd.read_csv(res / "transfer/components.csv")
    assert set(table["context"]) == {"stag_hunt", "chicken"}
    assert len(table) == 2 * len(EXPERIMENTS) * 2  # (patching, DLA) x experiments x contexts
    cfg = yaml.safe_load((games_dir / "config.yaml").read_text())
    from interp_lib.analyses.transfer import verdict

    for experiment in EXPERIMENTS:
        # both games are played in state CD: the IPD's CD prompts are their reference
        patches = _patches(res, experiment)
        patches = patches[patches["scenario"].isin(["CD_punished", "CD_punished_swapped", *CONTEXT])]
        ctx = patches["scenario"].map(lambda s: CONTEXT.get(s, "ipd"))
        means = patches.groupby([ctx, "component"])["delta_change"].mean()
        src, tgt = cfg["experiments"][experiment]["source"], cfg["experiments"][experiment]["target"]
        dla = {m: pd.concat([pd.read_csv(res / f"dla/per/{m}/{s}.csv") for s in patches["scenario"].unique()])
               for m in (src, tgt)}
        keys = ["scenario", "variant", "component"]
        heads = {m: d[d["kind"] != "embed"].set_index(keys)["contribution"] for m, d in dla.items()}
        change = (heads[src] - heads[tgt]).reset_index()
        dctx = change["scenario"].map(lambda s: CONTEXT.get(s, "ipd"))
        dla_means = change.groupby([dctx, "component"])["contribution"].mean()
        for analysis, m in (("patching", means), ("dla", dla_means)):
            for context in ("stag_hunt", "chicken"):
                row = table[(table["experiment"] == experiment) & (table["analysis"] == analysis)
                            & (table["context"] == context)].iloc[0]
                comps = m["ipd"].index
                expected = spearman_with_float_ties(m["ipd"][comps], m[context][comps])
                assert row["spearman"] == pytest.approx(expected, abs=1e-9), (experiment, analysis, context)
                assert row["reference_states"] == "CD" and row["n_prompts_ipd"] == 6
                assert row["n_prompts_context"] == (6 if context == "stag_hunt" else 3)
                assert row["ci_low"] <= row["spearman"] <= row["ci_high"] or context == "chicken"
                assert row["verdict"] == verdict(row["ci_low"], row["ci_high"], row["noise_ceiling"], row["null_band"])
    chicken = table[table["context"] == "chicken"]
    assert (chicken["verdict"] == "too few prompts").all()  # 3 prompts: no interval


def test_probe_transfer_equals_a_direct_sklearn_fit_on_the_caches(games_dir):
    from interp_lib.analyses.probes import make_probe
    from interp_lib.cache.decision_activations import read_decision_activations

    res = games_dir / "results"
    table = pd.read_csv(res / "transfer/probes.csv")
    model = "PT4_COREDe"
    ipd = ["CC_continue", "CC_temptation", "CD_punished", "CD_punished_swapped", "DC_exploited", "DD_trapped"]
    train = read_decision_activations({s: res / f"cache/{model}/{s}.h5" for s in ipd}, "resid_post")
    test = read_decision_activations({s: res / f"cache/{model}/{s}.h5" for s in ("SH_CD", "SH_CD_swapped")},
                                     "resid_post")
    y_train = (train.delta > 0).astype(int)
    for layer in (0, 3):
        row = table[(table["model"] == model) & (table["context"] == "stag_hunt") & (table["layer"] == layer)].iloc[0]
        assert row["n_train"] == 18 and row["n_test"] == 6  # both labellings
        if len(set(y_train)) < 2:
            assert np.isnan(row["accuracy"])
            continue
        probe = make_probe().fit(train.acts[:, layer], y_train)
        expected = (probe.predict(test.acts[:, layer]) == (test.delta > 0)).mean()
        assert row["accuracy"] == pytest.approx(expected)


def test_the_ipd_circuit_patched_in_stag_hunt_equals_a_naive_forward_pass(games_dir):
    from interp_lib.cache import CacheFile
    from interp_lib.jobs.circuit_transfer import ipd_circuit
    from interp_lib.model.loading import load_hooked
    from interp_lib.patching import Component, PromptActivations, load_W_O
    from interp_lib.reference import naive_set_patched_delta

    res = games_dir / "results"
    summary = pd.read_csv(res / "transfer/circuits.csv")
    assert set(summary["context"]) == {"ipd", "stag_hunt", "chicken"}
    assert summary.loc[summary["context"] == "ipd", "in_sample"].all()
    experiment, source, target = "PT2_to_PT3De", "PT2_COREDe", "PT3_COREDe"
    ipd = ["CC_continue", "CC_temptation", "CD_punished", "CD_punished_swapped", "DC_exploited", "DD_trapped"]
    circuits = pd.concat([pd.read_csv(res / f"patching/per/{experiment}/{s}/circuits.csv") for s in ipd])
    members, support = ipd_circuit(circuits)
    per = pd.read_csv(res / f"transfer/circuits/per/{experiment}/SH_CD.csv")
    assert len(per) == 3 and (per["circuit"] == ";".join(members)).all()
    assert per["circuit_support"].iloc[0] == pytest.approx(support)
    hooked = load_hooked(res / "models" / target, "float32", "cpu", target)
    W_O = load_W_O(res / "models" / source, hooked.n_layers, hooked.n_heads, hooked.cfg.d_head)
    with CacheFile(res / f"cache/{source}/SH_CD.h5") as s_file, CacheFile(res / f"cache/{target}/SH_CD.h5") as t_file:
        for row in per.itertuples():
            src = PromptActivations.from_cache(s_file[row.variant], "cpu", torch.float32, torch.float32)
            ids = torch.as_tensor(t_file[row.variant]["input_ids"])[None]
            expected = naive_set_patched_delta(hooked, ids, src, W_O, [Component.parse(m) for m in members], "all",
                                               t_file.action_tokens(row.variant))
            assert abs(row.patched_delta - expected) < 1e-4
            gap = (row.patched_delta - row.baseline_delta) / (row.source_delta - row.baseline_delta)
            assert row.gap_recovered == pytest.approx(gap)
    sh = summary[(summary["experiment"] == experiment) & (summary["context"] == "stag_hunt")].iloc[0]
    both = pd.concat([per, pd.read_csv(res / f"transfer/circuits/per/{experiment}/SH_CD_swapped.csv")])
    live = both[~both["same_action"]]
    assert sh["n_to_flip"] == len(live)
    if len(live):
        assert sh["flip_share"] == pytest.approx(live["flipped"].mean())


def test_steering_transfer_and_the_rq4_section(games_dir):
    from interp_lib.steering.summary import layer_ranking

    res = games_dir / "results"
    steering = pd.read_csv(res / "transfer/steering.csv")
    name = "PT4_decision_on_PT4"
    per = pd.read_csv(res / f"steering/per/{name}/SH_CD.csv")
    expected = layer_ranking(pd.concat([per, pd.read_csv(res / f"steering/per/{name}/SH_CD_swapped.csv")]))
    got = steering[(steering["steering"] == name) & (steering["context"] == "stag_hunt")]
    assert np.allclose(got["effect"].to_numpy(), expected["effect"].to_numpy())
    assert set(steering["context"]) == {"ipd", "stag_hunt", "chicken"}
    text = (res / "rq_summary.md").read_text()
    assert "## RQ4: does what fine-tuning changed in the IPD carry the decision" in text
    assert "left out of the DLA and patching tables of RQ1-RQ3: CH_CD, SH_CD, SH_CD_swapped." in text
    assert (res / "transfer/transfer.png").stat().st_size > 10_000
