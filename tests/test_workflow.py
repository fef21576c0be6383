"""The workflow's artifacts on the embedded family: prompts, merged models, caches, the
behaviour table, and incremental scheduling."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from conftest import copy_tree, dry_run_jobs, rule_counts
from interp_lib.cache import CacheFile
from interp_lib.model.loading import load_base_model, read_fingerprint, state_fingerprint

MODELS = ["base", "PT2_COREDe", "PT3_COREDe", "PT3_COREUt", "PT4_COREDe"]
SCENARIOS = ["CC_continue", "CC_temptation", "CD_punished", "DC_exploited", "DD_trapped"]
# config.yaml counterbalances CD_punished: its swapped-label sibling is a scenario of its own
ALL_SCENARIOS = [*SCENARIOS[:3], "CD_punished_swapped", *SCENARIOS[3:]]
N = len(ALL_SCENARIOS)


def test_prompt_dataset(workflow_dir):
    records = json.loads((workflow_dir / "results/prompts/ipd_eval_prompts.json").read_text())
    assert len(records) == 3 * N
    assert [r["scenario"] for r in records[::3]] == ALL_SCENARIOS
    assert len({r["prompt"] for r in records}) == 3 * N
    for r in records:
        assert set(r) == {"scenario", "variant", "prompt", "chat_prompt", "description", "n_tokens", "template",
                          "labelling", "game", "format", "preprompt", "symbols"}  # the last four: issue 28
        assert (r["game"], r["format"], r["preprompt"], r["symbols"]) == ("ipd", "table", None, ["action1", "action2"])
        assert r["labelling"] == ("swapped" if r["scenario"] == "CD_punished_swapped" else "standard")
        assert r["template"] == 0
        assert r["chat_prompt"].count("<bos>") == 1 and r["chat_prompt"].startswith("<bos><start_of_turn>user\n")
        assert r["chat_prompt"].endswith("<start_of_turn>model\n")
        assert "Your answer:" in r["prompt"]
    # the sibling's variant k is variant k of CD_punished with the labels exchanged
    punished = {r["variant"]: r["prompt"] for r in records if r["scenario"] == "CD_punished"}
    for r in records:
        if r["scenario"] == "CD_punished_swapped":
            assert r["prompt"].split("\n")[0] == punished[r["variant"]].split("\n")[0]
            assert r["prompt"] != punished[r["variant"]]
    temptation = [r for r in records if r["scenario"] == "CC_temptation"]
    assert all("you would have gotten 4 points instead of 3" in r["prompt"] for r in temptation)


def test_merged_models_are_fingerprinted_and_differ(workflow_dir):
    weights = {}
    for m in MODELS:
        d = workflow_dir / "results/models" / m
        model = load_base_model(str(d), "float32", "cpu", m)
        assert state_fingerprint(model) == read_fingerprint(d)["fingerprint"]
        weights[m] = dict(model.named_parameters())
    for m in MODELS[1:]:
        changed = [n for n, p in weights[m].items() if not torch.equal(p, weights["base"][n])]
        assert any("o_proj" in n for n in changed) and any("down_proj" in n for n in changed), m
        assert not any("norm" in n or "embed" in n for n in changed), m  # LoRA touches linear layers only


def test_caches_hold_consistent_activations(workflow_dir):
    from transformers import AutoModelForCausalLM

    records = json.loads((workflow_dir / "results/prompts/ipd_eval_prompts.json").read_text())
    n_tokens = {(r["scenario"], r["variant"]): r["n_tokens"] for r in records}
    for m in ("base", "PT2_COREDe"):
        d = workflow_dir / "results/models" / m
        hf = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager").eval()
        for s in ALL_SCENARIOS:
            with CacheFile(workflow_dir / f"results/cache/{m}/{s}.h5", fingerprint=read_fingerprint(d)["fingerprint"]) as c:
                assert c.attrs["model"] == m and c.attrs["scenario"] == s and c.variants == [1, 2, 3]
                for v in c.variants:
                    g = c[v]
                    ids = torch.as_tensor(g["input_ids"])[None]
                    assert ids.shape[1] == n_tokens[(s, v)]
                    with torch.no_grad():
                        logits = hf(ids).logits[0, -1]
                    C, D = c.action_tokens(v)["C"], c.action_tokens(v)["D"]
                    # the Defect token is action2's in the standard labelling, action1's in the swapped one
                    standard = (int(c.attrs["token_C"]), int(c.attrs["token_D"]))
                    assert (C, D) == (standard if s != "CD_punished_swapped" else standard[::-1])
                    assert abs(float(logits[D] - logits[C]) - g.attrs["delta"]) < 1e-5
                    assert np.abs(g["decision_logits"] - logits.numpy()).max() < 1e-5
                    total = g["resid_pre"] + g["attn_out"] + g["mlp_out"]
                    assert np.abs(g["resid_post"] - total).max() < 1e-5
                    pos = g.attrs["decision_position"]
                    assert pos == ids.shape[1] - 1
                    heads = g["head_out_decision"]  # [L, H, d]
                    assert np.abs(heads.sum(1) - g["attn_out"][:, pos]).max() < 1e-5
                    assert g["z"].shape == (c.attrs["n_layers"], ids.shape[1], c.attrs["n_heads"], c.attrs["d_head"])


def test_decisions_table(workflow_dir):
    df = pd.read_csv(workflow_dir / "results/behavior/decisions.csv")
    assert list(df.columns) == ["model", "scenario", "variant", "labelling", "template", "delta", "p_defect",
                                "p_action2", "action"]
    assert len(df) == 5 * 3 * N and set(df["model"]) == set(MODELS)
    assert np.allclose(df["p_defect"], 1 / (1 + np.exp(-df["delta"])))
    swapped = df["labelling"] == "swapped"
    assert swapped.sum() == 15 and (df.loc[swapped, "scenario"] == "CD_punished_swapped").all()
    assert np.allclose(df["p_action2"], np.where(swapped, 1 - df["p_defect"], df["p_defect"]))
    assert ((df["delta"] > 0) == (df["action"] == "D")).all()
    # the behaviour table agrees with the caches' own logits
    for row in df.sample(5, random_state=0).itertuples():
        with CacheFile(workflow_dir / f"results/cache/{row.model}/{row.scenario}.h5") as c:
            assert math.isclose(c[row.variant].attrs["delta"], row.delta, abs_tol=1e-9)


def test_interaction_tables_equal_np_corrcoef_of_the_dla_tables(workflow_dir):
    """The component interaction outputs of `all`: per model the Pearson r of every pair of
    heads and MLPs over all 18 prompts (both labellings, each labelling's mean removed: the
    default analysis.interaction_centring) equals np.corrcoef of the DLA table so centred;
    each compared pair's difference is r_a - r_b; the figures and the RQ section exist."""
    res = workflow_dir / "results"
    full = pd.read_csv(res / "dla/dla_full_results.csv")
    corr = pd.read_csv(res / "interactions/correlations.csv")
    diff = pd.read_csv(res / "interactions/differences.csv")
    summary = pd.read_csv(res / "interactions/summary.csv")
    comps = full[full["kind"].isin(["head", "mlp"])]
    order = list(dict.fromkeys(comps["component"]))
    iu = np.triu_indices(len(order), 1)
    for m in MODELS:
        wide = comps[comps["model"] == m].pivot_table(index=["scenario", "variant"], columns="component",
                                                      values="contribution")
        assert len(wide) == 3 * N
        swapped = wide.index.get_level_values("scenario").str.endswith("_swapped")
        wide = wide - wide.groupby(swapped).transform("mean")
        rows = corr[corr["model"] == m]
        assert rows["component_a"].tolist() == [order[i] for i in iu[0]]
        assert rows["component_b"].tolist() == [order[j] for j in iu[1]]
        np.testing.assert_allclose(rows["r"], np.corrcoef(wide[order].to_numpy().T)[iu], atol=1e-9)
        assert (rows["n_prompts"] == 3 * N).all() and (rows["ci_low"] <= rows["r"]).all()
        assert (workflow_dir / f"results/interactions/correlations_{m}.png").stat().st_size > 10_000
    # the RQ role pairs (deontological vs utilitarian, strategic vs each moral model) and the experiments'
    pairs = [["PT3_COREDe", "PT3_COREUt"], ["PT2_COREDe", "PT3_COREDe"], ["PT2_COREDe", "PT3_COREUt"],
             ["PT2_COREDe", "PT4_COREDe"]]
    assert summary[["model_a", "model_b"]].values.tolist() == pairs
    for a, b in pairs:
        rows = diff[(diff["model_a"] == a) & (diff["model_b"] == b)]
        r_a, r_b = (corr.loc[corr["model"] == m, "r"].to_numpy() for m in (a, b))
        np.testing.assert_allclose(rows["difference"], r_a - r_b, atol=1e-12)
        assert (rows["significant"] == (rows["q_fdr"] <= 0.05)).all()
        row = summary[(summary["model_a"] == a) & (summary["model_b"] == b)].iloc[0]
        assert row["n_significant"] == rows["significant"].sum() and row["n_permutations"] == 1000
        assert (workflow_dir / f"results/interactions/differences_{a}_vs_{b}.png").stat().st_size > 10_000
    text = (res / "rq_summary.md").read_text()
    de_ut = summary.iloc[0]
    assert "### Component interactions: the same components, wired differently?" in text
    assert f"Do PT3_COREDe and PT3_COREUt wire the same components differently? {de_ut['n_significant']} of" in text


