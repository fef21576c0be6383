"""Direct logit attribution of one model on every scenario's prompt variants, from its
caches: per scenario, the per-variant components table and the summary table."""

from pathlib import Path

from tqdm.auto import tqdm

from interp_lib.analyses.dla import scenario_tables
from interp_lib.io import job_logging, write_csv_atomic
from interp_lib.model.loading import read_fingerprint

with job_logging(snakemake.log[0]):
    inp, out = snakemake.input, snakemake.output
    fingerprint = read_fingerprint(Path(inp.fingerprint).parent)["fingerprint"]
    for cache, components, summary in tqdm(list(zip(inp.caches, out.components, out.summary)),
                                           desc=f"DLA {snakemake.wildcards.model}"):
        table, summary_table = scenario_tables(cache, fingerprint)
        write_csv_atomic(table, components)
        write_csv_atomic(summary_table, summary)
