"""Writes <results_dir>/behavior/decisions.csv from the caches' decision logits."""

from interp_lib.behavior import decisions_table
from interp_lib.io import job_logging, write_csv_atomic

with job_logging(snakemake.log[0]):
    write_csv_atomic(decisions_table(snakemake.input), snakemake.output[0])