EXPERIMENTS = ["PT2_to_PT3De", "PT2_to_PT3Ut", "PT3De_to_PT3Ut", "PT3Ut_to_PT3De"]
# Aggregates that read every model and scenario, so any new model or scenario reruns them:
# since issue 26 item 2 also the figures and tables of an analysis that load no model (DLA
# figures, attention tables and figures), one job each instead of one per scenario.
AGGREGATES = {"prompt_dataset": 1, "decisions": 1, "logit_lens_tables": 1, "logit_lens_plots": 1,
              "dla_tables": 1, "dla_plots": 1, "attention_tables": 1, "attention_plots": 1,
              "cross_experiment_summary": 1, "rq_summary": 1, "probe_plots": 1, "interaction_tables": 1,
              "interaction_plots": 1, "all": 1, "path_patch_tables": 1, "path_patch_plots": 1,
              "games_behaviour": 1,  # issue 28: the behaviour-per-game table and figure
              # issue 29: the diffing tables and figures, and the crosscoder (trained on, and
              # checked on, every model's prompts)
              "adl_tables": 1, "adl_plot": 1, "crosscoder_train": 1, "crosscoder_causal": 1, "crosscoder_plot": 1}
# issue 29: one activation-difference-lens job per (fine-tune, reference): each fine-tune against
# the base, and each other fine-tune against the strategic model; each reads every scenario
ADL_PAIRS = 4 + 3
# Jobs that run a model or build a scenario's prompts: adding a scenario adds one prompt job,
# one cache per model, one patching job per experiment and one steering job per steering
# experiment (those steering it), and reruns none of the old ones.
MODEL_JOBS = {"demo_base", "demo_adapter", "convert_gguf", "rl_adapter", "merge_model", "scenario_prompts",
              "cache_activations", "patch_scenario", "counterfactual_patch", "steering_scenario",
              "adapter_edits_scenario", "adl_pair", "crosscoder_causal"}


