"""Writes <results_dir>/behavior/decisions.csv from the caches' decision logits, with the
per-scenario means (bootstrap 95% intervals) and the label bias of counterbalanced scenarios."""

from interp_lib.analyses.behaviour import behaviour_summary, decisions_table, label_bias
from interp_lib.io import job_logging, write_csv_atomic

with job_logging(snakemake.log[0]):
    decisions = decisions_table(snakemake.input)
    write_csv_atomic(behaviour_summary(decisions), snakemake.output.summary)
    write_csv_atomic(label_bias(decisions), snakemake.output.label_bias)
    write_csv_atomic(decisions, snakemake.output.decisions)
