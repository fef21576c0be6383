"""Naive reference implementations, for tests and benchmarks only (the workflow never
calls these): one full forward pass of the target per patch, with one hook."""

from __future__ import annotations

import torch


@torch.no_grad()
def naive_patched_delta(target, ids: torch.Tensor, source, source_W_O: torch.Tensor, comp,
                        positions: str, head_site: str, tokens: dict) -> float:
    """delta = logit(D) - logit(C) of the target with one component written from `source`
    (a `patching.PromptActivations`); `comp` a `patching.Component`."""
    pos = slice(None) if positions == "all" else slice(-1, None)
    l, h = comp.layer, comp.head
    if h is None:
        name, value = f"blocks.{l}.hook_mlp_out", source.mlp_out[l]
    elif head_site == "z":
        name, value = f"blocks.{l}.attn.hook_z", source.z[l, :, h]
    else:
        name, value = f"blocks.{l}.attn.hook_result", source.z[l, :, h] @ source_W_O[l, h]

    def hook(act, _):
        act = act.clone()
        if h is None:
            act[0, pos] = value[pos]
        else:
            act[0, pos, h] = value[pos]
        return act

    logits = target.run_with_hooks(ids, [(name, hook)], last_only=True)
    return float(logits[0, tokens["D"]] - logits[0, tokens["C"]])
