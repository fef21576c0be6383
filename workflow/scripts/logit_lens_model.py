"""Logit-lens trajectories of one model on every scenario's prompt variants, from its
caches: one JSON file per scenario."""

from pathlib import Path

from tqdm.auto import tqdm

from interp_lib.io import job_logging, write_json_atomic
from interp_lib.analyses.logit_lens import scenario_trajectories
from interp_lib.model.loading import read_fingerprint

with job_logging(snakemake.log[0]):
    inp = snakemake.input
    fingerprint = read_fingerprint(Path(inp.fingerprint).parent)["fingerprint"]
    for cache, out in tqdm(list(zip(inp.caches, snakemake.output)), desc=f"logit lens {snakemake.wildcards.model}"):
        write_json_atomic(out, scenario_trajectories(cache, fingerprint))
