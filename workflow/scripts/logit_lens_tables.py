"""Collects the per-job trajectories into trajectories.json and statistics.csv."""

import json
from pathlib import Path

from interp_lib.io import job_logging, write_csv_atomic, write_json_atomic
from interp_lib.analyses.logit_lens import statistics_table

with job_logging(snakemake.log[0]):
    records = [rec for path in snakemake.input for rec in json.loads(Path(path).read_text())]
    write_json_atomic(snakemake.output.trajectories, records)
    write_csv_atomic(statistics_table(records), snakemake.output.statistics)
