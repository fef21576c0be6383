# IPD interpretability workflow. Main job:
#   snakemake --cores 1 results/patching/cross_experiment_summary.csv
# The default target `all` builds that and every other analysis.


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/cache.smk"
include: "workflow/rules/behavior.smk"
include: "workflow/rules/patching.smk"


rule all:
    input:
        "results/prompts/ipd_eval_prompts.json",
        "results/behavior/decisions.csv",
        "results/patching/cross_experiment_summary.csv",
    default_target: True
