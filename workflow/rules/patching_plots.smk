# Activation-patching figures from the patching tables (no model is loaded): one job per
# experiment draws the component heatmap and the circuit discovery of every patched
# scenario, the top components and their consistency across scenarios.


rule patch_plots_experiment:
    input:
        results=R("patching/patch_results_{experiment}.csv"),
        top=R("patching/top_components_{experiment}.csv"),
        scenario_results=expand(
            R("patching/per/{{experiment}}/{scenario}/patches.csv"),
            scenario=PATCH_SCENARIOS,
        ),
        scenario_circuits=expand(
            R("patching/per/{{experiment}}/{scenario}/circuits.csv"),
            scenario=PATCH_SCENARIOS,
        ),
    output:
        heatmaps=[
            report(
                R(f"patching/patch_heatmap_{{experiment}}_{s}.png"),
                caption="../report/patch_heatmap.rst",
                category="Activation patching",
                subcategory="Component heatmaps",
                labels={"experiment": "{experiment}", "scenario": s},
            )
            for s in PATCH_SCENARIOS
        ],
        circuits=[
            report(
                R(f"patching/circuit_discovery_{{experiment}}_{s}.png"),
                caption="../report/circuit_discovery.rst",
                category="Activation patching",
                subcategory="Circuit discovery",
                labels={"experiment": "{experiment}", "scenario": s},
            )
            for s in PATCH_SCENARIOS
        ],
        top=report(
            R("patching/patch_top_components_{experiment}.png"),
            caption="../report/patch_top_components.rst",
            category="Activation patching",
            subcategory="Top components",
            labels={"experiment": "{experiment}", "figure": "top components"},
        ),
        consistency=report(
            R("patching/patch_consistency_{experiment}.png"),
            caption="../report/patch_consistency.rst",
            category="Activation patching",
            subcategory="Consistency across scenarios",
            labels={"experiment": "{experiment}", "figure": "consistency"},
        ),
    log:
        R("logs/patching/{experiment}/plots.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        scenarios=PATCH_SCENARIOS,
        source=lambda wc: experiment_models(wc)[0],
        target=lambda wc: experiment_models(wc)[1],
        style=lambda wc: model_style(experiment_models(wc)),
        circuits=config["analysis"]["circuits"],
        top_k=config["analysis"]["top_k"],
        code=code_version("patch_plots_experiment"),
    script:
        "../scripts/patch_plots_experiment.py"


# Path patching: the progressive curves of every experiment, one job.
rule path_patch_plots:
    input:
        summary=R("patching/path_patching_summary.csv"),
    output:
        [
            report(
                R(f"patching/path_patching_{e}.png"),
                caption="../report/path_patching.rst",
                category="Activation patching",
                subcategory="Path patching",
                labels={"experiment": e, "figure": "path patching"},
            )
            for e in EXPERIMENTS
        ],
    log:
        R("logs/patching/path_patch_plots.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        experiments=EXPERIMENTS,
        labels={
            m: model_label(m)
            for e in EXPERIMENTS
            for m in (
                config["experiments"][e]["source"],
                config["experiments"][e]["target"],
            )
        },
        code=code_version("path_patch_plots"),
    script:
        "../scripts/path_patch_plots.py"
