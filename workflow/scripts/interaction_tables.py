"""Component interaction tables from every model's DLA tables of every scenario:
interactions/correlations.csv, differences.csv and summary.csv."""

import logging
import time

import pandas as pd

from interp_lib.analyses.dla import read_full_results
from interp_lib.analyses.interactions import interaction_tables
from interp_lib.io import job_logging, write_csv_atomic

with job_logging(snakemake.log[0]):
    p, out = snakemake.params, snakemake.output
    start = time.perf_counter()
    full = pd.concat([read_full_results(f) for f in snakemake.input], ignore_index=True)
    corr, diff, summary = interaction_tables(full, [tuple(pair) for pair in p.pairs], n_bootstrap=p.n_bootstrap,
                                             n_permutations=p.n_permutations, fdr=p.fdr, seed=p.seed,
                                             centring=p.centring, labellings=dict(p.labellings), progress=True)
    write_csv_atomic(corr, out.correlations)
    write_csv_atomic(diff, out.differences)
    write_csv_atomic(summary, out.summary)
    logging.getLogger("interp_lib").info(
        "%d models, %d prompts, %d components, %d compared pairs, %d bootstrap resamples, %d permutations: %.1f s",
        corr["model"].nunique(), int(summary["n_prompts"].iloc[0]) if len(summary) else int(corr["n_prompts"].iloc[0]),
        int(summary["n_components"].iloc[0]) if len(summary) else 0, len(summary), p.n_bootstrap,
        p.n_permutations, time.perf_counter() - start)
