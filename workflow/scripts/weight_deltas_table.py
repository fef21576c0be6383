"""Concatenates the per-model weight-delta tables into <results_dir>/weights/weight_deltas.csv."""

import pandas as pd

from interp_lib.io import job_logging, write_csv_atomic
from interp_lib.analyses.weight_deltas import COLUMNS, read_weight_deltas

with job_logging(snakemake.log[0]):
    frames = [read_weight_deltas(p) for p in snakemake.input]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    write_csv_atomic(df, snakemake.output[0])
