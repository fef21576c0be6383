# Activation patching: one job per (experiment, scenario) runs the target model; the
# per-experiment tables, plots and the cross-experiment summary aggregate them.
from interp_lib.config import patch_scenarios

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
        "target_weights": f"results/models/{target}/model.safetensors",
    }


rule patch_scenario:
    input:
        unpack(patch_inputs),
    output:
        results="results/patching/per/{experiment}/{scenario}/patches.csv",
        circuits="results/patching/per/{experiment}/{scenario}/circuits.csv",
    params:
        source=lambda wc: experiment_models(wc)[0],
        target=lambda wc: experiment_models(wc)[1],
        positions=config["analysis"]["patch_positions"],
        head_site=config["analysis"]["head_patch_site"],
        circuits=config["analysis"]["circuits"],
        max_components=config["analysis"]["max_circuit_components"],
        atp=config["analysis"]["atp"],
        circuit_ranking=config["analysis"]["circuit_ranking"],
        dtype=config["analysis"]["dtype"],
        device=config["analysis"]["device"],
        code=code_version("patching", "hooked"),
    log:
        "results/logs/patching/{experiment}/{scenario}.log",
    benchmark:
        "results/benchmarks/patching/{experiment}/{scenario}.tsv"
    resources:
        mem_mb=16000,
        runtime=60,
        gpu=1 if config["analysis"]["device"].startswith("cuda") else 0,
    conda:
        "../../envs/interp.yaml"
    script:
        "../scripts/patch_scenario.py"


rule patch_experiment_tables:
    input:
        results=expand(
            "results/patching/per/{{experiment}}/{scenario}/patches.csv",
            scenario=PATCH_SCENARIOS,
        ),
        circuits=expand(
            "results/patching/per/{{experiment}}/{scenario}/circuits.csv",
            scenario=PATCH_SCENARIOS,
        ),
    output:
        results="results/patching/patch_results_{experiment}.csv",
        summary="results/patching/patch_summary_{experiment}.csv",
        circuits="results/patching/circuits_{experiment}.csv",
        top="results/patching/top_components_{experiment}.csv",
    params:
        top_k=config["analysis"]["top_k"],
        code=code_version("patching_summary"),
    log:
        "results/logs/patching/{experiment}/tables.log",
    conda:
        "../../envs/interp.yaml"
    script:
        "../scripts/patch_experiment_tables.py"


rule cross_experiment_summary:
    input:
        results=expand("results/patching/patch_results_{experiment}.csv", experiment=EXPERIMENTS),
        circuits=expand("results/patching/circuits_{experiment}.csv", experiment=EXPERIMENTS),
    output:
        "results/patching/cross_experiment_summary.csv",
    params:
        experiments=EXPERIMENTS,
        top_k=config["analysis"]["top_k"],
        code=code_version("patching_summary"),
    log:
        "results/logs/patching/cross_experiment_summary.log",
    conda:
        "../../envs/interp.yaml"
    script:
        "../scripts/cross_experiment_summary.py"
