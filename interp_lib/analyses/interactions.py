"""Component interaction matrices from the DLA tables: how the heads' and MLPs' signed
contributions at the decision position co-vary across prompts in each model, and where two
models differ ("the same components, wired differently").

Input: the DLA per-prompt tables (`dla/per/{model}/{scenario}.csv`, `dla.FULL_COLUMNS`), every
variant of every scenario, both labellings. X_m [N prompts, C components]: model m's signed
contribution (pre-softcap logits, positive = pro-Defect) of every head `L{l}H{h}` and MLP
`L{l}_MLP` (the embedding left out), prompts in the tables' order. Every model must have the
same prompts; the components are those all models have. Optionally each labelling's mean is
removed first (`centring="labelling"`): the readout flips with the labelling (for a swapped
prompt the Defect token is action1), so a component that writes a token rather than a meaning
changes sign between labellings, and pooled r is then close to +-1 for every such pair.

Outputs (tidy; pairs i < j in model order, statistics in `interaction_stats`):
- correlations: model, component_a, component_b, r, ci_low, ci_high, n_prompts;
  r NaN where a component is constant over the prompts (its name in the summary);
- differences: per compared pair of models, r_a, r_b, difference = r_a - r_b with its
  bootstrap interval, the permutation null's SD and p value, BH q and significant (q <= fdr);
- summary: one row per compared pair: counts, the largest |difference|, and what N prompts
  and the permutations can show (`interaction_stats.detection_limits`).
"""

from __future__ import annotations

import logging
import zlib

import numpy as np
import pandas as pd

from . import interaction_stats as st

log = logging.getLogger(__name__)

CORRELATION_COLUMNS = ["model", "component_a", "component_b", "r", "ci_low", "ci_high", "n_prompts"]
DIFFERENCE_COLUMNS = ["model_a", "model_b", "component_a", "component_b", "r_a", "r_b", "difference", "ci_low",
                      "ci_high", "null_sd", "p_perm", "q_fdr", "significant", "n_prompts"]
SUMMARY_COLUMNS = ["model_a", "model_b", "centring", "n_prompts", "n_labellings", "n_groups", "n_components",
                   "n_pairs", "n_tested", "n_significant", "fdr", "n_bootstrap", "n_permutations", "smallest_p",
                   "min_discoveries", "detectable_difference", "detectable_difference_null", "max_abs_difference",
                   "max_difference_pair", "constant_components"]
# Role pairs the research questions compare (RQ2 first, then RQ1's strategic vs moral).
ROLE_PAIRS = (("deontological", "utilitarian"), ("strategic", "deontological"), ("strategic", "utilitarian"),
              ("strategic", "game_deontological"))
MIN_PROMPTS = 3  # with 2 prompts every r is +-1


def compared_pairs(models: list, experiments: dict, roles: dict, mode: str = "compared") -> list[list[str]]:
    """[model_a, model_b] pairs to compare, each unordered pair once: the RQ role pairs
    (ROLE_PAIRS), then each experiment's (source, target); with mode "all" also every other
    pair of configured models (config order)."""
    out, seen = [], set()

    def add(a, b):
        if a in models and b in models and a != b and frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            out.append([a, b])

    for r1, r2 in ROLE_PAIRS:
        add(roles.get(r1), roles.get(r2))
    for exp in experiments.values():
        add(exp["source"], exp["target"])
    if mode == "all":
        for i, a in enumerate(models):
            for b in models[i + 1:]:
                add(a, b)
    return out


