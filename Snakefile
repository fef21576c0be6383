# IPD interpretability workflow. Main job:
#   snakemake --cores 1 results/patching/cross_experiment_summary.csv
# The default target `all` builds that and every other analysis. `--configfile X` runs
# exactly X (no model, scenario or experiment of ./config.yaml is merged in); without it
# ./config.yaml is used. Outputs go under the config's `results_dir` (default results/).
include: "workflow/rules/config.smk"
include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/gguf.smk"
include: "workflow/rules/rl_adapters.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/cache.smk"
include: "workflow/rules/behavior.smk"
include: "workflow/rules/logit_lens.smk"
include: "workflow/rules/dla.smk"
include: "workflow/rules/patching.smk"
include: "workflow/rules/patching_plots.smk"
include: "workflow/rules/attention.smk"
include: "workflow/rules/counterfactual.smk"
include: "workflow/rules/steering.smk"
include: "workflow/rules/probes.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        R("prompts/ipd_eval_prompts.json"),
        R("behavior/decisions.csv"),
        R("logit_lens/trajectories.json"),
        R("logit_lens/statistics.csv"),
        expand(R("logit_lens/logit_lens_comparison_{scenario}.png"), scenario=SCENARIOS),
        R("logit_lens/logit_lens_grid.png"),
        R("logit_lens/final_preferences_heatmap.png"),
        R("dla/dla_full_results.csv"),
        R("dla/dla_summary_stats.csv"),
        R("dla/dla_top_components.csv"),
        expand(
            R("dla/dla_{kind}_{model}_{scenario}.png"),
            kind=["heads", "mlps"],
            model=MODELS,
            scenario=SCENARIOS,
        ),
        expand(R("dla/dla_top_components_{model}.png"), model=MODELS),
        expand(R("dla/dla_model_comparison_{scenario}.png"), scenario=SCENARIOS),
        expand(
            R("attention/attention_{scenario}.{ext}"),
            scenario=SCENARIOS,
            ext=["csv", "png"],
        ),
        expand(
            R("patching/{plot}_{experiment}_{scenario}.png"),
            plot=["patch_heatmap", "circuit_discovery"],
            experiment=EXPERIMENTS,
            scenario=PATCH_SCENARIOS,
        ),
        expand(
            R("patching/{plot}_{experiment}.png"),
            plot=["patch_top_components", "patch_consistency"],
            experiment=EXPERIMENTS,
        ),
        R("patching/cross_experiment_summary.csv"),
        expand(
            R("counterfactual/{plot}_{counterfactual}.png"),
            plot=["residual_heatmap", "component_heatmap"],
            counterfactual=COUNTERFACTUALS,
        ),
        [out for name in STEERING for out in steering_outputs(name)],
        expand(
            R("steering/steering_{steering}.{ext}"),
            steering=STEERING,
            ext=["csv", "png"],
        ),
        expand(R("steering/steering_layers_{steering}.csv"), steering=STEERING),
        R("probes/probe_accuracy.csv"),
        R("probes/probe_accuracy.png"),
        R("weights/weight_deltas.csv"),
        R("weights/weight_deltas_modules.png"),
        R("weights/weight_deltas_heads.png"),
        R("rq_summary.md"),
        R("rq_summary.html"),
