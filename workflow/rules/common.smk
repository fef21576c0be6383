import os
import re
import sys
from pathlib import Path

from interp_lib.code_version import code_version as _code_version
from interp_lib.config import (
    adapter_edit_scenarios,
    embedded_path,
    gguf_dir,
    patch_scenarios,
    rl_adapter_dir,
    scenario_game,
    scenario_metric,
    steering_scenarios,
)
from interp_lib.model.gguf_convert import GGUFError, source_paths
from interp_lib.model.precision import get_precision

MODELS = list(config["models"])
SCENARIOS = list(config["scenarios"])
EMBEDDED_DIR = config["embedded"]["dir"].rstrip("/")
RESULTS = config["results_dir"].rstrip("/")


def R(path):
    """`path` under the config's results_dir (wildcards in braces stay as they are)."""
    return f"{RESULTS}/{path}"


# Table-only aggregates take seconds: on a cluster they run on the submitting node.
localrules:
    prompt_dataset,
    decisions,
    logit_lens_tables,
    dla_tables,
    patch_experiment_tables,
    cross_experiment_summary,


wildcard_constraints:
    model="|".join(re.escape(m) for m in MODELS),
    scenario="|".join(re.escape(s) for s in SCENARIOS),


# What convert_gguf writes into a converted directory (config.json first: rules take the
# directory of their first input).
CONVERTED_FILES = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "fingerprint.json",
    "source.json",
]


# What rl_adapter writes (adapter_config.json first).
RL_ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors", "training.json"]


def model_dir_inputs(path):
    """Files that stand for a base or adapter directory: built by the embedded family's
    rules or by convert_gguf, or existing local files (so that replacing them reruns what
    depends on them).
    """
    if not path:
        return []
    converted = gguf_dir(config, path)
    if converted is not None:
        return [f"{converted}/{name}" for name in CONVERTED_FILES]
    trained = rl_adapter_dir(config, path)
    if trained is not None:
        return [f"{trained}/{name}" for name in RL_ADAPTER_FILES]
    # given relative or absolute: spelled as the demo rules name their outputs
    embedded = embedded_path(config, path)
    if embedded is not None:
        return (
            [f"{embedded}/config.json"]
            if not embedded.startswith(f"{EMBEDDED_DIR}/adapters/")
            else [
                f"{embedded}/adapter_config.json",
                f"{embedded}/adapter_model.safetensors",
            ]
        )
    local = Path(path)
    return [
        str(p)
        for pattern in ("*.json", "*.safetensors", "*.bin")
        for p in sorted(local.glob(pattern))
    ]


def check_adapter_paths():
    for name, spec in config["models"].items():
        adapter = spec.get("adapter")
        if (
            adapter
            and embedded_path(config, adapter) is None
            and rl_adapter_dir(config, adapter) is None
            and not Path(adapter).is_dir()
        ):
            sys.exit(
                f"Error: {CONFIG_SOURCE}: models.{name}.adapter: adapter directory not found: {adapter}"
            )


check_adapter_paths()


def check_rl_adapter_bases():
    for out_dir, spec in config["rl_adapters"].items():
        base = spec["base"]
        if (
            gguf_dir(config, base) is None
            and embedded_path(config, base) is None
            and not Path(base).is_dir()
        ):
            sys.exit(
                f"Error: {CONFIG_SOURCE}: rl_adapters.{out_dir}.base: base model directory not found: {base}"
            )
        init = spec["init_adapter"]
        if init is None:
            continue
        init_entry = rl_adapter_dir(config, init)
        if init_entry == out_dir:
            sys.exit(
                f"Error: {CONFIG_SOURCE}: rl_adapters.{out_dir}.init_adapter: is the entry's own output directory"
            )
        if init_entry is None and not Path(init, "adapter_config.json").is_file():
            sys.exit(
                f"Error: {CONFIG_SOURCE}: rl_adapters.{out_dir}.init_adapter: adapter directory not found: {init}"
            )


check_rl_adapter_bases()


