"""The statistics of component interaction matrices (numpy only; `interactions.py` builds the
tables from them).

X [N prompts, C components]: one model's signed contributions. Pearson r of columns i, j over
the prompts; a column that takes one value on every prompt (constant) has NaN correlations,
in the data and in any resample or permuted sample where it is constant. Pairs are the upper
triangle (i < j, `np.triu_indices(C, 1)`), P = C (C - 1) / 2 of them.

- Bootstrap: B resamples of the prompts with replacement, the same indices for every model
  (prompts resampled jointly), percentile intervals; a difference's interval comes from
  the differences of the same resamples.
- Permutation null of r_a - r_b: each model's columns standardised (Pearson r does not
  change), then on every prompt independently, with probability 1/2, the two models' vectors
  are exchanged; r recomputed in both swapped samples; two-sided
  p = (1 + #{|null| >= |observed|}) / (1 + n_permutations), so p >= 1 / (1 + n_permutations).
- Benjamini-Hochberg over one comparison's P pairs (scipy.stats.false_discovery_control).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

CONFIDENCE = 0.95
BUDGET_BYTES = 256 * 2 ** 20  # working memory of one block of resamples or permutations
TIE = 1e-12  # |null| >= |observed| - TIE counts as at least as extreme (exact ties stay ties)


CONSTANT = 1e-12  # a column whose range is at most this times its largest |value| is constant


def constant_columns(x: np.ndarray) -> np.ndarray:
    """bool [..., C]: columns of x [..., N, C] with one value on every prompt (up to
    CONSTANT relative: centred data keeps rounding residue where it was constant)."""
    return np.ptp(x, axis=-2) <= CONSTANT * np.abs(x).max(axis=-2)


def standardise(x: np.ndarray) -> np.ndarray:
    """x [..., N, C] centred and scaled to unit norm over N, so that Z^T Z is Pearson r;
    constant columns NaN."""
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(axis=-2, keepdims=True)
    norm = np.sqrt((xc * xc).sum(axis=-2, keepdims=True))
    const = constant_columns(x)[..., None, :]
    return np.where(const, np.nan, xc / np.where(const, 1.0, norm))


def correlation(x: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
    """Pearson r [..., rows, C] of the columns of x [..., N, C] (NaN where a column is
    constant), clipped to [-1, 1]."""
    z = standardise(x)
    return np.clip(np.swapaxes(z[..., rows], -1, -2) @ z, -1.0, 1.0)


def upper_pairs(n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) of every pair i < j, row by row."""
    return np.triu_indices(n_components, 1)


