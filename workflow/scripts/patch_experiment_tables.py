"""Collects one experiment's patching results into its result, summary, circuit and
component tables."""

from interp_lib.io import job_logging, write_csv_atomic
from interp_lib.report.patching_tables import component_consistency, prompt_summary, read_csvs

with job_logging(snakemake.log[0]):
    results = read_csvs(snakemake.input.results)
    write_csv_atomic(results, snakemake.output.results)
    write_csv_atomic(prompt_summary(results), snakemake.output.summary)
    write_csv_atomic(read_csvs(snakemake.input.circuits), snakemake.output.circuits)
    write_csv_atomic(component_consistency(results, snakemake.params.top_k), snakemake.output.top)
