"""What the workflow schedules for a user's own config (dry runs; no workflow has to run)."""

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO, dry_run_jobs, rule_counts, snakemake

DEMO_NAMES = {"base", "PT2_COREDe", "PT3_COREDe", "PT3_COREUt", "PT4_COREDe", "CC_continue", "CC_temptation",
              "CD_punished", "DC_exploited", "DD_trapped", "PT2_to_PT3De", "PT2_to_PT3Ut", "PT3De_to_PT3Ut",
              "PT3Ut_to_PT3De"}


def _user_models(root: Path) -> tuple[Path, Path]:
    """A local base directory and adapter directory with the files a dry run looks at."""
    base, adapter = root / "weights" / "mybase", root / "weights" / "myadapter"
    base.mkdir(parents=True)
    adapter.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (base / name).write_text("{}")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (adapter / name).write_text("{}")
    return base, adapter


def _user_config(root: Path, **extra) -> dict:
    base, adapter = _user_models(root)
    return {
        "models": {"mybase": {"base": str(base)}, "mytuned": {"base": str(base), "adapter": str(adapter)}},
        "scenarios": {"S1": {"self_last": "C", "opponent_last": "D", "description": "mine"}},
        "experiments": {"tuned_to_base": {"source": "mytuned", "target": "mybase"}},
        **extra,
    }


# Every job of `all` for two models, one scenario and one experiment (tables and plots that
# read only caches or tables are one job per model, experiment or analysis, not per scenario).
USER_JOBS = {
    "merge_model": 2, "scenario_prompts": 1, "prompt_dataset": 1, "cache_activations": 2, "decisions": 1,
    "games_behaviour": 1,
    "logit_lens_model": 2, "logit_lens_tables": 1, "logit_lens_plots": 1,
    "dla_model": 2, "dla_tables": 1, "dla_plots": 1, "attention_tables": 1, "attention_plots": 1,
    "patch_scenario": 1, "patch_experiment_tables": 1, "patch_plots_experiment": 1,
    "cross_experiment_summary": 1, "weight_deltas": 1, "weight_deltas_table": 1, "weight_deltas_plot": 1,
    "probe_model": 2, "probe_plots": 1, "interaction_tables": 1, "interaction_plots": 1, "rq_summary": 1, "all": 1,
    "path_patch_tables": 1, "path_patch_plots": 1,  # path patching: one table and one figure job in all
    # issue 27 item 1: the fine-tune's adapter edits (one job per scenario), their tables and figure
    "adapter_edits_scenario": 1, "adapter_edits_tables": 1, "adapter_edits_plots": 1,
}


def _names_in(jobs) -> set:
    return {value for _, wc in jobs for value in wc.values()}


def test_a_users_configfile_runs_exactly_that_config(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "my.yaml").write_text(yaml.safe_dump(_user_config(tmp_path)))
    (wd / "config.yaml").write_text((REPO / "config.yaml").read_text())  # beside it, and not merged in
    jobs = dry_run_jobs(wd, "all", "--configfile", "my.yaml")
    assert rule_counts(jobs) == USER_JOBS
    assert _names_in(jobs) == {"mybase", "mytuned", "S1", "tuned_to_base"}
    assert not _names_in(jobs) & DEMO_NAMES
    main = dry_run_jobs(wd, "results/patching/cross_experiment_summary.csv", "--configfile", "my.yaml")
    assert {r for r, _ in main} == {"merge_model", "scenario_prompts", "cache_activations", "patch_scenario",
                                    "patch_experiment_tables", "cross_experiment_summary"}


