"""DLA figures of one model on one scenario: the head heatmap and the MLP bars (means over
prompt variants, min..max of the variants as error bars)."""

from interp_lib.dla import average_results, read_job_results
from interp_lib.io import job_logging
from interp_lib.plots.dla import DLAVisualizer
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    model, inp, out = snakemake.wildcards.model, snakemake.input, snakemake.output
    viz = DLAVisualizer(style=ModelStyle.from_names([model], {model: snakemake.params.label}))
    variants = read_job_results(inp.components, inp.summary)
    mean = average_results(variants)
    viz.plot_head_heatmap(mean, save_path=out.heads)
    viz.plot_mlp_contributions(mean, variants, save_path=out.mlps)
