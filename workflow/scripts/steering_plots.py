"""A steering experiment's figure: delta change per layer x alpha, P(Defect) at the best layer."""

import pandas as pd

from interp_lib.io import job_logging
from interp_lib.plots.steering import plot_steering

with job_logging(snakemake.log[0]):
    plot_steering(pd.read_csv(snakemake.input.summary), pd.read_csv(snakemake.input.layers), snakemake.output[0])
