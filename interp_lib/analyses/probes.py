"""Linear probes on the decision position's residual stream, from the caches (no model runs).

Features: resid_post[l, decision_position] ([d] per layer l) of every prompt variant of
every scenario of one model. Binary targets (1 = the positive class), on the prompts named:

    decision        standard-labelling prompts: 1 = the model chooses Defect (delta =
                    logit D - logit C > 0; there the same as writing action2)
    opponent_last   standard-labelling prompts: 1 = the opponent played Defect last round
    decision_both_labellings   every prompt, with both labellings among them: 1 = Defect
                    (action2 in the standard labelling, action1 in the swapped one)
    action_token    every prompt, with both labellings among them: 1 = writes action2

The last two tell a model that represents Defect from one that represents the token: for a
model that picks a token whatever it means, Defect is token XOR labelling, which no linear
probe reads (a finding, not a failure).

Per target and layer a logistic-regression probe (standardised features, fixed L2) is
scored by cross-validated accuracy over prompts: leave one scenario out where the data
allow (a swapped-label sibling leaves with its standard scenario: same wordings, variant
for variant), else stratified k-fold (a variant's standard and swapped prompts kept in one
fold where possible); its 95% Wilson interval (too narrow: folds share training prompts),
the chance level (the majority class's share) and the scheme's own baseline (cv_baseline:
each test fold predicted as its training fold's majority class).

Below chance is no finding: with leave-one-scenario-out, a target constant within each
scenario (opponent_last; often decision) loses the held-out scenario's class from the
training fold's majority, and a probe on uninformative features (d >> prompts) then
predicts that scenario's label systematically wrong (in simulations ~0.3 at a chance of
0.6). Only accuracy above the chance level says the layer encodes the target.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..cache.decision_activations import DecisionActivations, read_decision_activations

logger = logging.getLogger("interp_lib")

SITE = "resid_post"
TARGETS = ("decision", "opponent_last", "decision_both_labellings", "action_token")
COLUMNS = ["model", "target", "layer", "site", "accuracy", "ci_low", "ci_high", "chance", "cv_baseline",
           "n_prompts", "n_positive", "cv", "n_folds"]
LOSO, KFOLD, ONE_CLASS, TOO_FEW = "leave-one-scenario-out", "stratified k-fold", "one class", "too few prompts"
MAX_FOLDS = 5
# C = 1 (sklearn's default) on standardised features, fixed rather than tuned: with far
# fewer prompts than dimensions the classes are separable and an unregularised fit has no
# finite optimum, and tuning C would need nested cross-validation on ~20 prompts. The same
# C for every layer and model keeps their accuracies comparable.
C_REG = 1.0
# lbfgs converges in tens of iterations at these sizes (measured: 15 for 15 prompts x 2304
# features); the margin makes a ConvergenceWarning (in the job's log) a real problem's sign.
MAX_ITER = 10_000


# One model's probe features: acts [n, L, d] = resid_post at the decision position.
ProbeData = DecisionActivations


def probe_features(cache_paths: dict[str, str], fingerprint: str | None = None) -> ProbeData:
    """resid_post[:, decision_position, :] and delta of every variant; `cache_paths` maps
    scenario -> one model's cache file (checked against `fingerprint` if given)."""
    return read_decision_activations(cache_paths, SITE, fingerprint)


def _meta(scenario_meta: dict, name: str) -> dict:
    if name not in scenario_meta:
        raise ValueError(f"scenario_meta: no entry for scenario {name!r}")
    return scenario_meta[name]


