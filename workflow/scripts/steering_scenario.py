"""One steering experiment on one scenario: P(Defect) and delta for every layer x alpha."""

import os

from interp_lib.io import job_logging, set_torch_threads, write_csv_atomic
from interp_lib.jobs.steering import steer_scenario

with job_logging(snakemake.log[0]):
    set_torch_threads(snakemake.threads)
    p, i = snakemake.params, snakemake.input
    table = steer_scenario(
        snakemake.wildcards.steering,
        spec=p.spec,
        scenario=snakemake.wildcards.scenario,
        target_cache=i.target_cache,
        direction_caches=p.direction_caches,
        model_dir=os.path.dirname(i.weights),
        precision=p.precision,
        device=p.device,
        seed=p.seed,
        max_rows=p.max_rows,
    )
    write_csv_atomic(table, snakemake.output[0])
