"""A steering experiment's tables: means per scenario x layer x alpha, and the layer ranking."""

import pandas as pd

from interp_lib.io import job_logging, write_csv_atomic
from interp_lib.steering.summary import layer_ranking, steering_summary

with job_logging(snakemake.log[0]):
    results = pd.concat([pd.read_csv(path) for path in snakemake.input], ignore_index=True)
    write_csv_atomic(steering_summary(results), snakemake.output.summary)
    write_csv_atomic(layer_ranking(results), snakemake.output.layers)
