"""The activation-difference lens figure."""

import pandas as pd

from interp_lib.io import job_logging
from interp_lib.plots.diffing import plot_adl
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    i = snakemake.input
    plot_adl(pd.read_csv(i.differences), pd.read_csv(i.steering), snakemake.output[0],
             style=ModelStyle.from_entries(snakemake.params.style))
