"""Collects the per-scenario prompt files into results/prompts/ipd_eval_prompts.json."""

from interp_lib.io import job_logging
from interp_lib.prompts import merge_scenario_files

with job_logging(snakemake.log[0]):
    merge_scenario_files(snakemake.input, snakemake.output[0])
