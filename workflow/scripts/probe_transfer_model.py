"""Probes of one model fitted on its IPD prompts and tested on each other context's."""

from pathlib import Path

from interp_lib.analyses.probe_transfer import probe_transfer
from interp_lib.analyses.probes import probe_features
from interp_lib.io import job_logging, write_csv_atomic
from interp_lib.model.loading import read_fingerprint

with job_logging(snakemake.log[0]):
    p = snakemake.params
    fingerprint = read_fingerprint(Path(snakemake.input.fingerprint).parent)["fingerprint"]
    data = probe_features(dict(zip(p.scenarios, snakemake.input.caches)), fingerprint=fingerprint)
    write_csv_atomic(probe_transfer(data, p.contexts, p.model), snakemake.output[0])
