# Merged-weight changes of each fine-tuned model against its base, their heatmaps, and the
# research-question summary (RQ1-RQ3) built from every analysis table; the summary's HTML
# rendering and the heatmaps are items of `snakemake --report`.
from interp_lib.report.rq_summary import experiments_needed, resolve_roles
from interp_lib.analyses.weight_deltas import compared_models

# {fine-tuned model: reference}: the reference is the configured model without an adapter
# on the same base ("base" preferred).
WEIGHT_MODELS = compared_models(config)
# role -> model (the config's `roles`, filled from the schema's defaults; see
# interp_lib.report.rq_summary.resolve_roles); RQ_EXPERIMENTS: the configured experiments
# the summary reads.
RQ_ROLES = resolve_roles(config)
RQ_EXPERIMENTS = experiments_needed(config["experiments"], RQ_ROLES)


report: "../report/workflow.rst"


rule weight_deltas:
    input:
        weights=R("models/{model}/model.safetensors"),
        fingerprint=R("models/{model}/fingerprint.json"),
        reference_weights=lambda wc: R(
            f"models/{WEIGHT_MODELS[wc.model]}/model.safetensors"
        ),
        reference_fingerprint=lambda wc: R(
            f"models/{WEIGHT_MODELS[wc.model]}/fingerprint.json"
        ),
        # the update is computed from the adapter's factors (the merged model's weights
        # are read only for an adapter variant whose update is not B @ A, e.g. DoRA)
        adapter=lambda wc: model_dir_inputs(config["models"][wc.model]["adapter"]),
    output:
        R("weights/{model}.csv"),
    log:
        R("logs/weights/{model}.log"),
    wildcard_constraints:
        model="|".join(re.escape(m) for m in WEIGHT_MODELS) or "^$",
    conda:
        "../../envs/interp.yaml"
    resources:
        mem_mb=2000,
    params:
        reference=lambda wc: WEIGHT_MODELS[wc.model],
        adapter=lambda wc: config["models"][wc.model]["adapter"],
        allow_pickle=config["analysis"]["allow_pickle"],
        code=code_version("weight_deltas"),
    script:
        "../scripts/weight_deltas.py"


rule weight_deltas_table:
    input:
        expand(R("weights/{model}.csv"), model=WEIGHT_MODELS),
    output:
        R("weights/weight_deltas.csv"),
    log:
        R("logs/weights/table.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_version("weight_deltas_table"),
    script:
        "../scripts/weight_deltas_table.py"


rule weight_deltas_plot:
    input:
        R("weights/weight_deltas.csv"),
    output:
        modules=report(
            R("weights/weight_deltas_modules.png"),
            caption="../report/weights_modules.rst",
            category="Weights",
            subcategory="Merged-weight change",
            labels={"figure": "layers x modules"},
        ),
        heads=report(
            R("weights/weight_deltas_heads.png"),
            caption="../report/weights_heads.rst",
            category="Weights",
            subcategory="Merged-weight change",
            labels={"figure": "layers x heads (o_proj)"},
        ),
    log:
        R("logs/weights/plot.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        models=MODELS,
        labels={m: model_label(m) for m in MODELS},
        code=code_version("weight_deltas_plot"),
    script:
        "../scripts/weight_deltas_plot.py"


rule rq_summary:
    input:
        dla=R("dla/dla_full_results.csv"),
        decisions=R("behavior/decisions.csv"),
        weights=R("weights/weight_deltas.csv"),
        patch_results=expand(
            R("patching/patch_results_{experiment}.csv"),
            experiment=RQ_EXPERIMENTS,
        ),
        circuits=expand(
            R("patching/circuits_{experiment}.csv"), experiment=RQ_EXPERIMENTS
        ),
        counterfactual_residual=expand(
            R("counterfactual/per/{counterfactual}/residual_patches.csv"),
            counterfactual=COUNTERFACTUALS,
        ),
        counterfactual_components=expand(
            R("counterfactual/per/{counterfactual}/component_patches.csv"),
            counterfactual=COUNTERFACTUALS,
        ),
        steering_layers=expand(
            R("steering/steering_layers_{steering}.csv"), steering=STEERING
        ),
        probes=R("probes/probe_accuracy.csv"),
        interactions_summary=R("interactions/summary.csv"),
        interactions_differences=R("interactions/differences.csv"),
        path_saturation=R("patching/path_patching_saturation.csv"),
        adapter_edits=ADAPTER_EDIT_TABLES,
        transfer=TRANSFER_TABLES,
        diffing=DIFFING_TABLES,
    output:
        md=R("rq_summary.md"),
        html=report(
            R("rq_summary.html"),
            caption="../report/rq_summary.rst",
            category="Research questions",
            subcategory="Summary",
            labels={"summary": "RQ1-RQ3"},
        ),
    log:
        R("logs/rq_summary.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        config={"models": config["models"], "experiments": config["experiments"]},
        roles=RQ_ROLES,
        experiments=RQ_EXPERIMENTS,
        counterfactuals=COUNTERFACTUALS,
        steering=STEERING,
        labels={m: model_label(m) for m in MODELS},
        other_contexts=(
            [s for s in SCENARIOS if CONTEXTS[s] != REFERENCE] if TRANSFER else []
        ),
        n_rows=10,
        code=code_version("rq_summary"),
    script:
        "../scripts/rq_summary.py"
