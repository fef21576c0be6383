"""DLA top components of one model, one panel per scenario (means over prompt variants)."""

from interp_lib.dla import average_results, read_job_results
from interp_lib.io import job_logging
from interp_lib.plots.dla import DLAVisualizer
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    model = snakemake.wildcards.model
    viz = DLAVisualizer(style=ModelStyle.from_names([model], {model: snakemake.params.label}))
    means = {}
    for components, summary in zip(snakemake.input.components, snakemake.input.summary):
        mean = average_results(read_job_results(components, summary))
        means[mean.scenario] = mean
    viz.plot_top_components_by_scenario(means, snakemake.params.top_k, save_path=snakemake.output[0])
