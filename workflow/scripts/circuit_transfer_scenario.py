"""The IPD circuit of one experiment (its consensus over the IPD prompts' circuits) patched
from source into target on one scenario's prompts, beside random sets of its size."""

import os

import pandas as pd

from interp_lib.io import job_logging, set_torch_threads, write_csv_atomic
from interp_lib.jobs.circuit_transfer import circuit_transfer, ipd_circuit

with job_logging(snakemake.log[0]):
    set_torch_threads(snakemake.threads)
    p, i = snakemake.params, snakemake.input
    # no IPD scenario patched (analysis.patch_scenarios): no IPD circuit, an empty table
    circuits = [pd.read_csv(f) for f in i.ipd_circuits]
    members, support = ipd_circuit(pd.concat(circuits, ignore_index=True)) if circuits else ([], float("nan"))
    table = circuit_transfer(
        snakemake.wildcards.experiment,
        source_name=p.source,
        target_name=p.target,
        scenario=snakemake.wildcards.scenario,
        source_cache=i.source_cache,
        target_cache=i.target_cache,
        source_dir=os.path.dirname(i.source_weights),
        target_dir=os.path.dirname(i.target_weights),
        members=members,
        support=support,
        # the patching job measured each prompt's noise floor on the same runner path
        noise_floors=pd.read_csv(i.patches).groupby("variant")["noise_floor"].first().to_dict(),
        positions=p.positions,
        head_site=p.head_site,
        precision=p.precision,
        device=p.device,
        seed=p.seed,
    )
    write_csv_atomic(table, snakemake.output[0])
