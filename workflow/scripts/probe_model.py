"""Linear probes of one model: per target and layer, cross-validated accuracy of a
logistic-regression probe on the decision position's resid_post, from its caches."""

from pathlib import Path

from interp_lib.io import job_logging, write_csv_atomic
from interp_lib.model.loading import read_fingerprint
from interp_lib.analyses.probes import probe_accuracy, probe_features

with job_logging(snakemake.log[0]):
    p = snakemake.params
    fingerprint = read_fingerprint(Path(snakemake.input.fingerprint).parent)["fingerprint"]
    data = probe_features(dict(zip(p.scenarios, snakemake.input.caches)), fingerprint=fingerprint)
    write_csv_atomic(probe_accuracy(data, p.scenario_meta, p.model, seed=p.seed), snakemake.output[0])
