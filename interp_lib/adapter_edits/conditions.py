"""What an adapter edit is: which modules of which layers get which adapter's update, on top
of a background model (the fine-tune, or the base). No torch: the tables and the workflow
read the names and groups from here.

An adapter is named by its model (a configured fine-tune); None stands for no update (the
base's weight). `adapted` arguments are the (layer, module) keys an adapter updates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..model.adapter_deltas import ATTN_MODULES, MLP_MODULES, MODULES

# Module groups of a block (the brief's attention q/k/v/o, MLP gate/up/down, the whole block);
# single modules are groups of their own, for larger grids.
MODULE_GROUPS = {"block": MODULES, "attn": ATTN_MODULES, "mlp": MLP_MODULES, **{m: (m,) for m in MODULES}}
GROUP_NAMES = tuple(MODULE_GROUPS)
KINDS = ("ablation", "sufficiency", "transplant", "minimal_set")
# Whose weights every module that an edit does not name keeps, and whose cache a run starts from.
BACKGROUNDS = ("finetune", "base")
SET_GROUP = "set"  # the group of a minimal-set row (several layers' whole blocks)


class EditError(ValueError):
    """An edit that cannot be made; the message is one line naming module and adapter."""


def group_modules(group: str) -> tuple[str, ...]:
    """The modules of a group name (EditError naming the known ones otherwise)."""
    try:
        return MODULE_GROUPS[group]
    except KeyError:
        raise EditError(f"unknown module group {group!r} (known: {', '.join(GROUP_NAMES)})") from None


@dataclass(frozen=True)
class Condition:
    """One edited model: `background`'s weights everywhere but `edits`, (layer, module,
    adapter) triples giving that module the adapter's update (adapter None: the base's
    weight). `group`, `layers` and `source` describe it for the tables."""

    kind: str
    background: str
    edits: tuple[tuple[int, str, str | None], ...]
    group: str = "block"
    layers: tuple[int, ...] = ()
    source: str | None = None

    def __post_init__(self):
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {self.background!r}")

    def start(self, n_layers: int) -> int:
        """The lowest edited layer (n_layers for an unedited condition): the run starts from
        the background's cached resid_pre there."""
        return min((layer for layer, _, _ in self.edits), default=n_layers)

    def last(self) -> int:
        """The highest edited layer (-1 for an unedited condition)."""
        return max((layer for layer, _, _ in self.edits), default=-1)

    def assignment(self, layer: int, modules: Iterable[str], default: str | None) -> tuple:
        """(adapter per module of `modules`) at `layer`: the edit's, else `default` (the
        background's adapter)."""
        edited = {m: a for lay, m, a in self.edits if lay == layer}
        return tuple(edited.get(m, default) for m in modules)


def unedited(background: str) -> Condition:
    return Condition("unedited", background, (), group="", layers=())


def _keys(adapted: Iterable) -> set:
    return {(int(layer), module) for layer, module in adapted}


def ablation(adapted: Iterable, layer: int, group: str = "block") -> Condition | None:
    """The fine-tune without its update at (layer, group); None where it adapts none of
    the group's modules there (nothing to remove)."""
    keys = _keys(adapted)
    mods = [m for m in group_modules(group) if (layer, m) in keys]
    if not mods:
        return None
    return Condition("ablation", "finetune", tuple((layer, m, None) for m in mods), group, (layer,))


def sufficiency(finetune: str, adapted: Iterable, layers: Iterable[int], group: str = "block",
                kind: str = "sufficiency") -> Condition | None:
    """The base with the fine-tune's update at `layers` x group only (kind "minimal_set"
    for a set of several layers); None where the fine-tune adapts none of those modules."""
    keys, layers = _keys(adapted), tuple(sorted({int(x) for x in layers}))
    edits = tuple((layer, m, finetune) for layer in layers for m in group_modules(group) if (layer, m) in keys)
    if not edits:
        return None
    return Condition(kind, "base", edits, group if kind != "minimal_set" else SET_GROUP, layers, finetune)


def transplant(target: str, target_adapted: Iterable, source: str, source_adapted: Iterable, layer: int,
               group: str = "block", source_path: str = "") -> Condition | None:
    """The target fine-tune with its update at (layer, group) replaced by the source
    adapter's (the update moves, not the factors: the ranks may differ). A module that the
    target adapts and the source does not is refused: that would be an ablation, not a
    transplant. None where neither adapts the group there."""
    tgt, src = _keys(target_adapted), _keys(source_adapted)
    mods = [m for m in group_modules(group) if (layer, m) in tgt or (layer, m) in src]
    for m in mods:
        if (layer, m) not in src:
            where = f" ({source_path})" if source_path else ""
            raise EditError(f"transplant {source} -> {target}: adapter {source}{where} does not adapt layer {layer} "
                            f"{m}, which {target} adapts; choose a module group both adapt")
    if not mods:
        return None
    return Condition("transplant", "finetune", tuple((layer, m, source) for m in mods), group, (layer,), source)


def layers_text(layers: Iterable[int]) -> str:
    """"0;2;5": a set of layers in a table cell."""
    return ";".join(str(int(x)) for x in sorted(layers))


def parse_layers(text) -> list[int]:
    """The layers of a layers_text cell ([] for an empty or missing one; a CSV reader may
    have made a single layer a number)."""
    if isinstance(text, str):
        return [int(x) for x in text.split(";") if x.strip()]
    if isinstance(text, (int, float)) and text == text:
        return [int(text)]
    return []
