"""Every DLA figure: per model and scenario the head heatmap and the MLP bars, per model
the top components of every scenario, per scenario the model comparison (means over
prompt variants)."""

from interp_lib.io import job_logging
from interp_lib.plots.dla import DLAVisualizer, draw_all
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    p, inp, out = snakemake.params, snakemake.input, snakemake.output
    pairs = [(m, s) for m in p.models for s in p.scenarios]  # the rule's expand order
    draw_all(DLAVisualizer(style=ModelStyle.from_names(p.models, dict(p.labels))),
             tables=dict(zip(pairs, zip(inp.components, inp.summary))),
             out={"heads": dict(zip(pairs, out.heads)), "mlps": dict(zip(pairs, out.mlps)),
                  "top": dict(zip(p.models, out.top)), "comparison": dict(zip(p.scenarios, out.comparison))},
             top_k=p.top_k)
