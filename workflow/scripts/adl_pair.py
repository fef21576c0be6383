"""The activation-difference lens of one fine-tune against one reference model."""

import os

import numpy as np

from interp_lib.io import atomic_path, job_logging, set_torch_threads, write_csv_atomic
from interp_lib.jobs.adl import adl_pair

with job_logging(snakemake.log[0]):
    set_torch_threads(snakemake.threads)
    p, i, w, o = snakemake.params, snakemake.input, snakemake.wildcards, snakemake.output
    out = adl_pair(
        w.model,
        w.reference,
        dict(zip(p.scenarios, i.model_caches)),
        dict(zip(p.scenarios, i.reference_caches)),
        p.contexts,
        os.path.dirname(i.weights),
        adapter=p.adapter,
        steer=p.steer,
        top_k=p.top_k,
        n_resamples=p.bootstrap,
        precision=p.precision,
        device=p.device,
        seed=p.seed,
        max_rows=p.max_rows,
        allow_pickle=p.allow_pickle,
        states=p.states,
    )
    for part in ("differences", "tokens", "lora", "steering"):
        write_csv_atomic(out[part], o[part])
    with atomic_path(o.vectors, ".npz") as tmp:
        np.savez(tmp, **out["vectors"])