def test_rerun_schedules_nothing(workflow_dir):
    assert dry_run_jobs(workflow_dir, "all") == []


def test_adding_a_scenario_schedules_exactly_its_jobs(workflow_dir):
    """A new scenario runs its own prompts, caches, patches and steering, and reruns the grouped
    tables and figures that read every scenario. The expected counts changed with issue 26
    item 2: tables and plots that load no model are grouped per model, experiment or analysis
    (dla_model, logit_lens_model, dla_plots, attention_tables, ...), so they rerun as one job
    each instead of adding about 23 per-scenario jobs."""
    extra = workflow_dir / "extra_scenario.yaml"
    extra.write_text(yaml.safe_dump({"scenarios": {"DD_new": {
        "self_last": "D", "opponent_last": "D", "extra_sentence": "A played action2 for many rounds.",
        "description": "test"}}}))
    jobs = dry_run_jobs(workflow_dir, "all", "--configfile", "config.yaml", str(extra))
    per_scenario = {"scenario_prompts": 1, "cache_activations": 5, "patch_scenario": 4, "steering_scenario": 2,
                    "adapter_edits_scenario": 4}
    # per-model / per-experiment tables and figures across scenarios (a probe pools every
    # scenario of its model)
    per_group = {"logit_lens_model": 5, "dla_model": 5, "probe_model": 5, "patch_experiment_tables": 4,
                 "patch_plots_experiment": 4, "steering_tables": 2, "steering_plots": 2,
                 "adapter_edits_tables": 1, "adapter_edits_plots": 1, "adl_pair": ADL_PAIRS}
    assert rule_counts(jobs) == {**per_scenario, **per_group, **AGGREGATES}
    for rule, wc in jobs:
        if rule in per_scenario:
            assert wc["scenario"] == "DD_new", (rule, wc)
        else:  # no other job is per scenario
            assert "scenario" not in wc, (rule, wc)
    assert {wc["model"] for r, wc in jobs if r == "cache_activations"} == set(MODELS)
    # issue 26 item 2: at most one model-running job per model, experiment, steering
    # experiment and (issue 27 item 1) fine-tune, plus the prompts; everything else is a
    # grouped table or figure job; (issue 29) model diffing reads every scenario: its jobs per
    # (fine-tune, reference) and the crosscoder's causal check rerun
    cfg = yaml.safe_load((workflow_dir / "config.yaml").read_text())
    model_jobs = [r for r, _ in jobs if r in MODEL_JOBS]
    fine_tunes = sum(1 for spec in cfg["models"].values() if spec.get("adapter"))
    assert len(model_jobs) <= (len(cfg["models"]) + len(cfg["experiments"]) + 1 + len(cfg["steering"])
                               + fine_tunes + ADL_PAIRS + 1) == 16 + 8
    assert set(rule_counts(jobs)) - MODEL_JOBS == (set(per_group) | set(AGGREGATES)) - MODEL_JOBS


