# Activation patching: one job per (experiment, scenario) runs the target model; the
# per-experiment tables, plots and the cross-experiment summary aggregate them.
rule patch_scenario:
    input:
        unpack(patch_inputs),
    output:
        results="results/patching/per/{experiment}/{scenario}/patches.csv",
        circuits="results/patching/per/{experiment}/{scenario}/circuits.csv",
    log:
        "results/logs/patching/{experiment}/{scenario}.log",
    benchmark:
        "results/benchmarks/patching/{experiment}/{scenario}.tsv"
    conda:
        "../../envs/interp.yaml"
    resources:
        mem_mb=16000,
        runtime=60,
        gpu=1 if config["analysis"]["device"].startswith("cuda") else 0,
    params:
        source=lambda wc: experiment_models(wc)[0],
        target=lambda wc: experiment_models(wc)[1],
        positions=config["analysis"]["patch_positions"],
        head_site=lambda wc: config["analysis"]["head_patch_site"],
        circuits=config["analysis"]["circuits"],
        max_components=config["analysis"]["max_circuit_components"],
        atp=config["analysis"]["atp"],
        circuit_ranking=config["analysis"]["circuit_ranking"],
        dtype=config["analysis"]["dtype"],
        device=config["analysis"]["device"],
        code=code_version("patching", "hooked"),
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
    log:
        "results/logs/patching/{experiment}/tables.log",
    conda:
        "../../envs/interp.yaml"
    params:
        top_k=config["analysis"]["top_k"],
        code=code_version("patching_summary"),
    script:
        "../scripts/patch_experiment_tables.py"


rule cross_experiment_summary:
    input:
        results=expand(
            "results/patching/patch_results_{experiment}.csv", experiment=EXPERIMENTS
        ),
        circuits=expand(
            "results/patching/circuits_{experiment}.csv", experiment=EXPERIMENTS
        ),
    output:
        "results/patching/cross_experiment_summary.csv",
    log:
        "results/logs/patching/cross_experiment_summary.log",
    conda:
        "../../envs/interp.yaml"
    params:
        experiments=EXPERIMENTS,
        top_k=config["analysis"]["top_k"],
        code=code_version("patching_summary"),
    script:
        "../scripts/cross_experiment_summary.py"
