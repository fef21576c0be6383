"""What patching reads of one model on one prompt, and the per-head output matrices."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch


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


def own_W_O(model) -> torch.Tensor:
    """[L, H, dh, d] a HookedModel's per-head output matrices (for self-patches)."""
    return torch.stack([model.W_O(layer) for layer in range(model.n_layers)])


def load_W_O(model_dir: str, n_layers: int, n_heads: int, d_head: int, device="cpu", dtype=torch.float32):
    """[L, H, dh, d] per-head output matrices read from a merged model's safetensors
    (only the o_proj tensors are read)."""
    from ..hooked import W_O_from_o_proj, o_proj_weight_name
    from ..models import WEIGHTS_FILE, open_weights

    with open_weights(Path(model_dir) / WEIGHTS_FILE, Path(model_dir).name) as f:
        mats = [W_O_from_o_proj(f.get_tensor(o_proj_weight_name(l)), n_heads, d_head) for l in range(n_layers)]
    return torch.stack(mats).to(device=device, dtype=dtype)

