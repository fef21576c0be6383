"""Collects the per-job attributions into dla_full_results.csv, dla_summary_stats.csv and
dla_top_components.csv (ranked by the mean over prompt variants)."""

import logging

import pandas as pd

from interp_lib.analyses.dla import read_full_results, top_components_table
from interp_lib.io import job_logging, write_csv_atomic

with job_logging(snakemake.log[0]):
    full = pd.concat([read_full_results(p) for p in snakemake.input.components], ignore_index=True)
    summary = pd.concat([pd.read_csv(p) for p in snakemake.input.summary], ignore_index=True)
    logging.getLogger("interp_lib").info("max |reconstruction error| over %d prompts: %.3g", len(summary),
                                         summary["reconstruction_error"].abs().max())
    write_csv_atomic(full, snakemake.output.full)
    write_csv_atomic(summary, snakemake.output.summary)
    write_csv_atomic(top_components_table(full, snakemake.params.top_k), snakemake.output.top)
