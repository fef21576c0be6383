"""Shared fixtures. The embedded family and its caches are built once per test session
by the real workflow in a temporary directory (or reused from $INTERP_TEST_WORKDIR)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs the repository's Snakefile in `workdir` (which holds its own config.yaml)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def workflow_dir(tmp_path_factory) -> Path:
    """A directory where the default workflow has run to completion (target `all`)."""
    reuse = os.environ.get("INTERP_TEST_WORKDIR")
    if reuse:
        wd = Path(reuse)
        wd.mkdir(parents=True, exist_ok=True)
    else:
        wd = tmp_path_factory.mktemp("workflow")
    if not (wd / "config.yaml").exists():
        shutil.copy(REPO / "config.yaml", wd / "config.yaml")
    snakemake(wd, "--cores", "2", "all")
    return wd


@pytest.fixture(scope="session")
def demo_dir(workflow_dir) -> Path:
    return workflow_dir / "results" / "demo"
