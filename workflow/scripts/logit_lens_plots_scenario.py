"""Logit-lens model comparison on one scenario."""

import json
from pathlib import Path

from interp_lib.io import job_logging
from interp_lib.plots.logit_lens import LogitLensVisualizer, by_scenario
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    p, scenario = snakemake.params, snakemake.wildcards.scenario
    records = [rec for path in snakemake.input for rec in json.loads(Path(path).read_text())]
    viz = LogitLensVisualizer(style=ModelStyle.from_names(p.models, dict(p.labels)))
    viz.plot_model_comparison(by_scenario(records)[scenario], scenario, save_path=snakemake.output[0])
