"""DLA figures of one model: per scenario the head heatmap and the MLP bars (means over
prompt variants), and the top components of every scenario."""

import pandas as pd

from interp_lib.dla import average_results, read_full_results, results_from_frame
from interp_lib.io import job_logging
from interp_lib.plots.dla import DLAVisualizer
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    model = snakemake.wildcards.model
    viz = DLAVisualizer(style=ModelStyle.from_names([model], {model: snakemake.params.label}))
    means = {}
    files = zip(snakemake.input.components, snakemake.input.summary, snakemake.output.heads, snakemake.output.mlps)
    for components, summary, heads_png, mlps_png in files:
        variants = results_from_frame(read_full_results(components), pd.read_csv(summary))
        mean = average_results(variants)
        means[mean.scenario] = mean
        viz.plot_head_heatmap(mean, save_path=heads_png)
        viz.plot_mlp_contributions(mean, variants, save_path=mlps_png)
    viz.plot_top_components_by_scenario(means, snakemake.params.top_k, save_path=snakemake.output.top)
