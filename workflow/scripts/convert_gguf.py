"""Converts one GGUF file into a Hugging Face model directory (float32 safetensors)."""

from pathlib import Path

from interp_lib.model.gguf_convert import convert_gguf
from interp_lib.io import job_logging, set_torch_threads

with job_logging(snakemake.log[0]):
    set_torch_threads(snakemake.threads)
    source = snakemake.params.source
    convert_gguf(
        list(snakemake.input),
        Path(snakemake.output[0]).parent,
        package=source.get("package"),
        sha256=source.get("sha256"),
        chat_template=source.get("chat_template"),
    )