def _extra_scenarios(n: int) -> dict:
    return {f"X{i}": {"self_last": "CD"[i % 2], "opponent_last": "CD"[i // 2 % 2],
                      "extra_sentence": f"This is round {i + 3} of the game.", "description": "extra"}
            for i in range(n)}


def test_a_scenario_adds_only_its_prompts_caches_patches_and_steering(tmp_path):
    """Issue 26 item 2: a scenario adds its prompts, one cache per model, one patching job per
    experiment and one steering job per steering experiment, and nothing else: the tables and
    figures read from caches and patches are one job per model, experiment or analysis
    (docs/measured.md: Jobs per scenario)."""
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "config.yaml").write_text((REPO / "config.yaml").read_text())
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    counts = {}
    for n in (1, 4):
        (wd / "extra.yaml").write_text(yaml.safe_dump({"scenarios": _extra_scenarios(n)}))
        counts[n] = rule_counts(dry_run_jobs(wd, "all", "--configfile", "config.yaml", "extra.yaml"))
    added = {rule: counts[4][rule] - counts[1].get(rule, 0) for rule in counts[4]
             if counts[4][rule] != counts[1].get(rule, 0)}
    fine_tunes = sum(1 for spec in cfg["models"].values() if spec.get("adapter"))
    per_scenario = {"scenario_prompts": 1, "cache_activations": len(cfg["models"]),
                    "patch_scenario": len(cfg["experiments"]), "steering_scenario": len(cfg["steering"]),
                    "adapter_edits_scenario": fine_tunes}  # issue 27 item 1: one per fine-tune
    assert added == {rule: 3 * n for rule, n in per_scenario.items()}
    assert sum(per_scenario.values()) == 16
    # 5 scenarios of config.yaml, CD_punished's swapped sibling and one more (131 + 12 before
    # issue 27; its adapter edits add one job per fine-tune and scenario, and the adapter edits',
    # interactions' and path patching's table and figure jobs are one each)
    # issue 28: behaviour per game, one job; issue 29: 7 ADL pairs (4 fine-tunes against the base,
    # 3 against the strategic model), their tables and figure, and the crosscoder's 3 jobs
    assert sum(counts[1].values()) == 162 + 16 + 12



def test_adapter_edits_on_a_subset_of_scenarios_schedule_only_those(tmp_path):
    """adapter_edits.scenarios: the counterbalanced CD_punished brings its swapped sibling, so
    each fine-tune gets two edit jobs and the tables one."""
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "config.yaml").write_text((REPO / "config.yaml").read_text())
    (wd / "subset.yaml").write_text(yaml.safe_dump({"adapter_edits": {"scenarios": ["CD_punished"]}}))
    jobs = dry_run_jobs(wd, "all", "--configfile", "config.yaml", "subset.yaml")
    edits = [wc for rule, wc in jobs if rule == "adapter_edits_scenario"]
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    fine_tunes = {name for name, spec in cfg["models"].items() if spec.get("adapter")}
    assert sorted((wc["model"], wc["scenario"]) for wc in edits) == sorted(
        (m, s) for m in fine_tunes for s in ("CD_punished", "CD_punished_swapped"))
    assert rule_counts(jobs)["adapter_edits_tables"] == 1

def test_without_a_configfile_the_default_config_is_used(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "config.yaml").write_text(yaml.safe_dump(_user_config(tmp_path)))
    assert rule_counts(dry_run_jobs(wd, "all")) == USER_JOBS


