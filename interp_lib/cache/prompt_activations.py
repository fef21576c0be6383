"""What the analyses that re-run a model read of one model on one prompt (its cached
run: residual stream, per-head z, MLP outputs and the decision delta), and which positions
such a re-run changes. Patching, counterfactual patching and steering all start from it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Which positions a patch or a steering vector changes: every position, or the decision's only.
POSITION_MODES = ("all", "decision")


def check_positions(positions: str, what: str = "positions") -> None:
    """ValueError naming `what` unless `positions` is one of POSITION_MODES."""
    if positions not in POSITION_MODES:
        raise ValueError(f"{what} must be one of {', '.join(POSITION_MODES)}, got {positions!r}")


@dataclass
class PromptActivations:
    """What patching needs of one model on one prompt (float tensors on the model's device).

    resid_pre [L, T, d] and mlp_out [L, T, d] in the model's resid_dtype; z [L, T, H, dh] in
    its weights' dtype; delta (post-softcap).
    """

    input_ids: torch.Tensor  # [T]
    resid_pre: torch.Tensor
    z: torch.Tensor
    mlp_out: torch.Tensor
    delta: float
    _kv: dict = field(default_factory=dict, repr=False)

    def kv_prefixes(self, model, start: int) -> dict:
        """layer -> the clean keys and values of positions 0..T-2 ([1, Hkv, T-1, dh]),
        for layers >= start (computed once from resid_pre)."""
        with torch.no_grad():
            for layer in range(start, model.n_layers):
                if layer not in self._kv:
                    k, v = model.clean_keys_values(layer, self.resid_pre[layer][None, :-1])
                    self._kv[layer] = (k, v)
        return self._kv

    @classmethod
    def from_run(cls, model, input_ids: torch.Tensor, action_tokens: dict) -> "PromptActivations":
        logits, cache = model.run_with_cache(input_ids, last_only=True)
        L = model.n_layers
        stack = lambda hook: torch.stack([cache[f"blocks.{l}.{hook}"][0] for l in range(L)])  # noqa: E731
        delta = float(logits[0, action_tokens["D"]] - logits[0, action_tokens["C"]])
        return cls(input_ids.reshape(-1), stack("hook_resid_pre"), stack("attn.hook_z"), stack("hook_mlp_out"), delta)

    @classmethod
    def from_cache(cls, variant_view, device, dtype, resid_dtype=None) -> "PromptActivations":
        """From a cache variant: z in `dtype` (the weights'), the residual-stream arrays in
        `resid_dtype` (default `dtype`)."""
        get = lambda key, dt: torch.as_tensor(variant_view[key], device=device).to(dt)  # noqa: E731
        resid_dtype = resid_dtype or dtype
        return cls(torch.as_tensor(variant_view["input_ids"], device=device), get("resid_pre", resid_dtype),
                   get("z", dtype), get("mlp_out", resid_dtype), float(variant_view.attrs["delta"]))