def gguf_files():
    """Output directory -> its GGUF file or chunks (convert_gguf's input); a missing package
    or file stops the run here, with one line, as a missing adapter directory does."""
    files = {}
    for out_dir, source in config["gguf"].items():
        try:
            files[out_dir] = [str(path) for path in source_paths(source)]
        except GGUFError as exc:
            sys.exit(f"Error: {CONFIG_SOURCE}: gguf.{out_dir}: {exc}")
    return files


GGUF_FILES = gguf_files()


def prompt_tokenizer_model():
    return config.get("prompt_tokenizer_model") or MODELS[0]


def cache_files(models=None, scenarios=None):
    return [
        R(f"cache/{m}/{s}.h5")
        for m in (models or MODELS)
        for s in (scenarios or SCENARIOS)
    ]


def code_version(script):
    """Hash of the interp_lib modules that workflow/scripts/{script}.py imports (followed
    transitively): a param, so that editing one of them reruns exactly the rules whose
    scripts run it (Snakemake's code trigger sees the script, not its imports)."""
    return _code_version(
        Path(workflow.basedir) / "workflow" / "scripts" / f"{script}.py"
    )


# Settings that only change how results are shown (labels, descriptions) are kept out of
# the params of rules that run models, so that editing them reruns only tables and plots.
def model_spec(name):
    """What determines a model's weights: its base and adapter (not its label)."""
    spec = config["models"][name]
    return {"base": spec["base"], "adapter": spec.get("adapter")}


def prompt_spec(scenario):
    """What determines a scenario's prompts (not its description, nor whether it has a
    swapped-label sibling)."""
    spec = {
        k: v
        for k, v in config["scenarios"][scenario].items()
        if k not in ("description", "counterbalance")
    }
    # the game's payoffs, not only its name: editing a game reruns its scenarios alone
    return {**spec, "game": scenario_game(config, scenario)}


def model_label(name):
    return config["models"][name].get("label") or name


def model_style(models):
    """{model: [position in the config, label]}: a per-item rule's style param that holds
    only its own models, so adding a model does not rerun it."""
    return {m: [MODELS.index(m), model_label(m)] for m in models}


EXPERIMENTS = list(config["experiments"])
PATCH_SCENARIOS = patch_scenarios(config)


wildcard_constraints:
    experiment="|".join(re.escape(e) for e in EXPERIMENTS) or "^$",


def experiment_models(wc):
    exp = config["experiments"][wc.experiment]
    return exp["source"], exp["target"]


def patch_inputs(wc):
    source, target = experiment_models(wc)
    return {
        "source_cache": R(f"cache/{source}/{wc.scenario}.h5"),
        "target_cache": R(f"cache/{target}/{wc.scenario}.h5"),
        "source_fingerprint": R(f"models/{source}/fingerprint.json"),
        "target_fingerprint": R(f"models/{target}/fingerprint.json"),
        "source_weights": R(f"models/{source}/model.safetensors"),
        "target_weights": R(f"models/{target}/model.safetensors"),
    }


# Attention patterns (rules/attention.smk): one job writes every scenario's table.
def attention_inputs(scenario):
    """What the attention table of `scenario` reads: each model's cache, each model's DLA
    table, and each experiment's patches (none when the scenario is not patched: then DLA
    alone selects the heads)."""
    return {
        "caches": {m: R(f"cache/{m}/{scenario}.h5") for m in MODELS},
        "dla": [R(f"dla/per/{m}/{scenario}.csv") for m in MODELS],
        "patches": (
            [R(f"patching/per/{e}/{scenario}/patches.csv") for e in EXPERIMENTS]
            if scenario in PATCH_SCENARIOS
            else []
        ),
    }


ATTENTION_INPUTS = {s: attention_inputs(s) for s in SCENARIOS}


# Counterfactual prompt patching within one model (rules/counterfactual.smk).
COUNTERFACTUALS = list(config["counterfactuals"])


