"""DLA model comparison on one scenario (means over prompt variants)."""

from interp_lib.dla import average_results, read_job_results
from interp_lib.io import job_logging
from interp_lib.plots.dla import DLAVisualizer
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    p = snakemake.params
    viz = DLAVisualizer(style=ModelStyle.from_names(p.models, dict(p.labels)))
    per_model = {
        model: average_results(read_job_results(components, summary))
        for model, components, summary in zip(p.models, snakemake.input.components, snakemake.input.summary)
    }
    viz.plot_model_comparison(per_model, scenario=snakemake.wildcards.scenario, save_path=snakemake.output[0])
