"""Patching figures of one experiment: the top components by mean |delta_change| over
scenarios, and their consistency across scenarios (ranking and counts from the
experiment's top_components table)."""

from interp_lib.io import job_logging
from interp_lib.plots.patching_common import read_table
from interp_lib.plots.patching_rankings import RankingPlots
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    p = snakemake.params
    viz = RankingPlots(style=ModelStyle.from_entries(p.style))
    results = read_table(snakemake.input.results)
    viz.plot_top_components(results, top_k=p.top_k, out=snakemake.output.top)
    viz.plot_consistency(results, top_k=p.top_k, top_components=read_table(snakemake.input.top),
                         out=snakemake.output.consistency)