def test_adding_a_model_and_an_experiment_schedules_exactly_their_jobs(workflow_dir):
    """A new model and experiment run their own merge, caches and patches, their own per-model
    tables, and rerun the aggregates (counts changed with issue 26 item 2: the per-scenario
    DLA, logit-lens, attention and patching figure jobs are grouped per analysis)."""
    extra = workflow_dir / "extra_model.yaml"
    extra.write_text(yaml.safe_dump({
        "models": {"PT4_copy": {"base": "results/demo/base", "adapter": "results/demo/adapters/PT4_COREDe"}},
        "experiments": {"PT4copy_to_PT2": {"source": "PT4_copy", "target": "PT2_COREDe"}},
    }))
    jobs = dry_run_jobs(workflow_dir, "all", "--configfile", "config.yaml", str(extra))
    # (issue 29: the new fine-tune against the base and against the strategic model)
    per_model = {"merge_model": 1, "cache_activations": N, "logit_lens_model": 1, "dla_model": 1,
                 "weight_deltas": 1, "weight_deltas_table": 1, "weight_deltas_plot": 1, "probe_model": 1,
                 "adl_pair": 2}
    per_experiment = {"patch_scenario": N, "patch_experiment_tables": 1, "patch_plots_experiment": 1}
    # adapter edits (issue 27 item 1): the new fine-tune's on every scenario, and its
    # experiment's target's again (PT4_copy's update is now transplanted into PT2_COREDe)
    edits = {"adapter_edits_scenario": 2 * N, "adapter_edits_tables": 1, "adapter_edits_plots": 1}
    aggregates = {k: v for k, v in AGGREGATES.items() if k != "prompt_dataset"}
    assert rule_counts(jobs) == {**per_model, **per_experiment, **edits, **aggregates}
    assert {wc["model"] for r, wc in jobs if r == "adapter_edits_scenario"} == {"PT4_copy", "PT2_COREDe"}
    for rule, wc in jobs:
        if rule in per_model and "model" in wc:
            assert wc["model"] == "PT4_copy", (rule, wc)
        if "experiment" in wc:
            assert wc["experiment"] == "PT4copy_to_PT2", (rule, wc)


