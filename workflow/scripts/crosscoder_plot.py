"""The crosscoder figure: latent classes, reconstruction quality, the causal check."""

import pandas as pd

from interp_lib.io import job_logging
from interp_lib.plots.diffing import plot_crosscoder

with job_logging(snakemake.log[0]):
    i = snakemake.input
    plot_crosscoder(pd.read_csv(i.quality), pd.read_csv(i.latents), pd.read_csv(i.causal), snakemake.output[0])
