"""The behavioural baseline: each model's choice on each evaluation prompt."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import pandas as pd

from .cache import CacheFile

COLUMNS = ["model", "scenario", "variant", "delta", "p_action2", "action"]


def action_of(delta: float) -> str:
    """"D" when delta = logit(D) - logit(C) > 0, else "C"."""
    return "D" if delta > 0 else "C"


def decisions_table(cache_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (model, scenario, variant), read from cache files' decision attrs."""
    rows = []
    for path in cache_files:
        with CacheFile(path) as cache:
            for v in cache.variants:
                delta = float(cache.group(v).attrs["delta"])
                rows.append({
                    "model": str(cache.attrs["model"]),
                    "scenario": str(cache.attrs["scenario"]),
                    "variant": v,
                    "delta": delta,
                    "p_action2": 1.0 / (1.0 + math.exp(-delta)),
                    "action": action_of(delta),
                })
    return pd.DataFrame(rows, columns=COLUMNS)
