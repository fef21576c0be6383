"""Frobenius norms of one fine-tuned model's weight changes against its reference model,
per layer and module, and per o_proj head: the exact LoRA update scaling * B @ A from the
adapter's factors (the merged-weight difference only for a variant such as DoRA)."""

from interp_lib.io import job_logging, write_csv_atomic
from interp_lib.analyses.weight_deltas import weight_deltas

with job_logging(snakemake.log[0]):
    p = snakemake.params
    df = weight_deltas(
        snakemake.input.weights,
        base_weights=snakemake.input.reference_weights,
        model=snakemake.wildcards.model,
        reference=p.reference,
        adapter=p.adapter,
        allow_pickle=p.allow_pickle,
    )
    write_csv_atomic(df, snakemake.output[0])
