"""Counterfactual patching in one model: its source scenario's activations into its target
scenario's run, per component and per residual-stream layer x position."""

import os

from interp_lib.io import job_logging, set_torch_threads, write_csv_atomic
from interp_lib.jobs.counterfactual import counterfactual_patch

with job_logging(snakemake.log[0]):
    set_torch_threads(snakemake.threads)
    p, i = snakemake.params, snakemake.input
    components, residual = counterfactual_patch(
        snakemake.wildcards.counterfactual,
        model_name=p.model,
        source_scenario=p.source,
        target_scenario=p.target,
        source_cache=i.source_cache,
        target_cache=i.target_cache,
        model_dir=os.path.dirname(i.weights),
        positions=p.positions,
        head_site=p.head_site,
        residual=p.residual,
        precision=p.precision,
        device=p.device,
    )
    write_csv_atomic(components, snakemake.output.components)
    write_csv_atomic(residual, snakemake.output.residual)
