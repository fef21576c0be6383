"""Logit-lens figures: the model comparison of every scenario, the scenario grid and the
final-preference heatmap."""

import json
from pathlib import Path

from interp_lib.io import job_logging
from interp_lib.plots.logit_lens import LogitLensVisualizer, by_scenario
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    p, out = snakemake.params, snakemake.output
    results = by_scenario(json.loads(Path(snakemake.input[0]).read_text()))
    results = {s: results[s] for s in p.scenarios}  # config order
    viz = LogitLensVisualizer(style=ModelStyle.from_names(p.models, dict(p.labels)))
    for scenario, path in zip(p.scenarios, out.comparison):
        viz.plot_model_comparison(results[scenario], scenario, save_path=path)
    viz.plot_scenario_grid(results, save_path=out.grid)
    viz.plot_final_comparison_heatmap(results, save_path=out.heatmap)
