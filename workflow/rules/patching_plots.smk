# Activation-patching figures from the patching tables (no model is loaded): per
# (experiment, scenario) the component heatmap and the circuit discovery, per experiment
# the top components and their consistency across scenarios.


rule patch_plots_scenario:
    input:
        results=R("patching/per/{experiment}/{scenario}/patches.csv"),
        circuits=R("patching/per/{experiment}/{scenario}/circuits.csv"),
    output:
        heatmap=report(
            R("patching/patch_heatmap_{experiment}_{scenario}.png"),
            caption="../report/patch_heatmap.rst",
            category="Activation patching",
            subcategory="Component heatmaps",
            labels={"experiment": "{experiment}", "scenario": "{scenario}"},
        ),
        circuit=report(
            R("patching/circuit_discovery_{experiment}_{scenario}.png"),
            caption="../report/circuit_discovery.rst",
            category="Activation patching",
            subcategory="Circuit discovery",
            labels={"experiment": "{experiment}", "scenario": "{scenario}"},
        ),
    log:
        R("logs/patching/{experiment}/plots_{scenario}.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        source=lambda wc: experiment_models(wc)[0],
        target=lambda wc: experiment_models(wc)[1],
        style=lambda wc: model_style(experiment_models(wc)),
        circuits=config["analysis"]["circuits"],
        code=code_version("patch_plots_scenario"),
    script:
        "../scripts/patch_plots_scenario.py"


rule patch_plots_experiment:
    input:
        results=R("patching/patch_results_{experiment}.csv"),
        top=R("patching/top_components_{experiment}.csv"),
    output:
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
        style=lambda wc: model_style(experiment_models(wc)),
        top_k=config["analysis"]["top_k"],
        code=code_version("patch_plots_experiment"),
    script:
        "../scripts/patch_plots_experiment.py"
