"""Collects the per-scenario prompt files into <results_dir>/prompts/ipd_eval_prompts.json,
with each scenario's description."""

from interp_lib.io import job_logging
from interp_lib.prompts import merge_scenario_files

with job_logging(snakemake.log[0]):
    merge_scenario_files(snakemake.input, snakemake.output[0], snakemake.params.descriptions)
