"""The transfer figure: component rankings, IPD probes and the IPD circuit per context."""

import pandas as pd

from interp_lib.io import job_logging
from interp_lib.plots.transfer import plot_transfer
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    i = snakemake.input
    plot_transfer(pd.read_csv(i.components), pd.read_csv(i.probes), pd.read_csv(i.circuits), snakemake.output[0],
                  style=ModelStyle.from_entries(snakemake.params.style))
