"""Direct logit attribution of one model on one scenario's prompt variants, from its cache."""

import logging
from pathlib import Path

import pandas as pd

from interp_lib.cache import CacheFile
from interp_lib.dla import result_frame, results_from_cache, summary_row
from interp_lib.io import job_logging, write_csv_atomic
from interp_lib.models import read_fingerprint

with job_logging(snakemake.log[0]):
    fingerprint = read_fingerprint(Path(snakemake.input.fingerprint).parent)["fingerprint"]
    with CacheFile(snakemake.input.cache, fingerprint=fingerprint) as cache:
        results = results_from_cache(cache)
    summary = pd.DataFrame([summary_row(r) for r in results])
    logging.getLogger("interp_lib").info("%d variants; max |reconstruction error| = %.3g", len(results),
                                         summary["reconstruction_error"].abs().max())
    write_csv_atomic(pd.concat([result_frame(r) for r in results], ignore_index=True), snakemake.output.components)
    write_csv_atomic(summary, snakemake.output.summary)