wildcard_constraints:
    counterfactual="|".join(re.escape(c) for c in COUNTERFACTUALS) or "^$",


def counterfactual_inputs(wc):
    cf = config["counterfactuals"][wc.counterfactual]
    return {
        "source_cache": R(f"cache/{cf['model']}/{cf['source']}.h5"),
        "target_cache": R(f"cache/{cf['model']}/{cf['target']}.h5"),
        "fingerprint": R(f"models/{cf['model']}/fingerprint.json"),
        "weights": R(f"models/{cf['model']}/model.safetensors"),
    }


# Steering experiments (rules/steering.smk): per (experiment, scenario) jobs.
STEERING = list(config["steering"])


wildcard_constraints:
    steering="|".join(re.escape(s) for s in STEERING) or "^$",


def steering_direction_caches(wc):
    """{model: its cache files of the direction's scenarios} (default: the steered
    scenario's own prompts)."""
    exp = config["steering"][wc.steering]
    direction = exp["direction"]
    roles = ("source", "reference") if direction["from"] == "models" else ("model",)
    scenarios = direction.get("scenarios") or [wc.scenario]
    return {
        direction[r]: [R(f"cache/{direction[r]}/{s}.h5") for s in scenarios]
        for r in roles
    }


def steering_inputs(wc):
    target = config["steering"][wc.steering]["target"]
    direction = [p for paths in steering_direction_caches(wc).values() for p in paths]
    return {
        "target_cache": R(f"cache/{target}/{wc.scenario}.h5"),
        "direction_caches": sorted(set(direction)),
        "fingerprint": R(f"models/{target}/fingerprint.json"),
        "weights": R(f"models/{target}/model.safetensors"),
    }


def steering_spec(name):
    """What determines a steering job's numbers: the experiment without its list of steered
    scenarios (adding one must not rerun the others)."""
    return {k: v for k, v in config["steering"][name].items() if k != "scenarios"}


def steering_outputs(name):
    return [R(f"steering/per/{name}/{s}.csv") for s in steering_scenarios(config, name)]


# LoRA adapter edits (rules/adapter_edits.smk): per (fine-tune, scenario) jobs.
from interp_lib.adapter_edits.plan import edit_models, transplant_sources

# {fine-tune: reference model without an adapter on its base}, {skipped model: reason}
EDIT_MODELS, EDIT_SKIPPED = (
    edit_models(config) if config["adapter_edits"]["enabled"] else ({}, {})
)
# The scenario list decides which jobs exist, not what a job computes: not a parameter.
EDIT_SETTINGS = {
    k: v
    for k, v in config["adapter_edits"].items()
    if k not in ("enabled", "scenarios")
}
EDIT_SCENARIOS = adapter_edit_scenarios(config)


def adapter_edit_donors(model):
    """{source model: its adapter and experiment} of the transplants into `model`."""
    sources, _ = transplant_sources(config, model)
    return {
        src: {"adapter": config["models"][src]["adapter"], "experiment": exp}
        for src, exp in sources.items()
    }


def adapter_edit_inputs(wc):
    ref, donors = EDIT_MODELS[wc.model], adapter_edit_donors(wc.model)
    return {
        "finetune_cache": R(f"cache/{wc.model}/{wc.scenario}.h5"),
        "finetune_fingerprint": R(f"models/{wc.model}/fingerprint.json"),
        "base_cache": R(f"cache/{ref}/{wc.scenario}.h5"),
        "reference_weights": R(f"models/{ref}/model.safetensors"),
        "reference_fingerprint": R(f"models/{ref}/fingerprint.json"),
        "adapter": model_dir_inputs(config["models"][wc.model]["adapter"]),
        "donor_caches": [R(f"cache/{s}/{wc.scenario}.h5") for s in donors],
        "donor_fingerprints": [R(f"models/{s}/fingerprint.json") for s in donors],
        "donor_adapters": [
            f for s in donors for f in model_dir_inputs(config["models"][s]["adapter"])
        ],
    }


