# Direct logit attribution from the activation caches (no model is loaded): one job per
# model and scenario, then the tables and the plots.


rule dla_scenario:
    input:
        cache="results/cache/{model}/{scenario}.h5",
        fingerprint="results/models/{model}/fingerprint.json",
    output:
        components="results/dla/per/{model}/{scenario}.csv",
        summary="results/dla/per/{model}/{scenario}.summary.csv",
    log:
        "results/logs/dla/{model}/{scenario}.log",
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_version("dla", "logit_lens"),
    script:
        "../scripts/dla_scenario.py"


rule dla_tables:
    input:
        components=expand(
            "results/dla/per/{model}/{scenario}.csv", model=MODELS, scenario=SCENARIOS
        ),
        summary=expand(
            "results/dla/per/{model}/{scenario}.summary.csv",
            model=MODELS,
            scenario=SCENARIOS,
        ),
    output:
        full="results/dla/dla_full_results.csv",
        summary="results/dla/dla_summary_stats.csv",
        top="results/dla/dla_top_components.csv",
    log:
        "results/logs/dla/tables.log",
    conda:
        "../../envs/interp.yaml"
    params:
        top_k=config["analysis"]["top_k"],
        code=code_version("dla"),
    script:
        "../scripts/dla_tables.py"


rule dla_plots_model:
    input:
        components=expand(
            "results/dla/per/{{model}}/{scenario}.csv", scenario=SCENARIOS
        ),
        summary=expand(
            "results/dla/per/{{model}}/{scenario}.summary.csv", scenario=SCENARIOS
        ),
    output:
        heads=[
            report(
                f"results/dla/dla_heads_{{model}}_{scenario}.png",
                caption="../report/dla_heads.rst",
                category="Direct logit attribution",
                subcategory="Heads",
                labels={"model": "{model}", "scenario": scenario},
            )
            for scenario in SCENARIOS
        ],
        mlps=[
            report(
                f"results/dla/dla_mlps_{{model}}_{scenario}.png",
                caption="../report/dla_mlps.rst",
                category="Direct logit attribution",
                subcategory="MLPs",
                labels={"model": "{model}", "scenario": scenario},
            )
            for scenario in SCENARIOS
        ],
        top=report(
            "results/dla/dla_top_components_{model}.png",
            caption="../report/dla_top_components.rst",
            category="Direct logit attribution",
            subcategory="Top components",
            labels={"model": "{model}"},
        ),
    log:
        "results/logs/dla/plots_{model}.log",
    conda:
        "../../envs/interp.yaml"
    params:
        label=lambda wc: model_label(wc.model),
        top_k=config["analysis"]["top_k"],
        code=code_version("plots/__init__", "plots/dla", "style"),
    script:
        "../scripts/dla_plots_model.py"


rule dla_plots_comparison:
    input:
        full="results/dla/dla_full_results.csv",
        summary="results/dla/dla_summary_stats.csv",
    output:
        [
            report(
                f"results/dla/dla_model_comparison_{scenario}.png",
                caption="../report/dla_model_comparison.rst",
                category="Direct logit attribution",
                subcategory="Model comparison",
                labels={"scenario": scenario},
            )
            for scenario in SCENARIOS
        ],
    log:
        "results/logs/dla/plots_comparison.log",
    conda:
        "../../envs/interp.yaml"
    params:
        models=MODELS,
        scenarios=SCENARIOS,
        labels={m: model_label(m) for m in MODELS},
        code=code_version("plots/__init__", "plots/dla", "style"),
    script:
        "../scripts/dla_plots_comparison.py"
