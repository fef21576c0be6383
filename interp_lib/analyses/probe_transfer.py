"""Probes trained on the IPD, tested in other games and prompts (issue 28 item 4), from one
model's caches (no model runs).

Per layer, the probe of analyses.probes (standardised resid_post at the decision position,
L2 logistic regression) is fitted on every prompt of the reference context ("ipd", see
interp_lib.contexts), both labellings, to the model's decision there (1 = delta > 0: the second
action, Defect, in meaning), then predicts each other context's prompts, both labellings,
against the model's own decision there (in a context outside any game, its token preference
with the same sign). Both labellings on both sides: a context of one counterbalanced state has
6 prompts instead of 3, and a probe that reads the written token rather than the decision
fails where the labels are exchanged (as the probes' decision_both_labellings target does).

accuracy has its 95% Wilson interval over the test prompts (they are not independent: three
variants share a state). Two floors beside it: `chance`, the test context's majority share,
and `constant`, the accuracy of predicting the training majority everywhere (what a probe that
learned nothing but the IPD's base rate scores). `above_chance` = the interval's low end above
both. status says when no accuracy could pass: "one class in training", "one class in test"
(the context's decisions test nothing but that class), "too few prompts" (even n of n correct
would not clear the floor).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .probes import SITE, ProbeData, make_probe, wilson_interval
from ..contexts import REFERENCE, game_of

COLUMNS = ["model", "context", "game", "layer", "site", "accuracy", "ci_low", "ci_high", "chance", "constant",
           "above_chance", "n_train", "n_train_positive", "n_test", "n_test_positive", "status"]


def probe_transfer(data: ProbeData, contexts: dict[str, str], model_name: str) -> pd.DataFrame:
    """COLUMNS, one row per (context other than the reference, layer). Empty without
    reference prompts; NaN accuracy where the training prompts hold one class."""
    unknown = sorted(set(data.scenario) - set(contexts))
    if unknown:
        raise ValueError(f"contexts: no entry for scenario {unknown[0]!r}")
    context = np.array([contexts[s] for s in data.scenario], dtype=object)
    y_all = (data.delta > 0).astype(int)
    train = np.flatnonzero(context == REFERENCE)
    if not train.size:
        return pd.DataFrame(columns=COLUMNS)
    y_train = y_all[train]
    n_pos_train = int(y_train.sum())
    one_class = n_pos_train in (0, len(train))
    majority = int(n_pos_train * 2 >= len(train))
    L = data.acts.shape[1]
    probes = [None if one_class else make_probe().fit(data.acts[train, layer], y_train) for layer in range(L)]
    rows = []
    for name in dict.fromkeys(context):
        if name == REFERENCE:
            continue
        test = np.flatnonzero(context == name)
        y = y_all[test]
        n, n_pos = len(test), int(y.sum())
        chance = max(n_pos, n - n_pos) / n
        constant = float((y == majority).mean())
        status = ("one class in training" if one_class else "one class in test" if n_pos in (0, n) else
                  "too few prompts" if wilson_interval(n, n)[0] <= max(chance, constant) else "ok")
        for layer in range(L):
            acc, lo, hi = (np.nan,) * 3
            if probes[layer] is not None:
                k = int((probes[layer].predict(data.acts[test, layer]) == y).sum())
                acc, (lo, hi) = k / n, wilson_interval(k, n)
            rows.append({"model": model_name, "context": name, "game": game_of(name), "layer": layer,
                         "site": SITE, "accuracy": acc, "ci_low": lo, "ci_high": hi, "chance": chance,
                         "constant": constant, "above_chance": bool(lo > max(chance, constant)),
                         "n_train": len(train), "n_train_positive": n_pos_train, "n_test": n,
                         "n_test_positive": n_pos, "status": status})
    return pd.DataFrame(rows, columns=COLUMNS)