def test_errors_name_the_config_file_in_use(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    cfg = _user_config(tmp_path)
    cfg["analysis"] = {"top_k": "ten"}
    (wd / "my.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(wd, "-n", "--cores", "1", "all", "--configfile", "my.yaml", check=False)
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
    assert proc.returncode != 0
    assert errors == ["Error: my.yaml: analysis.top_k: 'ten' is not of type 'integer'"]
    cfg["analysis"] = {}
    cfg["models"]["mytuned"]["adapter"] = "/no/such/adapter"
    (wd / "my.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(wd, "-n", "--cores", "1", "all", "--configfile", "my.yaml", check=False)
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
    assert errors == ["Error: my.yaml: models.mytuned.adapter: adapter directory not found: /no/such/adapter"]
    assert not (wd / "results").exists()


def test_every_output_lies_under_results_dir(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "config.yaml").write_text(yaml.safe_dump(_user_config(tmp_path, results_dir="out/run1")))
    proc = snakemake(wd, "-n", "--cores", "1", "--summary", "all")
    rows = [line.split("\t") for line in proc.stdout.splitlines() if "\t" in line]
    paths = [row[0] for row in rows if row[0] != "output_file"]
    assert len(paths) == 74  # every output of `all` for this config (55 before issue 27: the 3 interaction
    # tables, 2 per-model and 1 pair figure, path patching's 4, the adapter edits' 7; issue 28's games table
    # and figure)
    assert all(p.startswith("out/run1/") for p in paths), [p for p in paths if not p.startswith("out/run1/")]
    # logs and benchmarks too
    proc = snakemake(wd, "-n", "--cores", "1", "all")
    for line in proc.stdout.splitlines():
        if line.strip().startswith(("log:", "benchmark:")):
            assert line.split(":", 1)[1].strip().startswith("out/run1/"), line


@pytest.mark.parametrize("absolute", [False, True])
def test_paths_into_the_embedded_family_relative_or_absolute(tmp_path, absolute):
    wd = tmp_path / "wd"
    wd.mkdir()
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    if absolute:
        for spec in cfg["models"].values():
            for key in ("base", "adapter"):
                if spec.get(key):
                    spec[key] = str(wd / spec[key])
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    counts = rule_counts(dry_run_jobs(wd, "results/behavior/decisions.csv"))
    # 5 scenarios and CD_punished's swapped-label sibling
    assert counts == {"demo_base": 1, "demo_adapter": 4, "merge_model": 5, "scenario_prompts": 6,
                      "cache_activations": 30, "decisions": 1}


def test_real_config_has_its_own_results_dir():
    from interp_lib.config import load_config

    real, demo = load_config(REPO / "config.real.yaml"), load_config(REPO / "config.yaml")
    assert real["results_dir"] != demo["results_dir"]
    assert not Path(real["results_dir"]).is_relative_to(demo["results_dir"])
    assert json.dumps(real).count("/path/to/adapters") == 4  # placeholders docs/gpu.md tells users to edit


def _gguf_config(root: Path) -> tuple[Path, dict]:
    """A config whose base is converted from a (fake) GGUF file, named relative by one model
    and absolute by another: one conversion feeds both merges and the prompts."""
    _, adapter = _user_models(root)
    gguf = root / "weights" / "model.gguf"
    gguf.write_bytes(b"GGUF")  # a dry run never reads it
    wd = root / "wd"
    wd.mkdir()
    cfg = {
        "gguf": {"converted/base/": {"path": str(gguf)}},
        "models": {"mybase": {"base": "converted/base"},
                   "mytuned": {"base": str(wd / "converted/base"), "adapter": str(adapter)}},
        "scenarios": {"S1": {"self_last": "C", "opponent_last": "D"}},
    }
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    return wd, cfg


def test_a_gguf_base_is_converted_once_before_merges_and_prompts(tmp_path):
    wd, _ = _gguf_config(tmp_path)
    jobs = dry_run_jobs(wd, "results/behavior/decisions.csv")
    assert rule_counts(jobs) == {"convert_gguf": 1, "merge_model": 2, "scenario_prompts": 1,
                                 "cache_activations": 2, "decisions": 1}
    assert [wc for rule, wc in jobs if rule == "convert_gguf"] == [{"gguf_dir": "converted/base"}]
    proc = snakemake(wd, "-n", "--cores", "1", "converted/base/source.json")
    assert "log: results/logs/gguf/converted/base.log" in proc.stdout
    assert "benchmark: results/benchmarks/gguf/converted/base.tsv" in proc.stdout


def test_replacing_the_gguf_file_reruns_the_conversion(tmp_path):
    wd, cfg = _gguf_config(tmp_path)
    out = wd / "converted/base"
    out.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "fingerprint.json", "source.json"):
        (out / name).write_text("{}")
    gguf = Path(cfg["gguf"]["converted/base/"]["path"])
    os.utime(gguf, (1e9, 1e9))  # older than the outputs
    assert rule_counts(dry_run_jobs(wd, "converted/base/source.json")) == {}
    gguf.touch()
    assert rule_counts(dry_run_jobs(wd, "converted/base/source.json")) == {"convert_gguf": 1}


def test_an_rl_adapter_is_trained_on_its_converted_base_before_its_merge(tmp_path):
    """A model whose adapter names an rl_adapters directory depends on rl_adapter, which
    depends on the gguf conversion of its base; the seed defaults to the config's."""
    wd, cfg = _gguf_config(tmp_path)
    cfg["seed"] = 7
    cfg["rl_adapters"] = {"trained/PT4/": {"base": "converted/base", "reward": "game_deontological", "rank": 2},
                          "trained/PT4_consistent": {"base": "converted/base", "reward": "game_deontological",
                                                     "rank": 2, "init_adapter": "trained/PT4/",
                                                     "labellings": ["standard", "swapped"], "label_consistency": 0.1}}
    cfg["models"]["mytuned"] = {"base": "converted/base", "adapter": "trained/PT4_consistent"}
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    jobs = dry_run_jobs(wd, "results/behavior/decisions.csv")
    assert rule_counts(jobs) == {"convert_gguf": 1, "rl_adapter": 2, "merge_model": 2, "scenario_prompts": 1,
                                 "cache_activations": 2, "decisions": 1}
    order = [(rule, wc.get("model") or wc.get("rl_dir")) for rule, wc in jobs]
    assert (order.index(("convert_gguf", None)) < order.index(("rl_adapter", "trained/PT4"))
            < order.index(("rl_adapter", "trained/PT4_consistent")) < order.index(("merge_model", "mytuned")))
    from interp_lib.config import load_config

    spec = load_config(wd / "config.yaml")["rl_adapters"]["trained/PT4"]
    assert spec == {"base": "converted/base", "reward": "game_deontological", "rank": 2, "alpha": 32,
                    "steps": 20, "lr": 0.0005, "seed": 7, "labellings": ["standard"], "label_consistency": 0,
                    "init_adapter": None}


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"base": "b", "reward": "greedy"}, "rl_adapters.trained/x.reward: 'greedy' is not one of"),
        ({"base": "b", "reward": "game", "rank": 0}, "rl_adapters.trained/x.rank: 0 is less than the minimum of 1"),
        ({"reward": "game"}, "'base' is a required property"),
    ],
)
def test_bad_rl_adapter_entries_are_named(tmp_path, entry, message):
    from interp_lib.config import ConfigError, validate_config

    cfg = {"models": {"m": {"base": "b"}}, "scenarios": {"S": {"self_last": "C", "opponent_last": "C"}},
           "rl_adapters": {"trained/x": entry}}
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(cfg, source="my.yaml")


