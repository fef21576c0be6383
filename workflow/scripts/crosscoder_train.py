"""One crosscoder over every model's cached resid_post at one layer, and its latents read."""

from pathlib import Path

import pandas as pd

from interp_lib.io import job_logging, set_torch_threads, write_csv_atomic
from interp_lib.jobs.crosscoder import train_and_read
from interp_lib.model.loading import read_fingerprint

with job_logging(snakemake.log[0]):
    set_torch_threads(snakemake.threads)
    p, i, o = snakemake.params, snakemake.input, snakemake.output
    n = len(p.scenarios)
    caches = {m: dict(zip(p.scenarios, i.caches[k * n:(k + 1) * n])) for k, m in enumerate(p.models)}
    fingerprints = {m: read_fingerprint(Path(f).parent)["fingerprint"] for m, f in zip(p.models, i.fingerprints)}
    probes = pd.concat([pd.read_csv(f) for f in i.probes], ignore_index=True)
    out = train_and_read(caches, p.roles, p.settings, probes, p.seed, fingerprints)
    for path in o.tables:
        write_csv_atomic(out[Path(path).stem.replace("top_activations", "top")], path)
    out["model"].save(o.crosscoder, out["metadata"])
