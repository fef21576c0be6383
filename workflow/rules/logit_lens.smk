# Logit lens from the activation caches (no model is loaded): one job per model and
# scenario, then the tables and the plots.


rule logit_lens_scenario:
    input:
        cache="results/cache/{model}/{scenario}.h5",
        fingerprint="results/models/{model}/fingerprint.json",
    output:
        "results/logit_lens/per/{model}/{scenario}.json",
    log:
        "results/logs/logit_lens/{model}/{scenario}.log",
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_version("logit_lens"),
    script:
        "../scripts/logit_lens_scenario.py"


rule logit_lens_tables:
    input:
        expand(
            "results/logit_lens/per/{model}/{scenario}.json",
            model=MODELS,
            scenario=SCENARIOS,
        ),
    output:
        trajectories="results/logit_lens/trajectories.json",
        statistics="results/logit_lens/statistics.csv",
    log:
        "results/logs/logit_lens/tables.log",
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_version("logit_lens"),
    script:
        "../scripts/logit_lens_tables.py"


rule logit_lens_plots:
    input:
        "results/logit_lens/trajectories.json",
    output:
        comparison=[
            report(
                f"results/logit_lens/logit_lens_comparison_{scenario}.png",
                caption="../report/logit_lens_comparison.rst",
                category="Logit lens",
                subcategory="Per scenario",
                labels={"scenario": scenario, "figure": "model comparison"},
            )
            for scenario in SCENARIOS
        ],
        grid=report(
            "results/logit_lens/logit_lens_grid.png",
            caption="../report/logit_lens_grid.rst",
            category="Logit lens",
            subcategory="Overview",
            labels={"figure": "all scenarios"},
        ),
        heatmap=report(
            "results/logit_lens/final_preferences_heatmap.png",
            caption="../report/final_preferences_heatmap.rst",
            category="Logit lens",
            subcategory="Overview",
            labels={"figure": "final preferences"},
        ),
    log:
        "results/logs/logit_lens/plots.log",
    conda:
        "../../envs/interp.yaml"
    params:
        models=MODELS,
        scenarios=SCENARIOS,
        labels={m: model_label(m) for m in MODELS},
        code=code_version("plots/__init__", "plots/logit_lens", "style"),
    script:
        "../scripts/logit_lens_plots.py"
