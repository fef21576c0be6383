"""Builds the embedded demo family's tokenizer and pre-trained base model."""

from pathlib import Path

from interp_lib.training.demo import build_base_model
from interp_lib.io import job_logging

with job_logging(snakemake.log[0]):
    build_base_model(Path(snakemake.output[0]).parent, seed=snakemake.params.seed,
                     pretrain_steps=snakemake.params.steps)