def test_an_rl_adapter_directory_may_not_be_a_gguf_directory(tmp_path):
    from interp_lib.config import ConfigError, validate_config

    cfg = {"models": {"m": {"base": "b"}}, "scenarios": {"S": {"self_last": "C", "opponent_last": "C"}},
           "gguf": {"conv/base": {"path": "x.gguf"}},
           "rl_adapters": {"conv/base/": {"base": "conv/base", "reward": "game"}}}
    with pytest.raises(ConfigError, match=re.escape("my.yaml: rl_adapters.conv/base/: the same directory as gguf.conv/base")):
        validate_config(cfg, source="my.yaml")


@pytest.mark.parametrize("entry, message", [
    ({"base": "no/such/base"}, "rl_adapters.trained/x.base: base model directory not found: no/such/base"),
    ({"base": "converted/base", "init_adapter": "no/such/adapter"},
     "rl_adapters.trained/x.init_adapter: adapter directory not found: no/such/adapter"),
])
def test_an_rl_adapter_on_a_missing_base_or_init_adapter_stops_with_one_line(tmp_path, entry, message):
    wd, cfg = _gguf_config(tmp_path)
    cfg["rl_adapters"] = {"trained/x": {**entry, "reward": "game"}}
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(wd, "-n", "--cores", "1", "results/behavior/decisions.csv", check=False)
    assert proc.returncode != 0
    assert f"Error: config.yaml: {message}" in proc.stderr
