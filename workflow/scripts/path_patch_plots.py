"""The progressive path-patching curves of every experiment, one figure each."""

import pandas as pd

from interp_lib.io import job_logging
from interp_lib.plots.path_patching import plot_path_patching

with job_logging(snakemake.log[0]):
    summary = pd.read_csv(snakemake.input.summary)
    summary["labelling"] = summary["labelling"].fillna("standard")
    for experiment, path in zip(snakemake.params.experiments, snakemake.output):
        plot_path_patching(summary, path, experiment, labels=snakemake.params.labels)
