# Direct logit attribution from the activation caches (no model is loaded): one job per
# model writes its table of every scenario, then one job the tables of every model and one
# job every figure (per model and scenario, per model, per scenario).


rule dla_model:
    input:
        caches=expand(R("cache/{{model}}/{scenario}.h5"), scenario=SCENARIOS),
        fingerprint=R("models/{model}/fingerprint.json"),
    output:
        components=expand(R("dla/per/{{model}}/{scenario}.csv"), scenario=SCENARIOS),
        summary=expand(
            R("dla/per/{{model}}/{scenario}.summary.csv"), scenario=SCENARIOS
        ),
    log:
        R("logs/dla/per/{model}.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_version("dla_model"),
    script:
        "../scripts/dla_model.py"


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


rule dla_plots:
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
        heads=[
            report(
                R(f"dla/dla_heads_{m}_{s}.png"),
                caption="../report/dla_heads.rst",
                category="Direct logit attribution",
                subcategory="Heads",
                labels={"model": m, "scenario": s},
            )
            for m in MODELS
            for s in SCENARIOS
        ],
        mlps=[
            report(
                R(f"dla/dla_mlps_{m}_{s}.png"),
                caption="../report/dla_mlps.rst",
                category="Direct logit attribution",
                subcategory="MLPs",
                labels={"model": m, "scenario": s},
            )
            for m in MODELS
            for s in SCENARIOS
        ],
        top=[
            report(
                R(f"dla/dla_top_components_{m}.png"),
                caption="../report/dla_top_components.rst",
                category="Direct logit attribution",
                subcategory="Top components",
                labels={"model": m},
            )
            for m in MODELS
        ],
        comparison=[
            report(
                R(f"dla/dla_model_comparison_{s}.png"),
                caption="../report/dla_model_comparison.rst",
                category="Direct logit attribution",
                subcategory="Model comparison",
                labels={"scenario": s},
            )
            for s in SCENARIOS
        ],
    log:
        R("logs/dla/plots.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        models=MODELS,
        scenarios=SCENARIOS,
        labels={m: model_label(m) for m in MODELS},
        top_k=config["analysis"]["top_k"],
        code=code_version("dla_plots"),
    script:
        "../scripts/dla_plots.py"
