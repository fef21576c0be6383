"""The design document's patching API on prompts given as text (`ActivationPatcher`)."""

from __future__ import annotations

import torch

from ..analyses.behaviour import action_of
from .activations import PromptActivations
from .circuits import CircuitDiscovery, discover_circuit
from .components import Component, PatchResult
from .runner import PatchRunner, sweep


class ActivationPatcher:
    """Patching from `source` into `target` (both `HookedModel`s) on prompts given as text."""

    def __init__(self, source, target, action_tokens: dict, positions: str = "all", head_site: str = "result"):
        self.source, self.target, self.action_tokens = source, target, action_tokens
        W_O = torch.stack([source.W_O(l) for l in range(source.n_layers)]).to(target.device, target.dtype)
        self.runner = PatchRunner(target, W_O, action_tokens, positions, head_site)
        self._memo: dict = {}

    def _activations(self, prompt: str):
        """(source, target) activations of the last prompt used (kept for repeated calls)."""
        if prompt not in self._memo:
            ids = self.target.to_tokens(prompt)
            src = PromptActivations.from_run(self.source, ids.to(self.source.device), self.action_tokens)
            src.z, src.mlp_out = src.z.to(self.target.device), src.mlp_out.to(self.target.device)
            self._memo = {prompt: (src, PromptActivations.from_run(self.target, ids, self.action_tokens))}
        return self._memo[prompt]

    def get_baseline_behavior(self, prompt: str) -> tuple[float, str]:
        _, tgt = self._activations(prompt)
        return tgt.delta, action_of(tgt.delta)

    def patch_component(self, prompt: str, component: str) -> tuple[float, str]:
        src, tgt = self._activations(prompt)
        delta = float(self.runner.deltas(src, tgt, [(Component.parse(component),)])[0])
        return delta, action_of(delta)

    def systematic_patch(self, prompt: str, scenario: str = "") -> list[PatchResult]:
        src, tgt = self._activations(prompt)
        return sweep(self.runner, src, tgt)

    def discover_minimal_circuit(self, prompt: str, scenario: str = "", max_components: int = 10,
                                 results: list[PatchResult] | None = None) -> CircuitDiscovery:
        src, tgt = self._activations(prompt)
        results = results if results is not None else sweep(self.runner, src, tgt)
        return discover_circuit(self.runner, src, tgt, results, max_components)

