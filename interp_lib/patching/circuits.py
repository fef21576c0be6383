"""Circuits: sets of components whose joint patch makes the target take the source's action.

Sign convention: a component's score is its single-patch effect (exact delta_change, or an
AtP estimate) times sign(source_delta - baseline_delta), so positive = moves the target
toward the source's action, negative = pushes it away. Only components with a positive
score are candidates; a greedy search patches the top k candidates jointly, and the first
prefix that flips the action is pruned until no member can be dropped (1-minimal)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from ..analyses.behaviour import action_of
from .activations import PromptActivations
from .components import Component, PatchResult, _ratio
from .ranking import rank_toward_source
from .runner import PatchRunner

CIRCUIT_KINDS = ("minimal", "greedy", "none")


@dataclass
class CircuitDiscovery:
    """A circuit and how it was found. `kind`: "minimal" (flips; dropping any one member
    does not), "greedy" (flips; a prefix of the ranking returned unpruned, not checked or
    not minimal), "none" (nothing flipped within `max_components` candidates:
    `minimal_circuit` is then the best attempt, the largest gap recovered, never padded).
    The name `minimal_circuit` is the design document's API; read it with `kind`."""

    ranked_components: list[tuple[str, float]]  # (component, score toward the source), greedy order first
    minimal_circuit: list[str]
    all_patches: list[PatchResult]
    flipped: bool
    patched_delta: float
    gap_recovered: float
    baseline_delta: float = math.nan
    source_delta: float = math.nan
    attempts: list[tuple[int, float]] = field(default_factory=list)  # (k, joint delta of the top k candidates)
    reason: str = ""
    kind: str | None = None  # None: "greedy" if flipped (nothing checked it) else "none"
    greedy_size: int | None = None  # size of the greedy prefix the circuit came from (None: the circuit's)
    excluded: list[str] = field(default_factory=list)  # opposing components among the top max_components by |score|
    leave_one_out: list[tuple[str, float]] = field(default_factory=list)  # (member, joint delta without it)

    def __post_init__(self):
        if self.kind is None:
            self.kind = "greedy" if self.flipped else "none"
        if self.kind not in CIRCUIT_KINDS:
            raise ValueError(f"circuit kind must be one of {CIRCUIT_KINDS}, got {self.kind!r}")
        if self.greedy_size is None:
            self.greedy_size = len(self.minimal_circuit)

    @property
    def excluded_opposing(self) -> int:
        return len(self.excluded)


def _joint_deltas(runner: PatchRunner, source: PromptActivations, target: PromptActivations,
                  sets: list[list[Component]]) -> list[float]:
    """The delta after patching each set jointly (one batched pass); an empty set is the
    unpatched target, which the runner is not asked for."""
    patched = [s for s in sets if s]
    got = iter(runner.deltas(source, target, patched) if patched else [])
    return [float(next(got)) if s else float(target.delta) for s in sets]


def _without_each(members: list[Component]) -> list[list[Component]]:
    return [members[:i] + members[i + 1:] for i in range(len(members))]


def _prune(runner: PatchRunner, source: PromptActivations, target: PromptActivations,
           members: list[Component], delta: float, score: dict, keep: str, prune: bool):
    """(circuit, its joint delta, its leave-one-out deltas, is it 1-minimal?) from a set
    whose joint patch gives the source's action `keep`.

    One batched pass per round patches every leave-one-out subset; while some still flip,
    the droppable member with the smallest score goes (`prune=False`: none goes). The
    result is 1-minimal: every leave-one-out subset fails to flip."""
    while True:
        loo = _joint_deltas(runner, source, target, _without_each(members))
        droppable = [i for i, d in enumerate(loo) if action_of(d) == keep]
        if not droppable or not prune:
            return members, delta, loo, not droppable
        i = min(droppable, key=lambda j: score[members[j].name])
        members, delta = members[:i] + members[i + 1:], loo[i]


