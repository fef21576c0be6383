"""Attribution patching (AtP): first-order estimates of every component's delta_change."""

from __future__ import annotations

import numpy as np
import torch

from .activations import PromptActivations
from .runner import PatchRunner


def attribution_patch(runner: PatchRunner, source: PromptActivations, target: PromptActivations,
                      exact_post_norm: bool = True) -> np.ndarray:
    """AtP estimates of every component's delta_change (all_components order), from one
    forward and one backward pass of the target: (patched - clean activation)
    . d delta / d activation, summed over the patched positions (Nanda; Kramar et al. 2024).

    `exact_post_norm` (the default): a head's output reaches the residual only through
    the norm of the sum of all heads (Gemma-2's post-attention RMSNorm), which one head can
    move far from where its gradient was taken. As in AtP*'s QK fix, that nearest
    nonlinearity is evaluated exactly, per head and position ([H, T, d] work), and the
    linear step is taken after it, at hook_attn_out. Without post-norms this equals
    plain AtP; `exact_post_norm=False` is plain AtP at the head's own activation.
    """
    model = runner.target
    L = model.n_layers
    site = "attn.hook_result" if runner.head_site == "result" else "attn.hook_z"
    head_sites = ("attn.hook_result", "hook_attn_out") if exact_post_norm else (site,)
    saved: dict[str, torch.Tensor] = {}

    def keep(act, name):
        saved[name] = act
        return act

    hooks = {f"blocks.{l}.{s}": [keep] for l in range(L) for s in (*head_sites, "hook_mlp_out")}
    ids = target.input_ids.to(model.device)[None]
    with torch.enable_grad():
        resid = model.embed(ids)
        logits = model.forward_from(resid, 0, hooks, rows=runner.rows, last_only=True)
        delta = logits[0, 1] - logits[0, 0]
        names = list(saved)
        grads = dict(zip(names, torch.autograd.grad(delta, [saved[n] for n in names])))
    pos = runner._position_mask(ids.shape[1], model.device)
    out = []
    with torch.no_grad():
        for layer in range(L):
            if exact_post_norm:
                heads = _heads_through_post_norm(runner, source, layer, saved, grads, pos)
            else:
                act = saved[f"blocks.{layer}.{site}"][0]  # [T, H, dh or d]
                grad = grads[f"blocks.{layer}.{site}"][0]
                if runner.head_site == "result":
                    src = torch.einsum("thk,hkd->thd", source.z[layer], runner.source_W_O[layer])
                else:
                    src = source.z[layer]
                heads = ((src - act) * grad)[pos].sum(dim=(0, 2))  # [H]
            mlp = ((source.mlp_out[layer] - saved[f"blocks.{layer}.hook_mlp_out"][0])
                   * grads[f"blocks.{layer}.hook_mlp_out"][0])[pos].sum()
            out += [*heads.float().cpu().tolist(), float(mlp)]
    return np.asarray(out)


def _heads_through_post_norm(runner: PatchRunner, source: PromptActivations, layer: int, saved: dict,
                             grads: dict, pos: torch.Tensor) -> torch.Tensor:
    """[H] AtP estimates of a layer's heads, linearised at hook_attn_out: each head's
    patched attention output (o_proj sum and post-attention norm recomputed exactly, at
    every position) minus the clean one, dotted with the gradient there."""
    model = runner.target
    p = f"blocks.{layer}."
    result = saved[p + "attn.hook_result"][0]  # [T, H, d] clean per-head outputs
    W_O = runner.source_W_O[layer] if runner.head_site == "result" else model.W_O(layer)
    patched = torch.einsum("thk,hkd->thd", source.z[layer], W_O)  # what each head's patch writes
    head_sums = result.sum(1)[None] + (patched - result).permute(1, 0, 2)  # [H, T, d]: one head patched each
    attn_out = model.attn_out(layer, model.o_proj_from_heads(layer, head_sums))
    change = attn_out - saved[p + "hook_attn_out"][0][None]  # [H, T, d]
    return (change * grads[p + "hook_attn_out"][0][None])[:, pos].sum(dim=(1, 2))

