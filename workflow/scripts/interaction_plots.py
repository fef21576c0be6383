"""Component interaction figures: one clustered correlation matrix per model, one panel of
r_a, r_b and r_a - r_b per compared pair of models."""

import pandas as pd

from interp_lib.io import job_logging
from interp_lib.plots.interactions import draw_all
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    p, inp, out = snakemake.params, snakemake.input, snakemake.output
    draw_all(pd.read_csv(inp.correlations), pd.read_csv(inp.differences), p.models, [tuple(x) for x in p.pairs],
             out.models, out.pairs, style=ModelStyle.from_entries(p.style))
