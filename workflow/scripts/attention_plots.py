"""The attention figure of every scenario (prompt variant 1): selected heads x models x tokens."""

from tqdm.auto import tqdm

from interp_lib.analyses.attention import read_attention_table
from interp_lib.io import job_logging
from interp_lib.plots.attention import plot_attention
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    p = snakemake.params
    style = ModelStyle.from_entries(p.style)
    for scenario, table, out in tqdm(list(zip(p.scenarios, snakemake.input, snakemake.output)), desc="attention"):
        plot_attention(read_attention_table(table), scenario, out, style=style)
