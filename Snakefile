# IPD interpretability workflow. Main job:
#   snakemake --cores 1 results/patching/cross_experiment_summary.csv
# The default target `all` builds that and every other analysis. `--configfile X` runs
# exactly X (no model, scenario or experiment of ./config.yaml is merged in); without it
# ./config.yaml is used. Outputs go under the config's `results_dir` (default results/).
from snakemake.utils import min_version

min_version("8.20")


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
include: "workflow/rules/interactions.smk"
include: "workflow/rules/patching.smk"
include: "workflow/rules/patching_plots.smk"
include: "workflow/rules/attention.smk"
include: "workflow/rules/counterfactual.smk"
include: "workflow/rules/steering.smk"
include: "workflow/rules/adapter_edits.smk"
include: "workflow/rules/probes.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/diffing.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/targets.smk"


rule all:
    default_target: True
    input:
        all_targets(),
