# Activation patching: one job per (experiment, scenario) runs the target model; the
# per-experiment tables, plots and the cross-experiment summary aggregate them.
rule patch_scenario:
    input:
        unpack(patch_inputs),
    output:
        results=R("patching/per/{experiment}/{scenario}/patches.csv"),
        circuits=R("patching/per/{experiment}/{scenario}/circuits.csv"),
        path_patches=R("patching/per/{experiment}/{scenario}/path_patches.csv"),
    log:
        R("logs/patching/{experiment}/{scenario}.log"),
    benchmark:
        R("benchmarks/patching/{experiment}/{scenario}.tsv")
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
        path_patching=config["analysis"]["path_patching"],
        path_starts=config["analysis"]["path_patch_starts"],
        precision=config["analysis"]["precision"],
        device=config["analysis"]["device"],
        code=code_version("patch_scenario"),
    script:
        "../scripts/patch_scenario.py"


rule patch_experiment_tables:
    input:
        results=expand(
            R("patching/per/{{experiment}}/{scenario}/patches.csv"),
            scenario=PATCH_SCENARIOS,
        ),
        circuits=expand(
            R("patching/per/{{experiment}}/{scenario}/circuits.csv"),
            scenario=PATCH_SCENARIOS,
        ),
    output:
        results=R("patching/patch_results_{experiment}.csv"),
        summary=R("patching/patch_summary_{experiment}.csv"),
        circuits=R("patching/circuits_{experiment}.csv"),
        top=R("patching/top_components_{experiment}.csv"),
    log:
        R("logs/patching/{experiment}/tables.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        top_k=config["analysis"]["top_k"],
        code=code_version("patch_experiment_tables"),
    script:
        "../scripts/patch_experiment_tables.py"


rule cross_experiment_summary:
    input:
        results=expand(
            R("patching/patch_results_{experiment}.csv"), experiment=EXPERIMENTS
        ),
        circuits=expand(R("patching/circuits_{experiment}.csv"), experiment=EXPERIMENTS),
    output:
        R("patching/cross_experiment_summary.csv"),
    log:
        R("logs/patching/cross_experiment_summary.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        experiments=EXPERIMENTS,
        top_k=config["analysis"]["top_k"],
        code=code_version("cross_experiment_summary"),
    script:
        "../scripts/cross_experiment_summary.py"


# Path patching (computed by patch_scenario): one table job for every experiment and scenario.
localrules:
    path_patch_tables,


rule path_patch_tables:
    input:
        expand(
            R("patching/per/{experiment}/{scenario}/path_patches.csv"),
            experiment=EXPERIMENTS,
            scenario=PATCH_SCENARIOS,
        ),
    output:
        summary=R("patching/path_patching_summary.csv"),
        saturation=R("patching/path_patching_saturation.csv"),
    log:
        R("logs/patching/path_patch_tables.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_version("path_patch_tables"),
    script:
        "../scripts/path_patch_tables.py"
