"""Trains one embedded LoRA adapter by policy gradient against Tit-for-Tat."""

from pathlib import Path

from interp_lib.training.demo import train_adapter
from interp_lib.io import job_logging

with job_logging(snakemake.log[0]):
    train_adapter(snakemake.params.base, Path(snakemake.output[0]).parent, snakemake.params.reward,
                  seed=snakemake.params.seed, rl_steps=snakemake.params.steps)
