"""Heatmaps of the relative merged-weight change: layers x modules, and layers x heads (o_proj)."""

from interp_lib.io import job_logging
from interp_lib.plots.weights import WeightVisualizer
from interp_lib.style import ModelStyle
from interp_lib.analyses.weight_deltas import read_weight_deltas

with job_logging(snakemake.log[0]):
    df = read_weight_deltas(snakemake.input[0])
    viz = WeightVisualizer(ModelStyle.from_names(snakemake.params.models, snakemake.params.labels))
    viz.plot_module_heatmaps(df, save_path=snakemake.output.modules)
    viz.plot_head_heatmaps(df, save_path=snakemake.output.heads)
