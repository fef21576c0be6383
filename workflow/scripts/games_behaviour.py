"""Writes behavior/games.csv (behaviour per model, game and state, with label bias) and its figure."""

import pandas as pd

from interp_lib.analyses.games import games_table
from interp_lib.io import job_logging, write_csv_atomic
from interp_lib.plots.games import plot_games
from interp_lib.style import ModelStyle

with job_logging(snakemake.log[0]):
    table = games_table(pd.read_csv(snakemake.input.decisions), pd.read_csv(snakemake.input.label_bias),
                        snakemake.params.scenario_meta)
    write_csv_atomic(table, snakemake.output.table)
    plot_games(table, snakemake.output.figure, ModelStyle.from_entries(snakemake.params.style))
