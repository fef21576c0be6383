"""The adapter edits' tables: every prompt's row, means with bootstrap intervals, necessary and
sufficient layers per fine-tune, and the minimal sufficient sets."""

import logging

import pandas as pd

from interp_lib.adapter_edits.summary import edit_summary, layer_verdicts
from interp_lib.io import job_logging, write_csv_atomic

with job_logging(snakemake.log[0]):
    for model, reason in snakemake.params.skipped.items():
        logging.getLogger("interp_lib").info("adapter edits skip model %s: %s", model, reason)
    results = pd.concat([pd.read_csv(path) for path in snakemake.input.edits], ignore_index=True)
    sets = pd.concat([pd.read_csv(path) for path in snakemake.input.sets], ignore_index=True)
    write_csv_atomic(results, snakemake.output.results)
    write_csv_atomic(edit_summary(results), snakemake.output.summary)
    write_csv_atomic(layer_verdicts(results, sets), snakemake.output.verdicts)
    write_csv_atomic(sets, snakemake.output.sets)
