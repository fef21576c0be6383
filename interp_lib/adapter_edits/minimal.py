"""A greedy minimal set of layers whose adapter updates, added to the base alone, reproduce
the fine-tune's decisions; numpy only (the model runs behind a callback).

"Reproduces" (per prompt): the same decision sign as the fine-tune, and a delta within
max(margin x |delta_ft - delta_base|, NOISE_MULTIPLE x noise floor) of the fine-tune's: the
edited base recovers all but `margin` of what fine-tuning did to the decision (the floor
term keeps rounding from failing the full set). A set suffices when every prompt is
reproduced.

Search, in the style of the circuits (interp_lib/patching/circuits.py): layers ranked by
their single-layer sufficiency score (mean over prompts of (delta_l - delta_base) x
sign(delta_ft - delta_base): positive = moves the base towards the fine-tune), those that
move it away last; the empty set (the base) first, then the top k layers, k = 1, 2, ...
(at most `max_layers`); the first that suffices is then pruned: every leave-one-out subset
is checked in one batch; of the members whose removal keeps it sufficient, the lowest-scored
goes, and the others, in order of score, each if the set without it still suffices; then
the leave-one-out check again, until no member can be dropped. The result is 1-minimal (no
single member can be dropped), not necessarily the smallest set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..noise import NOISE_MULTIPLE

SET_KINDS = ("minimal", "greedy", "none")

# check(sets, full) -> [(suffices, per-prompt deltas)] for each set of layers (a tuple; the
# empty tuple is the base). Without `full` a check may stop at a set's first prompt that
# fails (its other deltas NaN).
Check = Callable[[Sequence[tuple], bool], list]


def tolerance(ft_delta, base_delta, floor, margin: float) -> np.ndarray:
    """Per prompt: how far from the fine-tune's delta a reproduction may lie."""
    ft, base, floor = (np.asarray(x, dtype=float) for x in (ft_delta, base_delta, floor))
    return np.maximum(margin * np.abs(ft - base), NOISE_MULTIPLE * np.nan_to_num(floor))


def reproduces(deltas, ft_delta, base_delta, floor, margin: float) -> np.ndarray:
    """[prompts] bool: the same decision as the fine-tune and within the tolerance."""
    deltas, ft = np.asarray(deltas, dtype=float), np.asarray(ft_delta, dtype=float)
    same = (deltas > 0) == (ft > 0)
    return same & (np.abs(deltas - ft) <= tolerance(ft, base_delta, floor, margin)) & np.isfinite(deltas)


@dataclass
class MinimalSet:
    """kind "minimal" (suffices; dropping any one member does not), "greedy" (suffices;
    not pruned), "none" (no prefix of up to max_layers ranked layers sufficed: `layers` is
    the largest tried)."""

    kind: str
    layers: list[int]
    deltas: np.ndarray  # per prompt, of `layers` (NaN where not evaluated)
    ranking: list[tuple[int, float]]  # (layer, score), greedy order
    greedy_size: int = 0
    attempts: list[tuple[int, bool]] = field(default_factory=list)  # (k, the top k suffice)
    leave_one_out: list[tuple[int, bool]] = field(default_factory=list)  # (member, the set without it suffices)
    reason: str = ""


def rank_layers(scores: dict[int, float]) -> list[tuple[int, float]]:
    """(layer, score) by score descending, NaN last; ties keep layer order."""
    key = lambda kv: (not math.isfinite(kv[1]), -kv[1] if math.isfinite(kv[1]) else 0.0, kv[0])  # noqa: E731
    return sorted(scores.items(), key=key)


def minimal_sufficient_set(scores: dict[int, float], check: Check, max_layers: int,
                           prune: bool = True) -> MinimalSet:
    """The greedy minimal sufficient set (module doc) over the layers of `scores`."""
    ranking = rank_layers(scores)
    ranked = [layer for layer, _ in ranking][:max_layers]
    ok, deltas = check([()], True)[0]
    if ok:
        return MinimalSet("minimal", [], deltas, ranking, 0, [(0, True)],
                          reason="the base alone reproduces the fine-tune's decisions")
    attempts, found = [(0, False)], None
    for k in range(1, len(ranked) + 1):
        ok, deltas = check([tuple(ranked[:k])], False)[0]
        attempts.append((k, bool(ok)))
        if ok:
            found = k
            break
    if found is None:
        _, deltas = check([tuple(ranked)], True)[0]
        return MinimalSet("none", sorted(ranked), deltas, ranking, len(ranked), attempts,
                          reason=f"no set of the top {len(ranked)} ranked layers reproduced every decision")
    score = dict(ranking)
    members = ranked[:found]
    while True:  # a set that suffices was checked on every prompt: `deltas` are all there
        subsets = [tuple(members[:i] + members[i + 1:]) for i in range(len(members))]
        results = check(subsets, False)
        loo = [(m, bool(r[0])) for m, r in zip(members, results)]
        droppable = sorted((m for m, still in loo if still), key=lambda m: score[m])
        if not droppable or not prune:
            break
        # the lowest-scored droppable member goes (its subset was just checked); the others
        # are checked again, in order, against the set as it then stands
        first = members.index(droppable[0])
        members, deltas = members[:first] + members[first + 1:], results[first][1]
        for m in droppable[1:]:
            rest = [x for x in members if x != m]
            ok, d = check([tuple(rest)], False)[0]
            if ok:
                members, deltas = rest, d
    return MinimalSet("minimal" if not droppable else "greedy", sorted(members), deltas, ranking, found, attempts,
                      sorted(loo))


def set_record(found: MinimalSet) -> dict:
    """The table row of one search (MINIMAL_SET_COLUMNS less the job's metadata)."""
    return {
        "set_kind": found.kind,
        "layers": ";".join(str(x) for x in found.layers),
        "size": len(found.layers),
        "greedy_size": found.greedy_size,
        "ranking": ";".join(f"{layer}:{s:.6g}" for layer, s in found.ranking),
        "attempts": ";".join(f"{k}:{'yes' if ok else 'no'}" for k, ok in found.attempts),
        "leave_one_out": ";".join(f"{m}:{'suffices' if ok else 'fails'}" for m, ok in found.leave_one_out),
        "reason": found.reason,
    }
