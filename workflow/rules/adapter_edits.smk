# LoRA adapter edits in weight space: one job per (fine-tune, scenario) runs the base model
# with adapters' exact updates swapped in (ablation, sufficiency, transplants, the minimal
# sufficient set); one job writes the tables, one draws a figure per fine-tune.
rule adapter_edits_scenario:
    input:
        unpack(adapter_edit_inputs),
    output:
        edits=R("adapter_edits/per/{model}/{scenario}/edits.csv"),
        sets=R("adapter_edits/per/{model}/{scenario}/minimal_set.csv"),
    log:
        R("logs/adapter_edits/{model}/{scenario}.log"),
    benchmark:
        R("benchmarks/adapter_edits/{model}/{scenario}.tsv")
    wildcard_constraints:
        model="|".join(re.escape(m) for m in EDIT_MODELS) or "^$",
    conda:
        "../../envs/interp.yaml"
    resources:
        mem_mb=16000,
        runtime=60,
        gpu=1 if config["analysis"]["device"].startswith("cuda") else 0,
    params:
        reference=lambda wc: EDIT_MODELS[wc.model],
        adapter=lambda wc: config["models"][wc.model]["adapter"],
        donors=lambda wc: adapter_edit_donors(wc.model),
        settings=EDIT_SETTINGS,
        precision=config["analysis"]["precision"],
        device=config["analysis"]["device"],
        allow_pickle=config["analysis"]["allow_pickle"],
        code=code_version("adapter_edits_scenario"),
    script:
        "../scripts/adapter_edits_scenario.py"


rule adapter_edits_tables:
    input:
        edits=adapter_edit_outputs("edits"),
        sets=adapter_edit_outputs("minimal_set"),
    output:
        results=R("adapter_edits/edit_results.csv"),
        summary=R("adapter_edits/edit_summary.csv"),
        verdicts=R("adapter_edits/layer_verdicts.csv"),
        sets=R("adapter_edits/minimal_sets.csv"),
    log:
        R("logs/adapter_edits/tables.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        skipped=EDIT_SKIPPED,
        code=code_version("adapter_edits_tables"),
    script:
        "../scripts/adapter_edits_tables.py"


rule adapter_edits_plots:
    input:
        summary=R("adapter_edits/edit_summary.csv"),
    output:
        figures=[
            report(
                R(f"adapter_edits/adapter_edits_{m}.png"),
                caption="../report/adapter_edits.rst",
                category="Adapter edits",
                labels={"model": m},
            )
            for m in EDIT_MODELS
        ],
    log:
        R("logs/adapter_edits/plots.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        models=list(EDIT_MODELS),
        labels={m: model_label(m) for m in EDIT_MODELS},
        code=code_version("adapter_edits_plots"),
    script:
        "../scripts/adapter_edits_plots.py"
