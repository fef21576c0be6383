"""The probe table of every model (config order) and its figure: accuracy per layer."""

import pandas as pd

from interp_lib.io import job_logging, write_csv_atomic
from interp_lib.plots.probes import plot_probe_accuracy
from interp_lib.analyses.probes import probe_table
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    table = probe_table(pd.read_csv(f) for f in snakemake.input)
    write_csv_atomic(table, snakemake.output.table)
    plot_probe_accuracy(table, snakemake.output.figure, style=ModelStyle.from_entries(snakemake.params.style))
