"""DLA model comparison, one figure per scenario (means over prompt variants)."""

import pandas as pd

from interp_lib.dla import average_results, read_full_results, results_from_frame
from interp_lib.io import job_logging
from interp_lib.plots.dla import DLAVisualizer
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    p = snakemake.params
    results = results_from_frame(read_full_results(snakemake.input.full), pd.read_csv(snakemake.input.summary))
    viz = DLAVisualizer(style=ModelStyle.from_names(p.models, dict(p.labels)))
    for scenario, path in zip(p.scenarios, snakemake.output):
        per_model = {m: average_results([r for r in results if r.model == m and r.scenario == scenario])
                     for m in p.models}
        viz.plot_model_comparison(per_model, scenario=scenario, save_path=path)