def probe_targets(data: ProbeData, scenario_meta: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{target: (prompt indices, [len] int 0/1 labels)} (see the module docstring);
    `scenario_meta` maps scenario -> {"opponent_last": "C" | "D" | None, "labelling": ...,
    "group": ..., "probe": False for prompts outside any game (left out of every target)}."""
    for name in dict.fromkeys(data.scenario):
        expected = _meta(scenario_meta, name).get("labelling", "standard")
        found = set(data.labelling[data.scenario == name])
        if found != {expected}:
            raise ValueError(f"scenario {name!r}: the config says labelling {expected!r}, its cache holds "
                             f"{sorted(found)}; rebuild the cache")
    defect = (data.delta > 0).astype(int)
    swapped = (data.labelling == "swapped").astype(int)
    # prompts of the action labels outside any game (meta "probe": false) have no decision to read
    probed = np.array([_meta(scenario_meta, s).get("probe", True) for s in data.scenario], dtype=bool)
    opponent = [_meta(scenario_meta, s).get("opponent_last") for s in data.scenario]
    opponent_defected = np.array([o == "D" for o in opponent], dtype=int)
    standard = np.flatnonzero((swapped == 0) & probed)
    with_opponent = np.array([o is not None for o in opponent], dtype=bool)
    out = {}
    if standard.size:
        out["decision"] = (standard, defect[standard])
        shown = standard[with_opponent[standard]]
        if shown.size:
            out["opponent_last"] = (shown, opponent_defected[shown])
    every = np.flatnonzero(probed)
    if 0 < swapped[every].sum() < len(every):
        out["decision_both_labellings"] = (every, defect[every])
        out["action_token"] = (every, (defect ^ swapped)[every])  # swapped: action2 is Cooperate
    return out


def prompt_groups(data: ProbeData, scenario_meta: dict) -> np.ndarray:
    """[n] cross-validation group per prompt: its scenario's meta "group" (a swapped sibling's
    standard scenario), else the scenario itself."""
    return np.array([_meta(scenario_meta, s).get("group") or s for s in data.scenario], dtype=object)


def cv_splits(y: np.ndarray, groups: np.ndarray, seed: int = 0, variants: np.ndarray | None = None) -> tuple[str, list]:
    """(scheme, [(train indices, test indices), ...]) for labels y [n] and groups [n]: leave
    one group out if there are >= 2 groups and every training fold holds both classes, else
    stratified k-fold (k = min(5, minority count); with `variants`, grouped by (group,
    variant) where that keeps both classes in every training fold) if the minority class
    has >= 2 prompts, else no folds ("one class" / "too few prompts")."""
    from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y)
    counts = np.bincount(y, minlength=2)
    if counts.min() == 0:
        return ONE_CLASS, []
    if len(set(groups)) >= 2:
        splits = list(LeaveOneGroupOut().split(y, y, groups))
        if all(len(set(y[train])) == 2 for train, _ in splits):
            return LOSO, splits
    minority = int(counts.min())
    if minority < 2:
        return TOO_FEW, []
    k = min(MAX_FOLDS, minority)
    if variants is not None:  # a variant's prompts in both labellings stay in one fold
        pairs = np.array([f"{g}:{v}" for g, v in zip(groups, variants)], dtype=object)
        if len(set(pairs)) >= k:
            splits = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(y, y, pairs))
            if all(len(set(y[train])) == 2 and len(test) for train, test in splits):
                return KFOLD, splits
    kfold = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return KFOLD, list(kfold.split(y, y))


def cv_baseline(y: np.ndarray, splits: list) -> float:
    """Accuracy of predicting each test fold as its training fold's majority class: the
    floor of the scheme (below the majority share under leave-one-scenario-out)."""
    correct = sum(int((y[test] == int(y[train].mean() >= 0.5)).sum()) for train, test in splits)
    return correct / len(y) if splits else float("nan")


def make_probe():
    """A fresh, unfitted probe: standardisation, then L2 logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C_REG, max_iter=MAX_ITER))


def cv_accuracy(X: np.ndarray, y: np.ndarray, splits: list) -> int:
    """Number of prompts predicted correctly when each test fold is predicted by a probe fit
    on its training fold (X [n, d], y [n]; every prompt is in one test fold)."""
    correct = 0
    for train, test in splits:
        probe = make_probe().fit(X[train], y[train])
        correct += int((probe.predict(X[test]) == y[test]).sum())
    return correct


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def probe_accuracy(data: ProbeData, scenario_meta: dict, model_name: str, seed: int = 0) -> pd.DataFrame:
    """COLUMNS, one row per (target, layer): cross-validated probe accuracy with its 95%
    Wilson interval over prompts, and the chance level (majority-class share). Without a
    probe (one class, or a single minority prompt) accuracy and interval are NaN."""
    groups = prompt_groups(data, scenario_meta)
    L = data.acts.shape[1]
    rows = []
    for target, (index, y) in probe_targets(data, scenario_meta).items():
        n, X = len(index), data.acts[index]
        scheme, splits = cv_splits(y, groups[index], seed, data.variant[index])
        n_pos = int(y.sum())
        chance = max(n_pos, n - n_pos) / n
        baseline = cv_baseline(y, splits)
        accs = []
        for layer in range(L):
            acc, lo, hi = (np.nan,) * 3
            if splits:
                k = cv_accuracy(X[:, layer], y, splits)
                acc, (lo, hi) = k / n, wilson_interval(k, n)
            accs.append(acc)
            rows.append({"model": model_name, "target": target, "layer": layer, "site": SITE, "accuracy": acc,
                         "ci_low": lo, "ci_high": hi, "chance": chance, "cv_baseline": baseline, "n_prompts": n,
                         "n_positive": n_pos, "cv": scheme, "n_folds": len(splits)})
        best = f"best layer {int(np.nanargmax(accs))} ({np.nanmax(accs):.2f})" if splits else "no probe"
        logger.info("%s, %s: %d prompts, %d positive, %s (%d folds), chance %.2f, %s", model_name, target, n,
                    n_pos, scheme, len(splits), chance, best)
    return pd.DataFrame(rows, columns=COLUMNS)


def probe_table(frames) -> pd.DataFrame:
    """The per-model frames (COLUMNS) concatenated in the order given."""
    frames = list(frames)
    for i, frame in enumerate(frames):
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"probe table {i}: missing columns {', '.join(missing)}")
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat([f[COLUMNS] for f in frames], ignore_index=True)