def adapter_edit_outputs(name):
    return expand(
        R(f"adapter_edits/per/{{model}}/{{scenario}}/{name}.csv"),
        model=EDIT_MODELS,
        scenario=EDIT_SCENARIOS,
    )


# What the RQ summary reads (summary, verdicts, minimal sets; none without a fine-tune to edit).
ADAPTER_EDIT_TABLES = (
    [
        R(f"adapter_edits/{name}.csv")
        for name in ("edit_summary", "layer_verdicts", "minimal_sets")
    ]
    if EDIT_MODELS
    else []
)


def adapter_edit_targets():
    """The outputs of `all` (none when no model has an adapter and a base to edit)."""
    if not EDIT_MODELS:
        return []
    return [
        R(f"adapter_edits/{name}.csv")
        for name in ("edit_results", "edit_summary", "layer_verdicts", "minimal_sets")
    ] + expand(R("adapter_edits/adapter_edits_{model}.png"), model=EDIT_MODELS)


# Mechanism transfer across games and prompts (rules/transfer.smk).
from interp_lib.contexts import (
    REFERENCE,
    has_transfer,
    scenario_contexts,
    scenario_states,
)

CONTEXTS = scenario_contexts(config["scenarios"])
TRANSFER = has_transfer(CONTEXTS)
IPD_PATCH_SCENARIOS = [s for s in PATCH_SCENARIOS if CONTEXTS[s] == REFERENCE]

# The tables RQ4 reads, in interp_lib.report.transfer.PARTS' order (none without a context
# beside the reference).
TRANSFER_PARTS = ("components", "steering", "probes", "circuits")
TRANSFER_TABLES = [R(f"transfer/{p}.csv") for p in TRANSFER_PARTS] if TRANSFER else []


def transfer_targets():
    """The transfer outputs of `all`."""
    return [*TRANSFER_TABLES, R("transfer/transfer.png")] if TRANSFER else []


# N-way model diffing (rules/diffing.smk): every fine-tune against the base and against the
# strategic model, when roles.base names a configured model.
DIFF_BASE = config["roles"].get("base")
DIFF_REFERENCES = [
    r
    for r in dict.fromkeys([DIFF_BASE, config["roles"].get("strategic")])
    if r in MODELS
]
DIFF_PAIRS = [
    (m, r) for r in DIFF_REFERENCES for m in MODELS if m not in (r, DIFF_BASE)
]
DIFFING = config["diffing"]["enabled"] and DIFF_BASE in MODELS and bool(DIFF_PAIRS)
ADL_PARTS = ("differences", "tokens", "lora", "steering", "cosines")
ADL_TABLES = [R(f"diffing/adl_{p}.csv") for p in ADL_PARTS] if DIFFING else []


def adl_pair_outputs():
    return [
        R(f"diffing/adl/per/{m}/{r}/{part}")
        for m, r in DIFF_PAIRS
        for part in (
            "differences.csv",
            "tokens.csv",
            "lora.csv",
            "steering.csv",
            "vectors.npz",
        )
    ]


CROSSCODER_TABLES = ("history", "quality", "latents", "decisions", "top_activations")
# What RQ5 reads, in interp_lib.report.diffing's ADL_PARTS + CROSSCODER_PARTS order.
DIFFING_TABLES = (
    [
        *ADL_TABLES,
        *[
            R(f"diffing/crosscoder/{t}.csv")
            for t in ("quality", "latents", "decisions", "causal")
        ],
    ]
    if DIFFING
    else []
)
IPD_SCENARIOS = [s for s in SCENARIOS if CONTEXTS[s] == REFERENCE]


def diffing_targets():
    """The diffing outputs of `all`."""
    if not DIFFING:
        return []
    return [
        *ADL_TABLES,
        R("diffing/adl.png"),
        *[R(f"diffing/crosscoder/{t}.csv") for t in CROSSCODER_TABLES],
        R("diffing/crosscoder/causal.csv"),
        R("diffing/crosscoder.png"),
    ]
