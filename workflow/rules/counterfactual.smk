# Counterfactual prompt patching within one model: one job per configured counterfactual
# runs the model on its two scenarios' cached activations (components and residual stream
# per layer x position); the figures are drawn from its tables.
rule counterfactual_patch:
    input:
        unpack(counterfactual_inputs),
    output:
        components=R("counterfactual/per/{counterfactual}/component_patches.csv"),
        residual=R("counterfactual/per/{counterfactual}/residual_patches.csv"),
    log:
        R("logs/counterfactual/{counterfactual}.log"),
    benchmark:
        R("benchmarks/counterfactual/{counterfactual}.tsv")
    conda:
        "../../envs/interp.yaml"
    resources:
        mem_mb=16000,
        runtime=60,
        gpu=1 if config["analysis"]["device"].startswith("cuda") else 0,
    params:
        model=lambda wc: config["counterfactuals"][wc.counterfactual]["model"],
        source=lambda wc: config["counterfactuals"][wc.counterfactual]["source"],
        target=lambda wc: config["counterfactuals"][wc.counterfactual]["target"],
        positions=config["analysis"]["patch_positions"],
        head_site=lambda wc: config["analysis"]["head_patch_site"],
        residual=config["analysis"]["residual_patching"],
        precision=config["analysis"]["precision"],
        device=config["analysis"]["device"],
        code=code_version("counterfactual_patch"),
    script:
        "../scripts/counterfactual_patch.py"


rule counterfactual_plots:
    input:
        components=R("counterfactual/per/{counterfactual}/component_patches.csv"),
        residual=R("counterfactual/per/{counterfactual}/residual_patches.csv"),
    output:
        residual=report(
            R("counterfactual/residual_heatmap_{counterfactual}.png"),
            caption="../report/counterfactual_residual.rst",
            category="Counterfactual patching",
            subcategory="Residual stream",
            labels={"counterfactual": "{counterfactual}"},
        ),
        components=report(
            R("counterfactual/component_heatmap_{counterfactual}.png"),
            caption="../report/counterfactual_components.rst",
            category="Counterfactual patching",
            subcategory="Components",
            labels={"counterfactual": "{counterfactual}"},
        ),
    log:
        R("logs/counterfactual/plots_{counterfactual}.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_version("counterfactual_plots"),
    script:
        "../scripts/counterfactual_plots.py"
