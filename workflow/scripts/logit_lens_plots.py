"""Logit-lens overview figures: the scenario grid and the final-preference heatmap."""

import json
from pathlib import Path

from interp_lib.io import job_logging
from interp_lib.plots.logit_lens import LogitLensVisualizer, by_scenario
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    p = snakemake.params
    results = by_scenario(json.loads(Path(snakemake.input[0]).read_text()))
    results = {s: results[s] for s in p.scenarios}  # config order
    viz = LogitLensVisualizer(style=ModelStyle.from_names(p.models, dict(p.labels)))
    viz.plot_scenario_grid(results, save_path=snakemake.output.grid)
    viz.plot_final_comparison_heatmap(results, save_path=snakemake.output.heatmap)
