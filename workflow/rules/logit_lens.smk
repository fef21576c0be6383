# Logit lens from the activation caches (no model is loaded): one job per model writes its
# trajectories of every scenario, then one job the tables and one job every figure.


rule logit_lens_model:
    input:
        caches=expand(R("cache/{{model}}/{scenario}.h5"), scenario=SCENARIOS),
        fingerprint=R("models/{model}/fingerprint.json"),
    output:
        expand(R("logit_lens/per/{{model}}/{scenario}.json"), scenario=SCENARIOS),
    log:
        R("logs/logit_lens/per/{model}.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_version("logit_lens_model"),
    script:
        "../scripts/logit_lens_model.py"


rule logit_lens_tables:
    input:
        expand(
            R("logit_lens/per/{model}/{scenario}.json"),
            model=MODELS,
            scenario=SCENARIOS,
        ),
    output:
        trajectories=R("logit_lens/trajectories.json"),
        statistics=R("logit_lens/statistics.csv"),
    log:
        R("logs/logit_lens/tables.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_version("logit_lens_tables"),
    script:
        "../scripts/logit_lens_tables.py"


rule logit_lens_plots:
    input:
        R("logit_lens/trajectories.json"),
    output:
        comparison=[
            report(
                R(f"logit_lens/logit_lens_comparison_{s}.png"),
                caption="../report/logit_lens_comparison.rst",
                category="Logit lens",
                subcategory="Per scenario",
                labels={"scenario": s, "figure": "model comparison"},
            )
            for s in SCENARIOS
        ],
        grid=report(
            R("logit_lens/logit_lens_grid.png"),
            caption="../report/logit_lens_grid.rst",
            category="Logit lens",
            subcategory="Overview",
            labels={"figure": "all scenarios"},
        ),
        heatmap=report(
            R("logit_lens/final_preferences_heatmap.png"),
            caption="../report/final_preferences_heatmap.rst",
            category="Logit lens",
            subcategory="Overview",
            labels={"figure": "final preferences"},
        ),
    log:
        R("logs/logit_lens/plots.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        models=MODELS,
        scenarios=SCENARIOS,
        labels={m: model_label(m) for m in MODELS},
        code=code_version("logit_lens_plots"),
    script:
        "../scripts/logit_lens_plots.py"
