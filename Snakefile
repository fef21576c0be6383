# IPD interpretability workflow. Main job:
#   snakemake --cores 1 results/patching/cross_experiment_summary.csv
# The default target `all` builds that and every other analysis.
import sys

from interp_lib.config import ConfigError, read_yaml

try:  # Snakemake's own message for a YAML error names neither line nor column
    read_yaml("config.yaml")
except ConfigError as exc:
    sys.exit(f"Error: {exc}")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/cache.smk"
include: "workflow/rules/behavior.smk"
include: "workflow/rules/logit_lens.smk"
include: "workflow/rules/dla.smk"
include: "workflow/rules/patching.smk"
include: "workflow/rules/patching_plots.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "results/prompts/ipd_eval_prompts.json",
        "results/behavior/decisions.csv",
        "results/logit_lens/trajectories.json",
        "results/logit_lens/statistics.csv",
        expand(
            "results/logit_lens/logit_lens_comparison_{scenario}.png",
            scenario=SCENARIOS,
        ),
        "results/logit_lens/logit_lens_grid.png",
        "results/logit_lens/final_preferences_heatmap.png",
        "results/dla/dla_full_results.csv",
        "results/dla/dla_summary_stats.csv",
        "results/dla/dla_top_components.csv",
        expand(
            "results/dla/dla_{kind}_{model}_{scenario}.png",
            kind=["heads", "mlps"],
            model=MODELS,
            scenario=SCENARIOS,
        ),
        expand("results/dla/dla_top_components_{model}.png", model=MODELS),
        expand("results/dla/dla_model_comparison_{scenario}.png", scenario=SCENARIOS),
        expand(
            "results/patching/{plot}_{experiment}_{scenario}.png",
            plot=["patch_heatmap", "circuit_discovery"],
            experiment=EXPERIMENTS,
            scenario=PATCH_SCENARIOS,
        ),
        expand(
            "results/patching/{plot}_{experiment}.png",
            plot=["patch_top_components", "patch_consistency"],
            experiment=EXPERIMENTS,
        ),
        "results/patching/cross_experiment_summary.csv",
        "results/weights/weight_deltas.csv",
        "results/weights/weight_deltas_modules.png",
        "results/weights/weight_deltas_heads.png",
        "results/rq_summary.md",
        "results/rq_summary.html",
