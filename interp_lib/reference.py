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


@torch.no_grad()
def naive_set_patched_delta(target, ids: torch.Tensor, source, source_W_O: torch.Tensor, comps,
                            positions: str, tokens: dict) -> float:
    """delta of the target with every component of `comps` written from `source` at once
    (head outputs at hook_result, MLPs at hook_mlp_out): one full forward pass."""
    pos = slice(None) if positions == "all" else slice(-1, None)
    writes: dict[str, list] = {}
    for comp in comps:
        l, h = comp.layer, comp.head
        if h is None:
            writes.setdefault(f"blocks.{l}.hook_mlp_out", []).append((None, source.mlp_out[l]))
        else:
            writes.setdefault(f"blocks.{l}.attn.hook_result", []).append((h, source.z[l, :, h] @ source_W_O[l, h]))

    def hook_for(items):
        def hook(act, _):
            act = act.clone()
            for h, value in items:
                if h is None:
                    act[0, pos] = value[pos]
                else:
                    act[0, pos, h] = value[pos]
            return act
        return hook

    logits = target.run_with_hooks(ids, [(name, hook_for(items)) for name, items in writes.items()], last_only=True)
    return float(logits[0, tokens["D"]] - logits[0, tokens["C"]])


@torch.no_grad()
def naive_range_patched_delta(target, ids: torch.Tensor, source_cache: dict, site: str, first: int, last: int,
                              positions: str, tokens: dict) -> float:
    """delta of the target with `site` ("attn_out", "mlp_out" or "both") of layers
    first..last replaced at `positions` by the source's: one full forward pass with a hook on
    blocks.{l}.hook_attn_out and/or hook_mlp_out per layer, writing the source's own values
    of those hook points (`source_cache`, from the source's `run_with_cache`, [1, T, d])."""
    pos = slice(None) if positions == "all" else slice(-1, None)
    names = [n for n, on in (("hook_attn_out", site in ("attn_out", "both")),
                             ("hook_mlp_out", site in ("mlp_out", "both"))) if on]

    def hook(act, name):
        act = act.clone()
        act[0, pos] = source_cache[name][0, pos].to(act.dtype)
        return act

    hooks = [(f"blocks.{layer}.{n}", hook) for layer in range(first, last + 1) for n in names]
    logits = target.run_with_hooks(ids, hooks, last_only=True)
    return float(logits[0, tokens["D"]] - logits[0, tokens["C"]])
