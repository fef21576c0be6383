"""Means with bootstrap confidence intervals (percentile method).

Every mean a table publishes over prompt variants carries its 95% interval: the 2.5th and
97.5th percentiles of the means of N_RESAMPLES resamples with replacement (deterministic
for a seed). With fewer than two values the interval is NaN, not a zero-width interval.
"""

from __future__ import annotations

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000


def bootstrap_means(x: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """[..., n_resamples] means of resamples of the last axis of x [..., n] (the same
    resample indices for every row, so rows of equal length cost one gather)."""
    n = x.shape[-1]
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    return x[..., idx].mean(-1)


def mean_ci(values, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
            seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of the finite values' mean; NaN interval for fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    if x.size < 2:
        return float(x.mean()), float("nan"), float("nan")
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(bootstrap_means(x, n_resamples, seed), [tail, 100 - tail])
    return float(x.mean()), float(min(lo, x.mean())), float(max(hi, x.mean()))


def grouped_mean_ci(df, by: list[str], value: str, confidence: float = CONFIDENCE):
    """One row per group of `df` (first-seen order): the `by` columns, n, mean, ci_low and
    ci_high of `value`; groups of equal size are resampled together."""
    import pandas as pd

    groups = [(key if isinstance(key, tuple) else (key,), g[value].to_numpy(float))
              for key, g in df.groupby(by, sort=False)]
    tail = 100 * (1 - confidence) / 2
    out = np.full((len(groups), 3), np.nan)
    by_size: dict[int, list[int]] = {}
    for i, (_, x) in enumerate(groups):
        by_size.setdefault(int(np.isfinite(x).sum()) if np.isfinite(x).all() else -1, []).append(i)
    for size, members in by_size.items():
        if size < 2:  # one value, or NaNs among them: one at a time
            for i in members:
                out[i] = mean_ci(groups[i][1], confidence)
            continue
        x = np.stack([groups[i][1] for i in members])
        mean = x.mean(-1)
        lo, hi = np.percentile(bootstrap_means(x), [tail, 100 - tail], axis=-1)
        out[members] = np.stack([mean, np.minimum(lo, mean), np.maximum(hi, mean)], -1)
    rows = [{**dict(zip(by, key)), "n": int(np.isfinite(x).sum()), "mean": m, "ci_low": lo, "ci_high": hi}
            for (key, x), (m, lo, hi) in zip(groups, out)]
    return pd.DataFrame(rows, columns=[*by, "n", "mean", "ci_low", "ci_high"])
