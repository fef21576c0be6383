"""Trains one LoRA adapter against Tit-for-Tat (config rl_adapters: output dir -> settings)."""

import torch

from interp_lib.io import job_logging
from interp_lib.training.rl import RLSettings, train_rl_adapter

with job_logging(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    spec = dict(snakemake.params.spec)
    base = spec.pop("base")
    train_rl_adapter(base, snakemake.params.out_dir, RLSettings(**spec))
