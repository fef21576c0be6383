"""Both real families through the workflow, each with its four committed counterbalanced
adapters: Gemma-3-270m (config.gemma3.yaml) end to end, target `all` with decision-position
patching and the Snakemake report; SmolLM2-135M-Instruct (config.smollm2.yaml) the main job
(cross_experiment_summary.csv), the behaviour tables and, with two other games added (CI_GAMES:
issue 28's reduced set), the transfer tables. For both, one all-position patching
job (PT2_to_PT3De x CC_continue, one prompt variant) in a second results directory. Slow tier;
a family is skipped where its packages are not installed.

What CI can afford on 2 cores within its hour (docs/measured.md: CI time per stage): the configs run on
two of their five scenarios, CC_continue and CD_punished (the counterfactuals' pair: one where
tit-for-tat cooperates, one where it defects), each with its swapped sibling, and the
counterfactuals' residual grids by AtP (`analysis.residual_patching: atp`; exact, a Gemma-3
grid takes 75-85 s a prompt, 6 prompts a family: docs/patching.md, Counterfactual patching). The full
configs' `all` is 163 jobs a family (385 before issue 26 grouped the tables and figures per
analysis); its runs behind the headlines are timed in docs/real-results.md. The exact residual
grid is checked against fresh patches on the embedded family (tests/test_counterfactual.py), and
the committed adapters' decisions on all five scenarios in the fast tier
(tests/test_rl_training.py). Path patching sweeps from 2 start layers (the configs' default is
4). Every rule runs on Gemma-3 but the adapter edits (issue 27), which
would add 16 model jobs (one per fine-tune and scenario, about 3 minutes of CI): they are checked
against PEFT merges on the embedded family (tests/test_adapter_edits.py, tests/test_workflow.py),
and their time on real weights is in docs/analyses.md (Adapter edits), and the model diffing
(issue 29), whose crosscoder alone would take some ten minutes of CI at the configs' size: it is
checked on the embedded family (tests/test_diffing_workflow.py), and its time on real weights is
in docs/diffing.md.

INTERP_TEST_<FAMILY>_WORKDIR=<dir> (SMOLLM2, GEMMA3) keeps a run there and reuses it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import BEHAVIOUR_TARGETS as TARGETS
from conftest import KNOWN_BEHAVIOUR_MISSES
from conftest import REAL_FAMILIES, REPO, snakemake, spearman_with_float_ties

pytestmark = pytest.mark.slow

ALLPOS_EXPERIMENT, ALLPOS_SCENARIO = "PT2_to_PT3De", "CC_continue"
CI_SCENARIOS = ("CC_continue", "CD_punished")
# issue 28's reduced set on SmolLM2 (its main job gains the transfer tables): two other games at
# the decision position, state CD; the Stag Hunt in both labellings
CI_GAMES = {
    "SH_CD": {"game": "stag_hunt", "self_last": "C", "opponent_last": "D", "counterbalance": True},
    "CH_CD": {"game": "chicken", "self_last": "C", "opponent_last": "D"},
}
GAME_FAMILIES = {"smollm2"}
TRANSFER_TARGETS = ["transfer/components.csv", "transfer/steering.csv", "transfer/probes.csv",
                    "transfer/circuits.csv"]
# family -> what CI runs of it: `all` and the report, or the main job and the behaviour tables
TARGETS_RUN = {"gemma3": "all", "smollm2": "main"}
MAIN_TARGETS = ["patching/cross_experiment_summary.csv", "behavior/decisions.csv"]
FAMILIES = {"smollm2": (30, 9), "gemma3": (18, 4)}  # family -> (layers, heads)
# SmolLM2's run converts its GGUF file through the workflow's convert_gguf rule; Gemma-3's
# reuses, where INTERP_TEST_GEMMA3 names one, the conversion that .ci/run's stage "real
# weights" made with the same code (interp_lib.model.gguf_convert; about a minute of CI).
REUSE_CONVERTED = {"gemma3"}
CI_PATH_STARTS = 2  # path patching's start layers: 0 and n_layers // 2


def n_components(family: str) -> int:
    layers, heads = FAMILIES[family]
    return layers * (heads + 1)


def family_configs(family: str, wd: Path) -> tuple[Path, Path]:
    """config.<family>.yaml on CI_SCENARIOS (and their siblings) with decision-position patching
    (adapters named by absolute path), and a one-experiment, one-scenario, one-variant,
    all-position variant with its own results_dir."""
    cfg = yaml.safe_load((REPO / f"config.{family}.yaml").read_text())
    converted = os.environ.get(f"INTERP_TEST_{family.upper()}")
    if family in REUSE_CONVERTED and converted and (Path(converted) / "source.json").is_file():
        (base,) = cfg.pop("gguf")
        cfg = yaml.safe_load(yaml.safe_dump(cfg, sort_keys=False).replace(base, str(Path(converted).resolve())))
    cfg["scenarios"] = {name: spec for name, spec in cfg["scenarios"].items() if name in CI_SCENARIOS}
    if family in GAME_FAMILIES:
        cfg["scenarios"].update(CI_GAMES)
    for spec in cfg["steering"].values():
        spec["direction"]["scenarios"] = [s for s in spec["direction"]["scenarios"] if s in CI_SCENARIOS]
    for spec in cfg["models"].values():
        if spec.get("adapter"):
            spec["adapter"] = str(REPO / spec["adapter"])
    # path patching from 2 start layers instead of the default 4 (CI's hour; module docstring)
    cfg["analysis"].update(patch_positions="decision", residual_patching="atp", path_patch_starts=CI_PATH_STARTS)
    cfg["adapter_edits"] = {**cfg.get("adapter_edits", {}), "enabled": False}  # module docstring
    cfg["diffing"] = {**cfg.get("diffing", {}), "enabled": False}  # module docstring
    main = wd / "config.decision.yaml"
    main.write_text(yaml.safe_dump(cfg, sort_keys=False))
    exp = cfg["experiments"][ALLPOS_EXPERIMENT]
    cfg["models"] = {m: cfg["models"][m] for m in (exp["source"], exp["target"])}
    cfg["experiments"] = {ALLPOS_EXPERIMENT: exp}
    cfg["roles"] = {role: m for role, m in cfg.get("roles", {}).items() if m in cfg["models"]}
    cfg["counterfactuals"], cfg["steering"] = {}, {}
    cfg["results_dir"] = "results_allpos"
    # path patching at every position (~1.3x the component sweep) runs in the decision-position jobs only
    cfg["analysis"].update(patch_positions="all", patch_scenarios=[ALLPOS_SCENARIO], path_patching=False)
    cfg["variants_per_scenario"] = 1  # one all-position job: ~110 s per prompt on SmolLM2
    allpos = wd / "config.allpos.yaml"
    allpos.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return main, allpos


@pytest.fixture(scope="module", params=list(FAMILIES))
def real_run(request, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """(family, workdir) of a finished run; results under <workdir>/results_<family>. A run of
    its own (not INTERP_TEST_<FAMILY>_WORKDIR's) is removed once its family's tests are done:
    SmolLM2's holds some 11 GB of caches, and pytest finishes one family before it starts the
    next, so the disk need not hold both."""
    family = request.param
    needs, hint, _ = REAL_FAMILIES[family]
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed ({hint})")
    reuse = os.environ.get(f"INTERP_TEST_{family.upper()}_WORKDIR")
    wd = Path(reuse) if reuse else tmp_path_factory.mktemp(f"{family}_workflow")
    wd.mkdir(parents=True, exist_ok=True)
    main, allpos = family_configs(family, wd)
    if TARGETS_RUN[family] == "all":
        snakemake(wd, "--cores", "2", "all", "--configfile", str(main))
        snakemake(wd, "--report", f"results_{family}/report.html", "--configfile", str(main))
    else:
        targets = MAIN_TARGETS + (TRANSFER_TARGETS if family in GAME_FAMILIES else [])
        snakemake(wd, "--cores", "2", *[f"results_{family}/{t}" for t in targets], "--configfile", str(main))
    target = f"results_allpos/patching/per/{ALLPOS_EXPERIMENT}/{ALLPOS_SCENARIO}/patches.csv"
    snakemake(wd, "--cores", "2", target, "--configfile", str(allpos))
    yield family, wd
    if not reuse:
        shutil.rmtree(wd, ignore_errors=True)


def test_the_committed_adapters_behave_as_trained_in_both_labellings(real_run):
    family, wd = real_run
    decisions = pd.read_csv(wd / f"results_{family}/behavior/decisions.csv")
    p = decisions.groupby(["model", "scenario"])["p_defect"].mean()
    for model, (defect, cooperate) in TARGETS.items():
        if (family, model) in KNOWN_BEHAVIOUR_MISSES:  # strict xfails of tests/test_rl_training.py
            continue
        defect, cooperate = defect & set(CI_SCENARIOS), cooperate & set(CI_SCENARIOS)
        for suffix in ("", "_swapped"):
            assert {s for s in defect if p[model, s + suffix] < 0.9} == set(), (family, p[model].to_dict())
            assert {s for s in cooperate if p[model, s + suffix] > 0.1} == set(), (family, p[model].to_dict())
    bias = pd.read_csv(wd / f"results_{family}/behavior/label_bias.csv")
    moral = bias[bias["model"].isin([m for m in TARGETS if (family, m) not in KNOWN_BEHAVIOUR_MISSES])
                 & bias["scenario"].isin(CI_SCENARIOS)]  # the games' (CI_GAMES) are test_transfer_on_real_weights
    assert len(moral) == len(moral["model"].unique()) * len(CI_SCENARIOS) and (moral["same_decision_share"] == 1.0).all()


def test_the_main_job_summarises_every_experiment_and_scenario(real_run):
    family, wd = real_run
    summary = pd.read_csv(wd / f"results_{family}/patching/cross_experiment_summary.csv")
    per = summary[summary["scenario"] != "ALL"]
    if family in GAME_FAMILIES:  # the games' scenarios are patched too (test_transfer_on_real_weights)
        games = {s for name, spec in CI_GAMES.items()
                 for s in (name, name + "_swapped")[:1 + bool(spec.get("counterbalance"))]}
        assert set(per["scenario"]) >= games
        per = per[~per["scenario"].isin(games)]
    assert sorted(per["experiment"].unique()) == ["PT2_to_PT3De", "PT2_to_PT3Ut", "PT3De_to_PT3Ut", "PT3Ut_to_PT3De"]
    assert set(per["scenario"]) == set(CI_SCENARIOS) | {s + "_swapped" for s in CI_SCENARIOS} and len(per) == 16
    assert (per["positions"] == "decision").all()
    assert (per["patches_run"] == 3 * n_components(family)).all()  # 3 variants x every component
    assert per["noise_floor"].notna().all() and (per["noise_floor"] < 1e-3).all()
    # Game vs Utilitarian: the source defects where the target cooperates, in every scenario,
    # so some component must carry a real effect (above 3x the noise floor) in each.
    ut = per[per["experiment"] == "PT2_to_PT3Ut"]
    assert (~ut["strongest_below_noise"].astype(bool)).all()


def needs_all(family: str) -> None:
    if TARGETS_RUN[family] != "all":
        pytest.skip(f"CI runs {family}'s main job only (module docstring)")


def test_the_report_and_rq_summary_are_written(real_run):
    family, wd = real_run
    needs_all(family)
    report = wd / f"results_{family}/report.html"
    assert report.stat().st_size > 100_000
    rq = (wd / f"results_{family}/rq_summary.md").read_text()
    assert "RQ1" in rq and "RQ2" in rq and "RQ3" in rq and "PT4 (Game + Deontological)" in rq


def test_one_all_position_job_patches_every_position(real_run):
    family, wd = real_run
    res = pd.read_csv(wd / f"results_allpos/patching/per/{ALLPOS_EXPERIMENT}/{ALLPOS_SCENARIO}/patches.csv")
    assert (res["positions"] == "all").all() and res["component"].nunique() == n_components(family)
    assert res["delta_change"].abs().max() > 3 * res["noise_floor"].max()


def test_path_patching_runs_in_every_patching_job(real_run):
    """Path patching on real weights (decision position): every range of CI's 2 starts (the
    default is 4) at 3 sites for 3 variants, a small noise floor, Game -> Utilitarian's full range of both
    block outputs above it; with `all` the table, figure and RQ-summary section."""
    family, wd = real_run
    layers, _ = FAMILIES[family]
    starts = [i * layers // CI_PATH_STARTS for i in range(CI_PATH_STARTS)]
    per = pd.read_csv(wd / f"results_{family}/patching/per/PT2_to_PT3Ut/CD_punished/path_patches.csv")
    assert len(per) == 3 * 3 * sum(layers - a for a in starts) and sorted(per["layer_from"].unique()) == starts
    assert (per["positions"] == "decision").all() and per["noise_floor"].max() < 1e-3
    full = per[(per["site"] == "both") & (per["layer_from"] == 0) & (per["layer_to"] == layers - 1)]
    assert (~full["below_noise"].astype(bool)).all()
    assert (full["patched_delta"] - full["source_delta"]).abs().max() < 1e-3  # every block output: the source
    assert ((per["saturation_layer"] >= per["layer_from"]) & (per["saturation_layer"] < layers)).all()
    if TARGETS_RUN[family] == "all":
        sat = pd.read_csv(wd / f"results_{family}/patching/path_patching_saturation.csv")
        assert len(sat) == 4 * 2 * len(CI_SCENARIOS) * 3 * CI_PATH_STARTS  # experiments x scenarios x sites x starts
        assert (wd / f"results_{family}/patching/path_patching_PT2_to_PT3Ut.png").stat().st_size > 10_000
        assert "## Path patching: where the effect saturates" in (wd / f"results_{family}/rq_summary.md").read_text()


def test_steering_counterfactuals_and_probes(real_run):
    """Steering: alpha = 0 reproduces the cached delta. Counterfactual: PT4 (tit-for-tat) sees
    only the opponent's move change between CC_continue and CD_punished, and its decision
    follows it. Probes: PT4 writes the opponent's digit, so the token it writes is readable at
    its last layer in a held-out scenario (leave-one-scenario-out). Its decision over both
    labellings is not asserted: with CI's two scenarios that probe falls back to stratified
    k-fold, whose folds share scenarios, so it would read the scenario; over all five held out
    it is not readable (docs/real-results.md: probes on the counterbalanced adapters)."""
    family, wd = real_run
    needs_all(family)
    results = wd / f"results_{family}"
    name = "PT3De_minus_PT2_on_PT2"
    table = pd.concat([pd.read_csv(path) for path in (results / f"steering/per/{name}").glob("*.csv")])
    zero = table[table["alpha"] == 0.0]
    assert len(zero) > 0 and (zero["delta"] - zero["baseline_delta"]).abs().max() < 1e-3
    probes = pd.read_csv(results / "probes/probe_accuracy.csv")
    layers, _ = FAMILIES[family]
    last = probes[(probes["layer"] == layers - 1) & (probes["model"] == "PT4_COREDe")].set_index("target")
    assert last.loc["action_token", "cv"] == "leave-one-scenario-out"
    assert last.loc["action_token", "accuracy"] >= 0.9 > last.loc["action_token", "chance"]
    assert last.loc["decision_both_labellings", "cv"] == "stratified k-fold"  # see the docstring
    # tit-for-tat: the opponent's last move alone flips PT4's decision, and (by AtP here, see
    # the module docstring) the residual stream at the positions that differ carries it
    cf = pd.read_csv(results / "counterfactual/per/opponent_move_PT4/residual_patches.csv")
    assert set(cf["variant"]) == {1, 2, 3} and cf["delta_change"].isna().all()
    assert cf["atp_delta_change"].abs().max() > 1.0


def test_transfer_on_real_weights(real_run):
    """Issue 28's reduced set (CI_GAMES on SmolLM2): every transfer table has the two games'
    contexts, each patching Spearman equals scipy's on the per-scenario patch tables (the
    games' state CD against the IPD's CD_punished pair), the probes are fitted on the IPD's 12
    prompts (two counterbalanced states) and the IPD circuit was patched in every experiment and
    patched scenario."""

    family, wd = real_run
    if family not in GAME_FAMILIES:
        pytest.skip(f"CI runs the games on {', '.join(sorted(GAME_FAMILIES))} only (module docstring)")
    res = wd / f"results_{family}"
    components = pd.read_csv(res / "transfer/components.csv")
    assert set(components["context"]) == {"stag_hunt", "chicken"}
    assert set(components["analysis"]) == {"patching", "dla"}
    contexts = {"SH_CD": "stag_hunt", "SH_CD_swapped": "stag_hunt", "CH_CD": "chicken"}
    for experiment, g in components[components["analysis"] == "patching"].groupby("experiment"):
        patches = pd.concat([pd.read_csv(f) for f in (res / "patching/per" / experiment).glob("*/patches.csv")])
        patches = patches[patches["scenario"].isin(["CD_punished", "CD_punished_swapped", *contexts])]
        means = patches.groupby([patches["scenario"].map(lambda s: contexts.get(s, "ipd")), "component"])[
            "delta_change"].mean()
        for row in g.itertuples():
            comps = means["ipd"].index
            assert row.spearman == pytest.approx(spearman_with_float_ties(means["ipd"][comps], means[row.context][comps]),
                                                 abs=1e-9)
            assert row.n_components == n_components(family)
            assert row.reference_states == "CD"
    probes = pd.read_csv(res / "transfer/probes.csv")
    assert (probes["n_train"] == 12).all() and set(probes["context"]) == {"stag_hunt", "chicken"}
    patched = [*(f"{s}{x}" for s in CI_SCENARIOS for x in ("", "_swapped")), "SH_CD", "SH_CD_swapped", "CH_CD"]
    with_circuit = set()
    for experiment in components["experiment"].unique():
        rows = {s: len(pd.read_csv(res / f"transfer/circuits/per/{experiment}/{s}.csv")) for s in patched}
        # one row per variant, or none at all where no IPD circuit flipped (source and target agree)
        assert set(rows.values()) in ({3}, {0}), (experiment, rows)
        with_circuit |= {experiment} if rows[patched[0]] else set()
    assert "PT2_to_PT3Ut" in with_circuit  # the Game model defects where the utilitarian one cooperates
    circuits = pd.read_csv(res / "transfer/circuits.csv")
    assert set(circuits["context"]) == {"ipd", "stag_hunt", "chicken"}
    steering = pd.read_csv(res / "transfer/steering.csv")
    assert set(steering["context"]) == {"ipd", "stag_hunt", "chicken"}
