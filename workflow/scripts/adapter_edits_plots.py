"""One figure per fine-tune: ablation and sufficiency of its update by layer, and transplants."""

import pandas as pd

from interp_lib.io import job_logging
from interp_lib.plots.adapter_edits import plot_adapter_edits

with job_logging(snakemake.log[0]):
    p = snakemake.params
    summary = pd.read_csv(snakemake.input.summary)
    for model, path in zip(p.models, snakemake.output.figures):
        plot_adapter_edits(summary[summary["model"] == model], path, label=p.labels.get(model, model))
