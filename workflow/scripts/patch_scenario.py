"""Patches every head and MLP from source into target on one scenario's prompts."""

from interp_lib.warm_start import run_warm

run_warm(globals())  # from here on, in a forked child of a preloaded interpreter when one is available

import os

import pandas as pd

from interp_lib.io import job_logging, set_torch_threads, write_csv_atomic
from interp_lib.jobs.patching import patch_scenario
from interp_lib.patching import CIRCUIT_COLUMNS

with job_logging(snakemake.log[0]):
    set_torch_threads(snakemake.threads)
    p, i = snakemake.params, snakemake.input
    results, circuits = patch_scenario(
        snakemake.wildcards.experiment, p.source, p.target, snakemake.wildcards.scenario,
        i.source_cache, i.target_cache, os.path.dirname(i.source_weights), os.path.dirname(i.target_weights),
        p.positions, p.head_site, p.circuits, p.max_components, p.precision, p.device, p.atp, p.circuit_ranking,
    )
    write_csv_atomic(results, snakemake.output.results)
    write_csv_atomic(pd.DataFrame(circuits, columns=CIRCUIT_COLUMNS), snakemake.output.circuits)
