"""Patches every head and MLP from source into target on one scenario's prompts, and the
block outputs over the layer ranges of path patching."""

import os

import pandas as pd

from interp_lib.io import job_logging, set_torch_threads, write_csv_atomic
from interp_lib.jobs.patching import patch_scenario
from interp_lib.patching import CIRCUIT_COLUMNS

with job_logging(snakemake.log[0]):
    set_torch_threads(snakemake.threads)
    p, i = snakemake.params, snakemake.input
    results, circuits, paths = patch_scenario(
        snakemake.wildcards.experiment,
        source_name=p.source,
        target_name=p.target,
        scenario=snakemake.wildcards.scenario,
        source_cache=i.source_cache,
        target_cache=i.target_cache,
        source_dir=os.path.dirname(i.source_weights),
        target_dir=os.path.dirname(i.target_weights),
        positions=p.positions,
        head_site=p.head_site,
        circuits=p.circuits,
        max_components=p.max_components,
        precision=p.precision,
        device=p.device,
        atp=p.atp,
        circuit_ranking=p.circuit_ranking,
        path_patching=p.path_patching,
        path_starts=p.path_starts,
    )
    write_csv_atomic(results, snakemake.output.results)
    write_csv_atomic(pd.DataFrame(circuits, columns=CIRCUIT_COLUMNS), snakemake.output.circuits)
    write_csv_atomic(paths, snakemake.output.path_patches)
