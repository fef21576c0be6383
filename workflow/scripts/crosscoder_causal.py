"""The crosscoder's fine-tune-specific latents ablated (and added to the base) at the decision."""

import os

import pandas as pd

from interp_lib.io import job_logging, set_torch_threads, write_csv_atomic
from interp_lib.jobs.crosscoder import causal_check

with job_logging(snakemake.log[0]):
    set_torch_threads(snakemake.threads)
    p, i = snakemake.params, snakemake.input
    n = len(p.scenarios)
    caches = {m: dict(zip(p.scenarios, i.caches[k * n:(k + 1) * n])) for k, m in enumerate(p.models)}
    model_dirs = {m: os.path.dirname(w) for m, w in zip(p.models, i.weights)}
    table = causal_check(i.crosscoder, pd.read_csv(i.latents), caches, model_dirs, p.scenarios, p.top_latents,
                         p.controls, p.precision, p.device, p.seed)
    write_csv_atomic(table, snakemake.output[0])