def _edited_tree(tmp_path, module: str) -> Path:
    tree = copy_tree(tmp_path / "tree")
    path = tree / "interp_lib" / module
    path.write_text(path.read_text() + "\n# an edit that every rule running this module must see\n")
    return tree


def test_editing_a_plot_module_reruns_only_its_plots(workflow_dir, tmp_path):
    """(One job since issue 26 item 2: every DLA figure is drawn by dla_plots.)"""
    jobs = dry_run_jobs(workflow_dir, "all", tree=_edited_tree(tmp_path, "plots/dla.py"))
    assert rule_counts(jobs) == {"dla_plots": 1, "all": 1}
    assert dry_run_jobs(workflow_dir, "all") == []


def test_editing_an_analysis_module_reruns_that_analysis_and_what_reads_it(workflow_dir, tmp_path):
    jobs = dry_run_jobs(workflow_dir, "all", tree=_edited_tree(tmp_path, "report/patching_tables.py"))
    # the experiment's patch plots (its scenarios' heatmaps among them) import the tables'
    # consistency ranking; the RQ summary reads the experiment's patch_results table; the
    # counterfactual heatmaps import neither
    assert rule_counts(jobs) == {"patch_experiment_tables": 4, "cross_experiment_summary": 1,
                                 "patch_plots_experiment": 4, "rq_summary": 1, "all": 1}


def test_editing_the_prompt_template_reruns_prompts_caches_and_everything_downstream(workflow_dir, tmp_path):
    jobs = dry_run_jobs(workflow_dir, "all", tree=_edited_tree(tmp_path, "prompts.py"))
    everything = rule_counts(dry_run_jobs(workflow_dir, "all", "--forceall"))
    # the embedded family is trained on these prompts, so it is retrained too: every job reruns
    assert rule_counts(jobs) == everything
    assert {"demo_base", "scenario_prompts", "cache_activations", "patch_scenario"} <= set(everything)


def _with_config(workflow_dir, tmp_path, mutate) -> Path:
    cfg = yaml.safe_load((workflow_dir / "config.yaml").read_text())
    mutate(cfg)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_a_new_label_reruns_only_the_plots_and_tables_that_show_it(workflow_dir, tmp_path):
    """(Counts changed with issue 26 item 2: an analysis's figures are one job, or one per
    experiment for patching, instead of one per scenario.)"""
    cfg = _with_config(workflow_dir, tmp_path, lambda c: c["models"]["PT2_COREDe"].update(label="Selfish"))
    jobs = dry_run_jobs(workflow_dir, "all", "--configfile", str(cfg))
    assert rule_counts(jobs) == {
        "dla_plots": 1, "logit_lens_plots": 1, "patch_plots_experiment": 2, "weight_deltas_plot": 1,
        "attention_plots": 1, "probe_plots": 1, "interaction_plots": 1, "rq_summary": 1, "all": 1,
        "path_patch_plots": 1, "adapter_edits_plots": 1, "games_behaviour": 1, "adl_plot": 1}
    assert {wc["experiment"] for r, wc in jobs if "experiment" in wc} == {"PT2_to_PT3De", "PT2_to_PT3Ut"}
    assert not [(r, wc) for r, wc in jobs if "model" in wc or "scenario" in wc]  # no per-model table reruns


