"""Ranking single-patch effects toward the source model's decision: the order in which circuits
are grown (`circuits.discover_circuit`) and drawn (plots). numpy only, so that figure jobs
that redraw a circuit's ranking load no torch."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def rank_toward_source(names: Sequence[str], delta_change: Sequence[float], scores: Sequence[float] | None,
                       baseline_delta: float, source_delta: float,
                       max_components: int) -> tuple[list[tuple[str, float]], int, list[str]]:
    """(ranking, n_candidates, excluded) of single-patch effects.

    score = (`scores`, e.g. AtP estimates, else delta_change) * sign(source - baseline):
    positive = toward the source's action. Candidates have a positive score and an exact
    delta_change that does not push away (with estimates, the sweep still measured it).
    `ranking`: (name, score), the candidates first by score descending (the greedy order),
    then the rest by score; `excluded`: the components among the top `max_components` by
    |score| that push away, in that order."""
    sign = np.sign(source_delta - baseline_delta)
    exact = np.asarray(delta_change, dtype=float) * sign
    score = exact if scores is None else np.asarray(scores, dtype=float) * sign
    opposing = (score < 0) | (exact < 0)  # NaN compares False: unknown is not opposing
    candidate = (score > 0) & ~opposing
    desc = [-v if math.isfinite(v) else math.inf for v in score]  # NaN last; ties keep table order
    order = sorted(range(len(names)), key=lambda i: (not candidate[i], desc[i]))
    by_size = sorted(range(len(names)), key=lambda i: abs(score[i]) if math.isfinite(score[i]) else -1.0,
                     reverse=True)[:max_components]
    return ([(names[i], float(score[i])) for i in order], int(candidate.sum()),
            [names[i] for i in by_size if opposing[i]])