def contribution_matrices(full: pd.DataFrame) -> tuple[dict, list, list]:
    """({model: X [N, C]}, prompts [(scenario, variant)], components) from DLA rows
    (FULL_COLUMNS) of heads and MLPs; one-line ValueError when models' prompts differ."""
    comps = full[full["kind"].isin(["head", "mlp"])]
    if comps.empty:
        raise ValueError("interactions: the DLA tables hold no head or MLP rows")
    models = list(dict.fromkeys(comps["model"]))
    x, prompts, components = {}, None, None
    for m in models:
        rows = comps[comps["model"] == m]
        wide = rows.pivot_table(index=["scenario", "variant"], columns="component", values="contribution",
                                aggfunc="first", sort=False)
        order = list(dict.fromkeys(rows["component"]))
        keys = list(wide.index)
        if prompts is None:
            prompts = keys
        elif set(keys) != set(prompts):
            missing = sorted(set(prompts) ^ set(keys))[:3]
            raise ValueError(f"interactions: model {m} has other prompts than {models[0]} (e.g. "
                             f"{', '.join(f'{s} variant {v}' for s, v in missing)}); rerun its DLA job")
        components = order if components is None else [c for c in components if c in set(order)]
        x[m] = wide.loc[prompts, order]
    dropped = {m: sorted(set(x[m].columns) - set(components)) for m in models}
    for m, names in dropped.items():
        if names:
            log.warning("interactions: %s: %d components that other models lack are left out (%s)", m,
                        len(names), ", ".join(names[:5]))
    out = {m: x[m][components].to_numpy(np.float64) for m in models}
    for m, arr in out.items():
        if not np.isfinite(arr).all():
            raise ValueError(f"interactions: model {m} has missing or non-finite contributions")
    return out, prompts, components


def centre(x: dict, groups: list) -> dict:
    """{model: X} with each group's mean (over its prompts, per component) subtracted: what
    is left is how contributions vary within a group (groups [N], one label per prompt)."""
    groups = np.asarray(groups)
    out = {}
    for m, arr in x.items():
        scale = np.abs(arr).max(axis=0)
        arr = arr.copy()
        for g in dict.fromkeys(groups.tolist()):
            arr[groups == g] -= arr[groups == g].mean(axis=0)
        # constant within every group: exactly 0 (not the means' rounding residue), so constant
        arr[:, np.ptp(arr, axis=0) <= st.CONSTANT * scale] = 0.0
        out[m] = arr
    return out


def _pair_seed(seed: int, a: str, b: str) -> np.random.Generator:
    """The permutation stream of a pair: fixed by the seed and the two names (adding a pair
    leaves the others' p values as they were)."""
    return np.random.default_rng([int(seed), 1, zlib.crc32(f"{a}\0{b}".encode())])


