# Direct logit attribution from the activation caches (no model is loaded): one job per
# model and scenario, then the tables and the plots.


rule dla_scenario:
    input:
        cache=R("cache/{model}/{scenario}.h5"),
        fingerprint=R("models/{model}/fingerprint.json"),
    output:
        components=R("dla/per/{model}/{scenario}.csv"),
        summary=R("dla/per/{model}/{scenario}.summary.csv"),
    log:
        R("logs/dla/{model}/{scenario}.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_version("dla_scenario"),
    script:
        "../scripts/dla_scenario.py"


rule dla_tables:
    input:
        components=expand(
            R("dla/per/{model}/{scenario}.csv"), model=MODELS, scenario=SCENARIOS
        ),
        summary=expand(
            R("dla/per/{model}/{scenario}.summary.csv"),
            model=MODELS,
            scenario=SCENARIOS,
        ),
    output:
        full=R("dla/dla_full_results.csv"),
        summary=R("dla/dla_summary_stats.csv"),
        top=R("dla/dla_top_components.csv"),
    log:
        R("logs/dla/tables.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        top_k=config["analysis"]["top_k"],
        code=code_version("dla_tables"),
    script:
        "../scripts/dla_tables.py"


rule dla_plots_scenario:
    input:
        components=R("dla/per/{model}/{scenario}.csv"),
        summary=R("dla/per/{model}/{scenario}.summary.csv"),
    output:
        heads=report(
            R("dla/dla_heads_{model}_{scenario}.png"),
            caption="../report/dla_heads.rst",
            category="Direct logit attribution",
            subcategory="Heads",
            labels={"model": "{model}", "scenario": "{scenario}"},
        ),
        mlps=report(
            R("dla/dla_mlps_{model}_{scenario}.png"),
            caption="../report/dla_mlps.rst",
            category="Direct logit attribution",
            subcategory="MLPs",
            labels={"model": "{model}", "scenario": "{scenario}"},
        ),
    log:
        R("logs/dla/plots_{model}_{scenario}.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        label=lambda wc: model_label(wc.model),
        code=code_version("dla_plots_scenario"),
    script:
        "../scripts/dla_plots_scenario.py"


rule dla_plots_model:
    input:
        components=expand(R("dla/per/{{model}}/{scenario}.csv"), scenario=SCENARIOS),
        summary=expand(
            R("dla/per/{{model}}/{scenario}.summary.csv"), scenario=SCENARIOS
        ),
    output:
        report(
            R("dla/dla_top_components_{model}.png"),
            caption="../report/dla_top_components.rst",
            category="Direct logit attribution",
            subcategory="Top components",
            labels={"model": "{model}"},
        ),
    log:
        R("logs/dla/plots_{model}.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        label=lambda wc: model_label(wc.model),
        top_k=config["analysis"]["top_k"],
        code=code_version("dla_plots_model"),
    script:
        "../scripts/dla_plots_model.py"


rule dla_plots_comparison:
    input:
        components=expand(R("dla/per/{model}/{{scenario}}.csv"), model=MODELS),
        summary=expand(R("dla/per/{model}/{{scenario}}.summary.csv"), model=MODELS),
    output:
        report(
            R("dla/dla_model_comparison_{scenario}.png"),
            caption="../report/dla_model_comparison.rst",
            category="Direct logit attribution",
            subcategory="Model comparison",
            labels={"scenario": "{scenario}"},
        ),
    log:
        R("logs/dla/plots_comparison_{scenario}.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        models=MODELS,
        labels={m: model_label(m) for m in MODELS},
        code=code_version("dla_plots_comparison"),
    script:
        "../scripts/dla_plots_comparison.py"