def test_a_new_description_reruns_only_the_prompt_dataset(workflow_dir, tmp_path):
    cfg = _with_config(workflow_dir, tmp_path,
                       lambda c: c["scenarios"]["CD_punished"].update(description="Betrayed last round."))
    assert rule_counts(dry_run_jobs(workflow_dir, "all", "--configfile", str(cfg))) == {"prompt_dataset": 1,
                                                                                         "all": 1}


def test_path_patching_outputs_and_each_range_against_a_naive_forward_pass(workflow_dir):
    """Path patching on the embedded family (all positions): the patching job's table holds
    every range of every curve, each equal to one full forward pass of the target with hooks
    writing the source's own hook_attn_out / hook_mlp_out; the noise floor is present and
    small; the table, figure and summary outputs of `all` exist."""
    from interp_lib.model.loading import load_hooked
    from interp_lib.patching import PATH_COLUMNS
    from interp_lib.reference import naive_range_patched_delta

    res = workflow_dir / "results"
    per = pd.read_csv(res / "patching/per/PT2_to_PT3De/CD_punished/path_patches.csv")
    assert list(per.columns) == PATH_COLUMNS
    L = 4  # the embedded model's layers: the default 4 starts are every layer
    assert len(per) == 3 * 3 * L * (L + 1) // 2  # variants x sites x ranges
    assert (per["noise_floor"] > 0).all() and per["noise_floor"].max() < 1e-4
    assert per["delta_change"].abs().max() > 1e4 * per["noise_floor"].max()
    target, source = (load_hooked(res / "models" / m, "float32", "cpu", m) for m in ("PT3_COREDe", "PT2_COREDe"))
    with CacheFile(res / "cache/PT3_COREDe/CD_punished.h5") as c:
        ids = torch.as_tensor(c[1]["input_ids"])[None]
        tokens = c.action_tokens(1)
    _, cache = source.run_with_cache(ids, last_only=True)
    for r in per[per["variant"] == 1].itertuples():
        expected = naive_range_patched_delta(target, ids, cache, r.site, r.layer_from, r.layer_to, "all", tokens)
        assert abs(r.patched_delta - expected) < 1e-4, (r.site, r.layer_from, r.layer_to)
    full = per[(per["variant"] == 1) & (per["site"] == "both") & (per["layer_from"] == 0) & (per["layer_to"] == L - 1)]
    assert abs(full["patched_delta"].iat[0] - full["source_delta"].iat[0]) < 1e-4  # the source itself
    sat = pd.read_csv(res / "patching/path_patching_saturation.csv")
    assert len(sat) == len(EXPERIMENTS) * len(ALL_SCENARIOS) * 3 * L
    assert ((sat["saturation_layer"] >= sat["layer_from"]) & (sat["saturation_layer"] <= L - 1)).all()
    assert (res / "patching/path_patching_summary.csv").is_file()
    for e in EXPERIMENTS:
        assert (res / f"patching/path_patching_{e}.png").stat().st_size > 10_000
    assert "## Path patching: where the effect saturates" in (res / "rq_summary.md").read_text()


def _peft_delta(adapter_dir, ids, tokens) -> float:
    """logit(D) - logit(C) of the demo base with `adapter_dir` merged by PEFT, in one full forward pass."""
    from peft import PeftModel

    base = load_base_model("results/demo/base", "float32", "cpu", "base")
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload().eval()
    with torch.no_grad():
        logits = merged(torch.as_tensor(ids)[None]).logits[0, -1]
    return float(logits[tokens["D"]] - logits[tokens["C"]])


