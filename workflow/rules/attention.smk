# Attention patterns from the activation caches (no model is loaded): for every scenario,
# the decision position's attention of the heads with the largest |DLA| and |patching
# effect| (top_k of each), as a table (one job for every scenario's table) and a figure
# (one job for every scenario's figure).


rule attention_tables:
    input:
        caches=cache_files(),
        fingerprints=expand(R("models/{model}/fingerprint.json"), model=MODELS),
        dla=expand(
            R("dla/per/{model}/{scenario}.csv"), model=MODELS, scenario=SCENARIOS
        ),
        patches=expand(
            R("patching/per/{experiment}/{scenario}/patches.csv"),
            experiment=EXPERIMENTS,
            scenario=PATCH_SCENARIOS,
        ),
    output:
        expand(R("attention/attention_{scenario}.csv"), scenario=SCENARIOS),
    log:
        R("logs/attention/tables.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        scenarios=ATTENTION_INPUTS,
        top_k=config["analysis"]["top_k"],
        code=code_version("attention_tables"),
    script:
        "../scripts/attention_tables.py"


rule attention_plots:
    input:
        expand(R("attention/attention_{scenario}.csv"), scenario=SCENARIOS),
    output:
        [
            report(
                R(f"attention/attention_{s}.png"),
                caption="../report/attention.rst",
                category="Attention patterns",
                labels={"scenario": s},
            )
            for s in SCENARIOS
        ],
    log:
        R("logs/attention/plots.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        scenarios=SCENARIOS,
        style=model_style(MODELS),
        code=code_version("attention_plots"),
    script:
        "../scripts/attention_plots.py"