def discover_circuit(runner: PatchRunner, source: PromptActivations, target: PromptActivations,
                     results: list[PatchResult], max_components: int = 10,
                     scores: Sequence[float] | None = None, prune: bool = True) -> CircuitDiscovery:
    """A circuit of up to `max_components` components, by exact joint patching.

    Components are ranked by score toward the source's action (delta_change, or `scores`
    aligned with `results`, e.g. AtP estimates, times sign(source - baseline)); those that
    push away are never added. The top k candidates are patched jointly, k = 1..max_components
    (one batched pass); the first k that gives the source's action is the greedy prefix,
    then pruned to a 1-minimal set (`prune=False`: returned as is, kind "greedy" unless
    already minimal)."""
    base, src = target.delta, source.delta
    ranking, n_candidates, excluded = rank_toward_source([r.component for r in results],
                                                         [r.delta_change for r in results], scores, base, src,
                                                         max_components)
    common = dict(ranked_components=ranking, all_patches=results, baseline_delta=base, source_delta=src)
    if action_of(base) == action_of(src):  # no search, so nothing was excluded from one
        return CircuitDiscovery(minimal_circuit=[], flipped=False, patched_delta=base, gap_recovered=math.nan,
                                kind="none", reason="source and target already take the same action", **common)
    common["excluded"] = excluded
    comps = [Component.parse(name) for name, _ in ranking[:min(n_candidates, max_components)]]
    if not comps:
        return CircuitDiscovery(minimal_circuit=[], flipped=False, patched_delta=base, gap_recovered=0.0, kind="none",
                                reason="no single component moves the target toward the source's action", **common)
    deltas = runner.deltas(source, target, [comps[:k] for k in range(1, len(comps) + 1)])
    attempts = [(k + 1, float(d)) for k, d in enumerate(deltas)]

    def gap(d: float) -> float:  # fraction of the baseline -> source gap recovered
        return _ratio(d - base, src - base)

    flip_k = next((k for k, d in attempts if action_of(d) == action_of(src)), None)
    if flip_k is None:
        best_k, best_d = max(attempts, key=lambda a: gap(a[1]))
        return CircuitDiscovery(minimal_circuit=[c.name for c in comps[:best_k]], flipped=False, patched_delta=best_d,
                                gap_recovered=gap(best_d), attempts=attempts, kind="none", greedy_size=best_k,
                                reason=f"no set of up to {len(comps)} top candidate components flipped the action",
                                **common)
    score = dict(ranking)
    members, delta, loo, minimal = _prune(runner, source, target, comps[:flip_k], attempts[flip_k - 1][1], score,
                                          action_of(src), prune)
    return CircuitDiscovery(minimal_circuit=[c.name for c in members], flipped=True, patched_delta=delta,
                            gap_recovered=gap(delta), attempts=attempts, kind="minimal" if minimal else "greedy",
                            greedy_size=flip_k, leave_one_out=[(c.name, d) for c, d in zip(members, loo)], **common)


CIRCUIT_COLUMNS = ["experiment", "source", "target", "scenario", "variant", "positions", "head_site",
                   "ranking", "flipped", "circuit_kind", "circuit_size", "greedy_size", "circuit",
                   "excluded_opposing", "baseline_delta", "source_delta", "patched_delta", "gap_recovered",
                   "attempts", "leave_one_out", "reason"]


def circuit_record(found: CircuitDiscovery) -> dict:
    """The table row of one discovery (CIRCUIT_COLUMNS less the experiment's metadata)."""
    return {
        "flipped": found.flipped,
        "circuit_kind": found.kind,
        "circuit_size": len(found.minimal_circuit),
        "greedy_size": found.greedy_size,
        "circuit": ";".join(found.minimal_circuit),
        "excluded_opposing": found.excluded_opposing,
        "baseline_delta": found.baseline_delta,
        "source_delta": found.source_delta,
        "patched_delta": found.patched_delta,
        "gap_recovered": found.gap_recovered,
        "attempts": ";".join(f"{k}:{d:.6g}" for k, d in found.attempts),
        "leave_one_out": ";".join(f"{c}:{d:.6g}" for c, d in found.leave_one_out),
        "reason": found.reason,
    }
