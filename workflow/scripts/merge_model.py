"""Merges one model's LoRA adapter into its base and saves it as safetensors."""

from pathlib import Path

from interp_lib.io import job_logging, set_torch_threads
from interp_lib.model.loading import merge_to_dir

with job_logging(snakemake.log[0]):
    set_torch_threads(snakemake.threads)
    p = snakemake.params
    merge_to_dir(
        snakemake.wildcards.model,
        spec=p.spec,
        out_dir=Path(snakemake.output[0]).parent,
        dtype=p.dtype,
        allow_download=p.allow_download,
        allow_pickle=p.allow_pickle,
    )
