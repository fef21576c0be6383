"""Adapters' exact updates on a hooked base model, and swapping a layer's weights.

`EditableWeights` holds the base model's linear weights (the original tensor objects) and,
on demand, each adapter's W + U per (layer, module), U = scaling * B @ A from the factors:
summed in float64 and rounded once to the weights' dtype. A module's weight is changed by
assigning another Parameter to it and restored by assigning the original object back, so
that restoring is exact (no in-place add and subtract, whose rounding would drift).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..model.adapter_deltas import (MODULES, LoraUpdate, adaptable_modules, adapter_config, check_fit, lora_updates,
                                    match_updates, unsupported)
from .conditions import EditError

log = logging.getLogger(__name__)


@dataclass
class AdapterUpdates:
    """One adapter's updates on a model: {(layer, module): LoraUpdate}."""

    name: str  # the configured model whose adapter this is
    path: str
    updates: dict

    @property
    def adapted(self) -> set:
        """The (layer, module) keys it updates."""
        return set(self.updates)

    def layers(self) -> list[int]:
        return sorted({layer for layer, _ in self.updates})

    def rank(self) -> int:
        return max((u.a.shape[0] for u in self.updates.values()), default=0)


def load_adapter(name: str, path: str | Path, hooked, allow_pickle: bool = False) -> AdapterUpdates:
    """The LoRA adapter at `path` (model `name`'s) matched to the hooked model's modules;
    EditError for an adapter whose update is not scaling * B @ A (e.g. DoRA) or that does
    not fit the model."""
    config = adapter_config(path, name)
    reason = unsupported(config)
    if reason is not None:
        raise EditError(f"model {name}: adapter {path} has {reason}: its update is not scaling * B @ A, so it "
                        "cannot be edited layer by layer")
    modules = adaptable_modules(hooked)
    names = {key: tensor for key, (tensor, _) in modules.items()}
    matched = match_updates(lora_updates(path, config, name, allow_pickle), names, path, name)
    for key, update in matched.items():
        check_fit(update, modules[key][1].weight.shape, names[key], path, name)
    if not matched:
        log.warning("model %s: adapter %s updates none of %s", name, path, ", ".join(MODULES))
    return AdapterUpdates(name, str(path), matched)


def exact_update(update: LoraUpdate, device, dtype=torch.float64) -> torch.Tensor:
    """scaling * B @ A [out, in] in `dtype` on `device`."""
    b = update.b.to(device=device, dtype=dtype)
    a = update.a.to(device=device, dtype=dtype)
    return (b @ a) * update.scaling


class EditableWeights:
    """The base model's adaptable weights and each adapter's W + U, swapped in per layer.

    Use as a context manager (or call restore()): on exit every module holds its original
    weight object again."""

    def __init__(self, hooked, adapters: dict[str, AdapterUpdates]):
        self.hooked = hooked
        self.adapters = adapters
        self.modules = {key: linear for key, (_, linear) in adaptable_modules(hooked).items()}
        self.originals = {key: mod.weight for key, mod in self.modules.items()}
        self.current = {key: None for key in self.modules}
        self._made: dict = {}
        self._sum_dtype = torch.float32 if hooked.device.type == "mps" else torch.float64

    def modules_of(self, layer: int) -> tuple[str, ...]:
        return tuple(m for m in MODULES if (layer, m) in self.modules)

    def weight(self, layer: int, module: str, adapter: str | None) -> nn.Parameter:
        """The weight of (layer, module) with `adapter`'s update (None, or an adapter that
        does not update it: the original object)."""
        key = (layer, module)
        update = None if adapter is None else self.adapters[adapter].updates.get(key)
        if update is None:
            return self.originals[key]
        made = self._made.get((key, adapter))
        if made is None:
            w = self.originals[key]
            summed = w.detach().to(self._sum_dtype) + exact_update(update, w.device, self._sum_dtype)
            made = nn.Parameter(summed.to(w.dtype), requires_grad=False)
            self._made[(key, adapter)] = made
        return made

    def materialize(self) -> None:
        """Builds every adapter's W + U now (on a GPU, so that the batch size that a pass's
        memory allows is chosen with them in place)."""
        for name, adapter in self.adapters.items():
            for layer, module in adapter.updates:
                self.weight(layer, module, name)

    def set_layer(self, layer: int, assignment: tuple, modules: tuple[str, ...] | None = None) -> None:
        """Gives each module of `layer` (`modules`, default all of the layer's) the update of
        its adapter in `assignment` (None: the base weight)."""
        for module, adapter in zip(modules or self.modules_of(layer), assignment):
            key = (layer, module)
            if self.current[key] != adapter:
                self.modules[key].weight = self.weight(layer, module, adapter)
                self.current[key] = adapter

    def set_layers(self, layers, adapter: str | None) -> None:
        """Every module of `layers` with `adapter`'s update (None: the base)."""
        for layer in layers:
            mods = self.modules_of(layer)
            self.set_layer(layer, (adapter,) * len(mods), mods)

    def restore(self) -> None:
        """Every module's original weight object back."""
        for key, mod in self.modules.items():
            if mod.weight is not self.originals[key]:
                mod.weight = self.originals[key]
            self.current[key] = None

    def __enter__(self) -> "EditableWeights":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()
