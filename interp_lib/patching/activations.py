"""The per-head output matrices W_O that head patching reads (PromptActivations, what
patching reads of a prompt, lives in interp_lib.cache.prompt_activations and is re-exported here)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..cache.prompt_activations import PromptActivations  # noqa: F401  (re-exported)


def own_W_O(model) -> torch.Tensor:
    """[L, H, dh, d] a HookedModel's per-head output matrices (for self-patches)."""
    return torch.stack([model.W_O(layer) for layer in range(model.n_layers)])


def load_W_O(model_dir: str, n_layers: int, n_heads: int, d_head: int, device="cpu", dtype=torch.float32):
    """[L, H, dh, d] per-head output matrices read from a merged model's safetensors
    (only the o_proj tensors are read)."""
    from ..model.hooked import W_O_from_o_proj, o_proj_weight_name
    from ..model.loading import WEIGHTS_FILE, open_weights

    with open_weights(Path(model_dir) / WEIGHTS_FILE, Path(model_dir).name) as f:
        mats = [W_O_from_o_proj(f.get_tensor(o_proj_weight_name(l)), n_heads, d_head) for l in range(n_layers)]
    return torch.stack(mats).to(device=device, dtype=dtype)

