"""The activation-difference lens's tables over every (fine-tune, reference) pair."""

from pathlib import Path

from interp_lib.diffing.tables import adl_tables
from interp_lib.io import job_logging, write_csv_atomic

with job_logging(snakemake.log[0]):
    per = Path(snakemake.output[0]).parent / "adl" / "per"  # the adl_pair jobs' diffing/adl/per/<model>/<reference>/
    tables = adl_tables({(m, r): per / m / r for m, r in snakemake.params.pairs})
    for path in snakemake.output:
        write_csv_atomic(tables[Path(path).stem.removeprefix("adl_")], path)
