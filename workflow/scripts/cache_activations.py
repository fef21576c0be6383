"""Caches one model's activations on one scenario's prompts to HDF5."""

import json
from pathlib import Path

from interp_lib.io import job_logging, set_torch_threads
from interp_lib.jobs.caching import build_cache_file

with job_logging(snakemake.log[0]):
    set_torch_threads(snakemake.threads)
    records = json.loads(Path(snakemake.input.prompts).read_text())
    build_cache_file(
        snakemake.params.model_dir,
        model_name=snakemake.wildcards.model,
        scenario=snakemake.wildcards.scenario,
        records=records,
        out=snakemake.output[0],
        precision=snakemake.params.precision,
        device=snakemake.params.device,
        cache_dtype=snakemake.params.cache_dtype,
        cache_compression=snakemake.params.cache_compression,
    )
