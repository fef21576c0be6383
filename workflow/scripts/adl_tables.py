"""The activation-difference lens's tables over every (fine-tune, reference) pair."""

from pathlib import Path

from interp_lib.diffing.tables import adl_tables
from interp_lib.io import job_logging, write_csv_atomic

with job_logging(snakemake.log[0]):
    first = {Path(f).parent for f in snakemake.input}
    pairs = {(m, r): Path(snakemake.input[0]).parents[3] / "per" / m / r for m, r in snakemake.params.pairs}
    tables = adl_tables(pairs)
    for path in snakemake.output:
        part = Path(path).stem.removeprefix("adl_")
        write_csv_atomic(tables[part], path)
