"""Frobenius norms of one fine-tuned model's merged-weight changes against its reference
model, per layer and module, and per o_proj head (read tensor by tensor)."""

from interp_lib.io import job_logging, write_csv_atomic
from interp_lib.weight_deltas import weight_deltas

with job_logging(snakemake.log[0]):
    df = weight_deltas(snakemake.input.weights, snakemake.input.reference_weights, snakemake.wildcards.model,
                       snakemake.params.reference)
    write_csv_atomic(df, snakemake.output[0])
