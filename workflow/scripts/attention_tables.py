"""Decision-position attention of the heads that DLA and patching single out, on every
scenario (every model and prompt variant), from the caches: one table per scenario."""

from tqdm.auto import tqdm

from interp_lib.analyses.attention import scenario_table
from interp_lib.io import job_logging, write_csv_atomic

with job_logging(snakemake.log[0]):
    p = snakemake.params
    for (scenario, inputs), out in tqdm(list(zip(p.scenarios.items(), snakemake.output)), desc="attention"):
        write_csv_atomic(scenario_table(scenario=scenario, inputs=inputs, top_k=p.top_k), out)
