"""The attention figure of one scenario (prompt variant 1): selected heads x models x tokens."""

from interp_lib.attention import read_attention_table
from interp_lib.io import job_logging
from interp_lib.plots.attention import plot_attention
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    plot_attention(read_attention_table(snakemake.input[0]), snakemake.wildcards.scenario, snakemake.output[0],
                   style=ModelStyle.from_entries(snakemake.params.style))