def resample_indices(n_prompts: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """[n_bootstrap, n_prompts] prompt indices drawn with replacement (shared by all models)."""
    return np.random.default_rng(seed).integers(0, n_prompts, size=(n_bootstrap, n_prompts))


def row_blocks(n_components: int, bytes_per_pair: int, budget: int = BUDGET_BYTES) -> list[tuple[int, int]]:
    """Contiguous row ranges [i0, i1) whose pairs (i < j) cost at most `budget` bytes at
    `bytes_per_pair` each (at least one row per block)."""
    blocks, i0, size = [], 0, 0
    for i in range(n_components - 1):
        pairs = n_components - 1 - i
        if size and (size + pairs) * bytes_per_pair > budget:
            blocks.append((i0, i))
            i0, size = i, 0
        size += pairs
    if n_components > 1:
        blocks.append((i0, n_components - 1))
    return blocks


def _block_pairs(i0: int, i1: int, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Local (row - i0, column) indices of the pairs i < j with i in [i0, i1)."""
    i, j = upper_pairs(n_components)
    sel = (i >= i0) & (i < i1)
    return i[sel] - i0, j[sel]


def percentile_interval(samples: np.ndarray, estimate: np.ndarray, confidence: float = CONFIDENCE):
    """(low, high) [P] of samples [B, P] (NaN samples left out); NaN where the estimate is;
    widened to contain the estimate, as `interp_lib.stats.mean_ci` does."""
    tail = 100 * (1 - confidence) / 2
    estimate = np.asarray(estimate, dtype=np.float64)
    out = np.full((2, estimate.size), np.nan)
    ok = np.isfinite(estimate)
    s = samples[:, ok]
    partial = ~np.isfinite(s).all(axis=0)
    vals = np.full((2, s.shape[1]), np.nan)
    if (~partial).any():
        vals[:, ~partial] = np.percentile(s[:, ~partial], [tail, 100 - tail], axis=0)
    if partial.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            vals[:, partial] = np.nanpercentile(s[:, partial], [tail, 100 - tail], axis=0)
    out[:, ok] = vals
    return np.fmin(out[0], estimate), np.fmax(out[1], estimate)


def bootstrap_intervals(x: dict, pairs: list, idx: np.ndarray, confidence: float = CONFIDENCE,
                        budget: int = BUDGET_BYTES, progress=None) -> tuple[dict, dict]:
    """Percentile intervals from the resamples idx [B, N] (the same for every model).

    x: {model: [N, C]}; pairs: [(model_a, model_b)]. Returns ({model: (low, high) of r [P]},
    {(a, b): (low, high) of r_a - r_b [P]}), pairs i < j in `upper_pairs` order."""
    models = list(x)
    n_boot = idx.shape[0]
    n_prompts, n_comp = next(iter(x.values())).shape
    r_obs = {m: correlation(x[m])[upper_pairs(n_comp)] for m in models}
    r_ci = {m: (np.full(r_obs[m].size, np.nan), np.full(r_obs[m].size, np.nan)) for m in models}
    d_ci = {p: (np.full(r_obs[models[0]].size, np.nan), np.full(r_obs[models[0]].size, np.nan)) for p in pairs}
    # per block: every model's [B, block pairs] float32, one difference, the percentile's copy
    blocks = row_blocks(n_comp, 4 * n_boot * (len(models) + 2), budget)
    if progress is not None:
        progress.total = (progress.total or 0) + len(blocks) * len(models)
    start = 0
    for i0, i1 in blocks:
        li, lj = _block_pairs(i0, i1, n_comp)
        sl = slice(start, start + li.size)
        chunk = max(1, budget // (8 * (3 * n_prompts * n_comp + 2 * (i1 - i0) * n_comp)))
        boot = {}
        for m in models:
            boot[m] = np.empty((n_boot, li.size), dtype=np.float32)
            for k0 in range(0, n_boot, chunk):
                r = correlation(x[m][idx[k0:k0 + chunk]], rows=slice(i0, i1))  # [K, rows, C]
                boot[m][k0:k0 + chunk] = r[:, li, lj]
            r_ci[m][0][sl], r_ci[m][1][sl] = percentile_interval(boot[m], r_obs[m][sl], confidence)
            if progress is not None:
                progress.update(1)
        for a, b in pairs:
            d_ci[(a, b)][0][sl], d_ci[(a, b)][1][sl] = percentile_interval(
                boot[a] - boot[b], r_obs[a][sl] - r_obs[b][sl], confidence)
        start += li.size
    return r_ci, d_ci


def permutation_test(xa: np.ndarray, xb: np.ndarray, n_permutations: int, rng: np.random.Generator,
                     budget: int = BUDGET_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """(p [P], null_sd [P]) of r_a - r_b for every pair, xa and xb [N, C] the two models'
    contributions on the same prompts. The swaps of permutation k are
    rng.random((n_permutations, N))[k] < 0.5 (drawn in chunks, the same stream)."""
    za, zb = standardise(xa), standardise(xb)
    observed = np.abs(za.T @ za - zb.T @ zb)  # NaN where a component is constant in a or b
    za0, zb0 = np.nan_to_num(za), np.nan_to_num(zb)
    n_prompts, n_comp = za.shape
    count = np.zeros((n_comp, n_comp))
    total, total_sq, valid = np.zeros_like(count), np.zeros_like(count), np.zeros_like(count)
    chunk = max(1, budget // (8 * (4 * n_prompts * n_comp + 4 * n_comp * n_comp)))
    for k0 in range(0, n_permutations, chunk):
        swap = (rng.random((min(chunk, n_permutations - k0), n_prompts)) < 0.5)[..., None]
        null = correlation(np.where(swap, zb0, za0)) - correlation(np.where(swap, za0, zb0))  # [K, C, C]
        finite = np.isfinite(null)
        with np.errstate(invalid="ignore"):
            count += (np.abs(null) >= observed - TIE).sum(axis=0)
        null = np.where(finite, null, 0.0)
        total += null.sum(axis=0)
        total_sq += (null * null).sum(axis=0)
        valid += finite.sum(axis=0)
    iu = upper_pairs(n_comp)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = (1 + count[iu]) / (1 + valid[iu])
        mean = total[iu] / valid[iu]
        sd = np.sqrt(np.maximum(total_sq[iu] / valid[iu] - mean * mean, 0.0) * valid[iu] / (valid[iu] - 1))
    p[~np.isfinite(observed[iu])] = np.nan
    return p, np.where(valid[iu] > 1, sd, np.nan)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """BH-adjusted q values of the finite p values (NaN stays NaN)."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = false_discovery_control(p[ok], method="bh")
    return q


def detection_limits(n_prompts: int, n_tests: int, fdr: float, n_permutations: int,
                     null_sd: float = float("nan"), n_groups: int = 1) -> dict:
    """What N prompts and n_permutations can show for n_tests pairs at BH level `fdr`.

    The smallest p that BH passes alone is fdr / n_tests (two-sided z = z_crit). The sampling
    SD of r near 0 is 1 / sqrt(N - G) ((1 - r^2) / sqrt(N - G) in general; G = 1 mean removed,
    or one per group of centred data), so a difference of two independent correlations near 0
    has SD sqrt(2 / (N - G)): `detectable_difference` = z_crit x that (independent models: two
    fine-tunes of one base on the same prompts are paired, and their difference varies less),
    `detectable_difference_null` = z_crit x `null_sd` (the median SD of the permutation null,
    which knows the pairing); either above 2 (the largest |r_a - r_b|) means no difference can
    be detected. The smallest permutation p is 1 / (1 + n_permutations): BH passes k pairs at
    that p only if k >= `min_discoveries` = ceil(n_tests / (fdr (1 + n_permutations)))."""
    from scipy.stats import norm

    out = {"smallest_p": 1.0 / (1 + n_permutations), "min_discoveries": math.nan,
           "detectable_difference": math.nan, "detectable_difference_null": math.nan}
    if n_tests < 1:
        return out
    z = float(norm.isf(fdr / (2 * n_tests)))
    out["min_discoveries"] = int(math.ceil(n_tests / (fdr * (1 + n_permutations)) - 1e-9))
    if n_prompts > n_groups:
        out["detectable_difference"] = z * math.sqrt(2.0 / (n_prompts - n_groups))
    if math.isfinite(null_sd):
        out["detectable_difference_null"] = z * null_sd
    return out