def interaction_tables(full: pd.DataFrame, pairs: list, n_bootstrap: int = 1000, n_permutations: int = 1000,
                       fdr: float = 0.05, seed: int = 0, centring: str = "none", labellings: dict | None = None,
                       budget: int = st.BUDGET_BYTES, progress: bool = False):
    """(correlations, differences, summary) tables (module docstring) of the DLA rows `full`
    for the model pairs `pairs` [(model_a, model_b)] (pairs of models without rows are left
    out with a warning). `centring`: "none" (every prompt as it is) or "labelling" (each
    labelling's mean removed first, so that r is the co-variation within a labelling;
    `labellings` {scenario: labelling}, default standard); `progress`: a progress bar.
    The summary's n_labellings counts the prompts' labellings, n_groups the means removed (1 for
    Pearson r alone)."""
    from tqdm.auto import tqdm

    x, prompts, components = contribution_matrices(full)
    n, n_comp = len(prompts), len(components)
    groups = [(labellings or {}).get(s, "standard") for s, _ in prompts]
    n_groups = 1
    if centring == "labelling":
        n_groups = len(set(groups))
        x = centre(x, groups)
    elif centring != "none":
        raise ValueError(f"interactions: centring must be none or labelling, not {centring!r}")
    absent = [f"{a} vs {b}" for a, b in pairs if a not in x or b not in x]
    if absent:
        log.warning("interactions: no DLA rows for the pairs %s; left out", ", ".join(absent))
    pairs = [(a, b) for a, b in pairs if a in x and b in x]
    progress = tqdm(total=len(pairs), desc="interactions", disable=not progress)
    enough = n - n_groups + 1 >= MIN_PROMPTS
    if not enough:
        log.warning("interactions: %d prompts in %d groups; correlations need at least %d prompts beyond the "
                    "groups' means (all NaN)", n, n_groups, MIN_PROMPTS - 1)
    iu = st.upper_pairs(n_comp)
    names_a, names_b = np.asarray(components)[iu[0]], np.asarray(components)[iu[1]]
    constant = {m: [c for c, k in zip(components, st.constant_columns(arr)) if k] for m, arr in x.items()}
    for m, names in constant.items():
        if names:
            log.info("interactions: %s: %d constant components, their r is NaN: %s", m, len(names),
                     ", ".join(names))
    r = {m: st.correlation(arr)[iu] if enough else np.full(iu[0].size, np.nan) for m, arr in x.items()}
    if enough:
        idx = st.resample_indices(n, n_bootstrap, seed)
        r_ci, d_ci = st.bootstrap_intervals(x, pairs, idx, budget=budget, progress=progress)
    else:
        nan = np.full(iu[0].size, np.nan)
        r_ci, d_ci = {m: (nan, nan) for m in x}, {p: (nan, nan) for p in pairs}
    corr = pd.concat([pd.DataFrame({"model": m, "component_a": names_a, "component_b": names_b, "r": r[m],
                                    "ci_low": r_ci[m][0], "ci_high": r_ci[m][1], "n_prompts": n})
                      for m in x], ignore_index=True)[CORRELATION_COLUMNS]
    diffs, summary = [], []
    for a, b in pairs:
        if enough:
            p, null_sd = st.permutation_test(x[a], x[b], n_permutations, _pair_seed(seed, a, b), budget)
        else:
            p = null_sd = np.full(iu[0].size, np.nan)
        progress.update(1)
        q = st.benjamini_hochberg(p)
        d = r[a] - r[b]
        diffs.append(pd.DataFrame({
            "model_a": a, "model_b": b, "component_a": names_a, "component_b": names_b, "r_a": r[a], "r_b": r[b],
            "difference": d, "ci_low": d_ci[(a, b)][0], "ci_high": d_ci[(a, b)][1], "null_sd": null_sd,
            "p_perm": p, "q_fdr": q, "significant": np.nan_to_num(q, nan=1.0) <= fdr, "n_prompts": n}))
        tested = np.isfinite(p)
        limits = st.detection_limits(n, int(tested.sum()), fdr, n_permutations,
                                     float(np.nanmedian(null_sd)) if tested.any() else float("nan"), n_groups)
        top = int(np.nanargmax(np.abs(d))) if np.isfinite(d).any() else None
        summary.append({
            "model_a": a, "model_b": b, "centring": centring, "n_prompts": n,
            "n_labellings": len(set(groups)), "n_groups": n_groups,
            "n_components": n_comp, "n_pairs": iu[0].size,
            "n_tested": int(tested.sum()), "n_significant": int((np.nan_to_num(q, nan=1.0) <= fdr).sum()),
            "fdr": fdr, "n_bootstrap": n_bootstrap, "n_permutations": n_permutations, **limits,
            "max_abs_difference": float(abs(d[top])) if top is not None else np.nan,
            "max_difference_pair": f"{names_a[top]} x {names_b[top]}" if top is not None else "",
            "constant_components": "; ".join(f"{m}: {', '.join(constant[m])}" for m in (a, b) if constant[m])})
    progress.close()
    diff = (pd.concat(diffs, ignore_index=True) if diffs else pd.DataFrame(columns=DIFFERENCE_COLUMNS))
    return corr, diff[DIFFERENCE_COLUMNS], pd.DataFrame(summary, columns=SUMMARY_COLUMNS)


def square(table: pd.DataFrame, value: str, components: list | None = None) -> tuple[np.ndarray, list]:
    """A symmetric [C, C] matrix of `value` from tidy pair rows (component_a, component_b),
    diagonal 1 for r (NaN for a component whose correlations are all NaN), 0 otherwise."""
    components = components or list(dict.fromkeys([*table["component_a"], *table["component_b"]]))
    pos = {c: i for i, c in enumerate(components)}
    out = np.full((len(components),) * 2, np.nan)
    i = table["component_a"].map(pos).to_numpy()
    j = table["component_b"].map(pos).to_numpy()
    v = table[value].to_numpy(np.float64)
    out[i, j] = v
    out[j, i] = v
    defined = np.isfinite(out).any(axis=1)
    np.fill_diagonal(out, np.where(defined, 1.0 if value in ("r", "r_a", "r_b") else 0.0, np.nan))
    return out, components
