"""Atomic file writing and per-job logging shared by the workflow's scripts."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yields a temporary path beside `path`; renames it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-", suffix=suffix or path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are for every reader
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: str | os.PathLike, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def write_csv_atomic(df, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


# Libraries whose import dominates a short job's start-up (docs/analyses.md: Job start-up); each
# job's log ends with those it loaded, so that a table or plot job that pulls in torch shows.
HEAVY_MODULES = ("torch", "transformers", "peft", "sklearn", "scipy")


@contextlib.contextmanager
def job_logging(log_file: str | os.PathLike | None):
    """Sends logging, warnings and stderr (tqdm's progress bars) of a job to its log file."""
    if log_file is None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        yield
        return
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as handle:
        old_stderr = sys.stderr
        sys.stderr = handle
        handler = logging.StreamHandler(handle)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        try:
            yield
        except BaseException as exc:
            logging.getLogger("interp_lib").error("%s: %s", type(exc).__name__, exc)
            raise
        finally:
            loaded = ", ".join(m for m in HEAVY_MODULES if m in sys.modules) or "none of " + ", ".join(HEAVY_MODULES)
            logging.getLogger("interp_lib").info("job loaded: %s", loaded)
            root.removeHandler(handler)
            sys.stderr = old_stderr


def set_torch_threads(n: int) -> None:
    """Limits torch's intra-op threads to the job's share of cores: Snakemake runs jobs side
    by side, and oversubscribed threads make every small op wait on descheduled workers."""
    import torch

    torch.set_num_threads(max(1, int(n)))
