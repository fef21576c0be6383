import os
import re
import sys
from pathlib import Path

from interp_lib.config import ConfigError, is_embedded, patch_scenarios, validate_config

try:
    validate_config(config)
except ConfigError as exc:
    sys.exit(f"Error: {exc}")

MODELS = list(config["models"])
SCENARIOS = list(config["scenarios"])
EMBEDDED_DIR = config["embedded"]["dir"].rstrip("/")
NAME = "[A-Za-z0-9_.-]+"


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


def model_dir_inputs(path):
    """Files that stand for a base or adapter directory: built by the embedded family's
    rules, or existing local files (so that replacing them reruns what depends on them).
    """
    if not path:
        return []
    if is_embedded(config, path):
        return (
            [f"{path}/config.json"]
            if not path.startswith(f"{EMBEDDED_DIR}/adapters/")
            else [
                f"{path}/adapter_config.json",
                f"{path}/adapter_model.safetensors",
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
        if adapter and not is_embedded(config, adapter) and not Path(adapter).is_dir():
            sys.exit(
                f"Error: config: models.{name}.adapter: adapter directory not found: {adapter}"
            )


check_adapter_paths()


def prompt_tokenizer_model():
    return config.get("prompt_tokenizer_model") or MODELS[0]


def cache_files(models=None, scenarios=None):
    return [
        f"results/cache/{m}/{s}.h5"
        for m in (models or MODELS)
        for s in (scenarios or SCENARIOS)
    ]


def code_version(*modules):
    """Short sha256 of interp_lib modules (e.g. "dla", "plotting/style"): used as a param,
    so that editing an analysis module reruns its rules (Snakemake does not track imports).
    """
    import hashlib
    import interp_lib

    root = Path(interp_lib.__file__).parent
    h = hashlib.sha256()
    for module in modules:
        h.update((root / f"{module}.py").read_bytes())
    return h.hexdigest()[:12]


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
        "source_cache": f"results/cache/{source}/{wc.scenario}.h5",
        "target_cache": f"results/cache/{target}/{wc.scenario}.h5",
        "source_fingerprint": f"results/models/{source}/fingerprint.json",
        "target_fingerprint": f"results/models/{target}/fingerprint.json",
        "source_weights": f"results/models/{source}/model.safetensors",
        "target_weights": f"results/models/{target}/model.safetensors",
    }
