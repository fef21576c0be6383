"""Circuits: the top-ranked components patched jointly until the target takes the source's action."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from ..behavior import action_of
from .activations import PromptActivations
from .components import Component, PatchResult, _ratio
from .runner import PatchRunner


@dataclass
class CircuitDiscovery:
    """Greedy joint patching of the top-ranked components until the target takes the
    source's action. `flipped=False` means no prefix of up to `max_components` flipped it;
    `minimal_circuit` is then the best attempt (largest gap recovered), never padded."""

    ranked_components: list[tuple[str, float]]  # (component, delta_change), by |delta_change|
    minimal_circuit: list[str]
    all_patches: list[PatchResult]
    flipped: bool
    patched_delta: float
    gap_recovered: float
    baseline_delta: float = math.nan
    source_delta: float = math.nan
    attempts: list[tuple[int, float]] = field(default_factory=list)  # (k, joint patched delta)
    reason: str = ""


def discover_circuit(runner: PatchRunner, source: PromptActivations, target: PromptActivations,
                     results: list[PatchResult], max_components: int = 10,
                     scores: Sequence[float] | None = None) -> CircuitDiscovery:
    """Ranks components by |delta_change| (or by |scores|, e.g. AtP estimates aligned with
    `results`) and patches the top k jointly, k = 1..max_components, in one batched pass
    of exact patching; the first k that gives the source's action is the circuit."""
    scores = [r.delta_change for r in results] if scores is None else list(scores)
    order = sorted(range(len(results)), key=lambda i: abs(scores[i]), reverse=True)
    ranked = [results[i] for i in order]
    ranking = [(results[i].component, float(scores[i])) for i in order]
    base, src = target.delta, source.delta
    common = dict(ranked_components=ranking, all_patches=results, baseline_delta=base, source_delta=src)
    if action_of(base) == action_of(src):
        return CircuitDiscovery(minimal_circuit=[], flipped=False, patched_delta=base, gap_recovered=math.nan,
                                reason="source and target already take the same action", **common)
    comps = [Component.parse(r.component) for r in ranked[:max_components]]
    prefixes = [comps[:k] for k in range(1, len(comps) + 1)]
    deltas = runner.deltas(source, target, prefixes)
    attempts = [(k + 1, float(d)) for k, d in enumerate(deltas)]
    for k, d in attempts:
        if action_of(d) == action_of(src):
            return CircuitDiscovery(minimal_circuit=[c.name for c in comps[:k]], flipped=True, patched_delta=d,
                                    gap_recovered=_ratio(d - base, src - base), attempts=attempts, **common)
    best_k, best_d = max(attempts, key=lambda a: _ratio(a[1] - base, src - base))
    return CircuitDiscovery(minimal_circuit=[c.name for c in comps[:best_k]], flipped=False, patched_delta=best_d,
                            gap_recovered=_ratio(best_d - base, src - base), attempts=attempts,
                            reason=f"no set of up to {len(comps)} top components flipped the action", **common)


CIRCUIT_COLUMNS = ["experiment", "source", "target", "scenario", "variant", "positions", "head_site",
                   "ranking", "flipped", "circuit_size", "circuit", "baseline_delta", "source_delta", "patched_delta",
                   "gap_recovered", "attempts", "reason"]


def circuit_record(found: CircuitDiscovery) -> dict:
    return {
        "flipped": found.flipped,
        "circuit_size": len(found.minimal_circuit),
        "circuit": ";".join(found.minimal_circuit),
        "baseline_delta": found.baseline_delta,
        "source_delta": found.source_delta,
        "patched_delta": found.patched_delta,
        "gap_recovered": found.gap_recovered,
        "attempts": ";".join(f"{k}:{d:.6g}" for k, d in found.attempts),
        "reason": found.reason,
    }