def test_adapter_edits_of_every_fine_tune_are_in_all(workflow_dir, tmp_path, monkeypatch):
    """Issue 27 item 1: every fine-tune's adapter edits on every scenario (with the swapped
    sibling) are built by `all`; one ablation row and one transplant row equal PEFT's merge of
    the hand-edited adapter run in full; the unedited recomputations sit at float32 rounding;
    the summary's means are the rows' and every minimal set passes its leave-one-out check."""
    from safetensors.torch import load_file, save_file

    monkeypatch.chdir(workflow_dir)
    out = Path("results/adapter_edits")
    fine_tunes = MODELS[1:]
    for m in fine_tunes:
        assert (out / f"adapter_edits_{m}.png").stat().st_size > 20_000
    rows = pd.read_csv(out / "edit_results.csv")
    assert set(rows["model"]) == set(fine_tunes) and set(rows["scenario"]) == set(ALL_SCENARIOS)
    assert rows.groupby(["model", "scenario"])["variant"].nunique().eq(3).all()
    unedited = rows[rows["kind"] == "unedited"]
    assert len(unedited) == 2 * 4 * 3 * N and unedited["delta_change"].abs().max() < 1e-4
    assert rows["noise_floor"].max() < 1e-4
    assert set(rows[rows["kind"] == "transplant"]["source"]) == {"PT2_COREDe", "PT3_COREUt", "PT3_COREDe"}

    def one(**where):
        sel = rows
        for k, v in where.items():
            sel = sel[sel[k] == v]
        assert len(sel) == 1, where
        return sel.iloc[0]

    with CacheFile("results/cache/PT3_COREDe/CD_punished_swapped.h5") as c:
        ids, tokens = c[2]["input_ids"], c.action_tokens(2)
    adapter = Path("results/demo/adapters/PT3_COREDe")
    donor = load_file("results/demo/adapters/PT2_COREDe/adapter_model.safetensors")
    for kind, layer in (("ablation", 2), ("transplant", 1)):
        state = load_file(adapter / "adapter_model.safetensors")
        edited = tmp_path / kind
        edited.mkdir()
        for key in state:
            if f"layers.{layer}." in key:  # same rank and alpha: the donor's factors fit as they are
                state[key] = torch.zeros_like(state[key]) if kind == "ablation" else donor[key]
        save_file(state, edited / "adapter_model.safetensors")
        (edited / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
        row = one(model="PT3_COREDe", scenario="CD_punished_swapped", variant=2, kind=kind, group="block",
                  layer=layer, **({"source": "PT2_COREDe"} if kind == "transplant" else {}))
        expected = _peft_delta(edited, ids, tokens)
        assert abs(row["delta"] - expected) < 1e-4, (kind, row["delta"], expected)
        assert abs(row["delta_change"]) > 1e-2

    summary = pd.read_csv(out / "edit_summary.csv")
    sel = summary[(summary["model"] == "PT4_COREDe") & (summary["kind"] == "sufficiency")
                  & (summary["group"] == "block") & (summary["layer"] == 3) & (summary["scenario"] == "ALL")
                  & (summary["labelling"] == "standard")].iloc[0]
    mine = rows[(rows["model"] == "PT4_COREDe") & (rows["kind"] == "sufficiency") & (rows["group"] == "block")
                & (rows["layer"] == 3) & (rows["labelling"] == "standard")]
    assert sel["n"] == len(mine) == 15 and math.isclose(sel["mean_delta_change"], mine["delta_change"].mean())
    assert sel["ci_low"] <= sel["mean_delta_change"] <= sel["ci_high"]
    sets = pd.read_csv(out / "minimal_sets.csv")
    assert len(sets) == 4 * N and set(sets["set_kind"]) <= {"minimal", "greedy", "none"}
    for s in sets[sets["set_kind"] == "minimal"].itertuples():
        assert all(item.endswith(":fails") for item in str(s.leave_one_out).split(";") if item), s
        members = rows[(rows["model"] == s.model) & (rows["scenario"] == s.scenario)
                       & (rows["kind"] == "minimal_set")]
        assert members["reproduces"].all()
    verdicts = pd.read_csv(out / "layer_verdicts.csv")
    assert set(verdicts["model"]) == set(fine_tunes)
    text = (workflow_dir / "results/rq_summary.md").read_text()
    assert "## Adapter edits: necessary and sufficient layers" in text
