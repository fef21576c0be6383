"""Path-patching tables of every experiment and scenario: the progressive curves' means with
bootstrap intervals, and each curve's saturation layer."""

from interp_lib.io import job_logging, write_csv_atomic
from interp_lib.report.path_patching_tables import path_patch_summary, path_saturation_table, read_path_patches

with job_logging(snakemake.log[0]):
    paths = read_path_patches(snakemake.input)
    summary = path_patch_summary(paths)
    write_csv_atomic(summary, snakemake.output.summary)
    write_csv_atomic(path_saturation_table(paths, summary), snakemake.output.saturation)
