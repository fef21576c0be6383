"""Patchable components (`L{layer}H{head}`, `L{layer}_MLP`) and one patch's result row.

delta_change = patched - baseline delta (positive = towards Defect); gap_fraction =
delta_change / (source - baseline)."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from ..analyses.behaviour import action_of

_COMPONENT = re.compile(r"^L(\d+)(?:H(\d+)|_MLP)$")


@dataclass(frozen=True)
class Component:
    layer: int
    head: int | None  # None for the MLP

    @property
    def kind(self) -> str:
        return "mlp" if self.head is None else "head"

    @property
    def name(self) -> str:
        return f"L{self.layer}_MLP" if self.head is None else f"L{self.layer}H{self.head}"

    @classmethod
    def parse(cls, name: str) -> "Component":
        m = _COMPONENT.match(name)
        if not m:
            raise ValueError(f"not a component name: {name!r} (expected L{{layer}}H{{head}} or L{{layer}}_MLP)")
        return cls(int(m.group(1)), None if m.group(2) is None else int(m.group(2)))


def all_components(n_layers: int, n_heads: int) -> list[Component]:
    """Every head and MLP, layer by layer (heads first within a layer)."""
    return [Component(l, h) for l in range(n_layers) for h in [*range(n_heads), None]]


@dataclass
class PatchResult:
    component: str
    layer: int
    head: int | None
    kind: str
    baseline_delta: float
    source_delta: float
    patched_delta: float
    delta_change: float
    baseline_action: str
    patched_action: str
    action_flipped: bool
    effect_size: float  # |delta_change| / |baseline_delta| (NaN when baseline_delta == 0)
    gap_fraction: float  # delta_change / (source_delta - baseline_delta) (NaN when they are equal)

    @classmethod
    def make(cls, component: Component, baseline: float, source: float, patched: float) -> "PatchResult":
        change = patched - baseline
        return cls(
            component=component.name, layer=component.layer, head=component.head, kind=component.kind,
            baseline_delta=baseline, source_delta=source, patched_delta=patched, delta_change=change,
            baseline_action=action_of(baseline), patched_action=action_of(patched),
            action_flipped=action_of(baseline) != action_of(patched),
            effect_size=_ratio(abs(change), abs(baseline)), gap_fraction=_ratio(change, source - baseline),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _ratio(num: float, den: float) -> float:
    return num / den if abs(den) > 1e-12 else math.nan


RESULT_COLUMNS = ["experiment", "source", "target", "scenario", "variant", "labelling", "positions", "head_site", "precision",
                  *PatchResult.__dataclass_fields__, "atp_delta_change", "noise_floor", "below_noise"]
