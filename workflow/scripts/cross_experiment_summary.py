"""Writes <results_dir>/patching/cross_experiment_summary.csv."""

from interp_lib.io import job_logging, write_csv_atomic
from interp_lib.report.patching_tables import cross_experiment_summary, read_csvs

with job_logging(snakemake.log[0]):
    data = {
        name: {"results": read_csvs([res]), "circuits": read_csvs([circ])}
        for name, res, circ in zip(snakemake.params.experiments, snakemake.input.results, snakemake.input.circuits)
    }
    write_csv_atomic(cross_experiment_summary(data, snakemake.params.top_k), snakemake.output[0])
