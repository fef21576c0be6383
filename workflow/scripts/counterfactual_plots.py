"""Figures of one counterfactual: the residual layer x position heatmap and the component heatmap."""

import pandas as pd

from interp_lib.io import job_logging
from interp_lib.plots.counterfactual import plot_component_heatmap, plot_residual_heatmap

with job_logging(snakemake.log[0]):
    plot_residual_heatmap(pd.read_csv(snakemake.input.residual), snakemake.output.residual)
    plot_component_heatmap(pd.read_csv(snakemake.input.components), snakemake.output.components)
