"""Logit-lens trajectories of one model on one scenario's prompt variants, from its cache."""

import logging
from pathlib import Path

from interp_lib.cache import CacheFile
from interp_lib.io import job_logging, write_json_atomic
from interp_lib.logit_lens import trajectories_from_cache
from interp_lib.models import read_fingerprint

with job_logging(snakemake.log[0]):
    fingerprint = read_fingerprint(Path(snakemake.input.fingerprint).parent)["fingerprint"]
    with CacheFile(snakemake.input.cache, fingerprint=fingerprint) as cache:
        records = trajectories_from_cache(cache)
    worst = max(abs(r["trajectory"][-1] - r["delta"]) for r in records)
    logging.getLogger("interp_lib").info("%d variants; max |last lens layer - model delta| = %.3g", len(records), worst)
    write_json_atomic(snakemake.output[0], records)
