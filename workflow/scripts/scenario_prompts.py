"""Writes one scenario's evaluation prompts."""

from interp_lib.io import job_logging
from interp_lib.model.loading import load_tokenizer
from interp_lib.prompts import write_scenario_file

with job_logging(snakemake.log[0]):
    p = snakemake.params
    tokenizer = load_tokenizer(p.tokenizer, "prompt tokenizer", p.allow_download)
    write_scenario_file(
        snakemake.output[0],
        name=snakemake.wildcards.scenario,
        spec=p.spec,
        n_variants=p.n_variants,
        seed=p.seed,
        tokenizer=tokenizer,
    )
