"""Decision-position attention of the heads that DLA and patching single out, on one
scenario (every model and prompt variant), from the caches."""

import pandas as pd

from interp_lib.attention import attention_table, select_heads
from interp_lib.io import job_logging, write_csv_atomic

with job_logging(snakemake.log[0]):
    inp, p, scenario = snakemake.input, snakemake.params, snakemake.wildcards.scenario
    dla = pd.concat([pd.read_csv(f) for f in inp.dla], ignore_index=True)
    # no patching of this scenario (analysis.patch_scenarios): heads are chosen by DLA alone
    patching = pd.concat([pd.read_csv(f) for f in inp.patches], ignore_index=True) if inp.patches else None
    selection = select_heads(
        dla,
        patching=patching,
        k=p.top_k,
        scenario=scenario,
    )
    table = attention_table(dict(zip(p.models, inp.caches)), scenario, selection)
    write_csv_atomic(table, snakemake.output[0])
