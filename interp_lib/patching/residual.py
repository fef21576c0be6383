"""Residual-stream patching per layer x position, exact and by attribution (AtP).

A patch at (layer l, position p) replaces the target's resid_pre[l, p] (the stream entering
block l) by the source's, and recomputes blocks l..L-1 at every position. delta_change =
patched - baseline delta (positive = towards Defect). Patching every position at layer 0
replaces the whole input, so it gives the source prompt's delta.

AtP: (source - target resid_pre[l, p]) . d delta / d resid_pre[l, p], from one forward and
one backward pass of the target; [L, T] estimates of the exact grid.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from .activations import PromptActivations


@torch.no_grad()
def residual_deltas(model, source: PromptActivations, target: PromptActivations, rows: Sequence[int], layer: int,
                    position_sets: Sequence[Sequence[int]], start: int = 0) -> np.ndarray:
    """[len(position_sets)] patched deltas, each set of positions patched jointly at `layer`;
    `rows` = [C token, D token]. One batched pass from `layer`. Positions before `start` (which
    no set may patch) are the target's own at every later layer too, so they are not rerun:
    their keys and values are a slice of the target's clean ones (`kv_prefixes`, computed
    once per prompt and layer)."""
    T = target.resid_pre.shape[1]
    device = target.resid_pre.device
    if any(p < start for positions in position_sets for p in positions):
        raise ValueError(f"a position set patches a position before start={start}")
    mask = torch.zeros(len(position_sets), T, 1, dtype=torch.bool, device=device)
    for b, positions in enumerate(position_sets):
        mask[b, list(positions)] = True
    resid = torch.where(mask, source.resid_pre[layer][None], target.resid_pre[layer][None])
    kv = None
    if start > 0:  # start <= T - 1: the clean prefixes hold positions 0..T-2
        resid = resid[:, start:]
        kv = {later: (k[:, :, :start], v[:, :, :start])
              for later, (k, v) in target.kv_prefixes(model, layer).items() if later >= layer}
    logits = model.forward_from(resid, layer, {}, rows=list(rows), last_only=True, kv_prefixes=kv,
                                prune_last_block=True)
    return (logits[:, 1] - logits[:, 0]).float().cpu().numpy()


def residual_grid(model, source: PromptActivations, target: PromptActivations, rows: Sequence[int],
                  layers: Sequence[int] | None = None, batch_size: int = 64,
                  controls: list | None = None, desc: str = "residual patching") -> np.ndarray:
    """[L, T] exact patched deltas of every single (layer, position) patch (NaN for layers not
    in `layers`). With a `controls` list, every batch also carries one unpatched row and its
    |delta - target.delta| is appended (the path's own rounding noise).

    A cell whose source stream equals the target's (bit for bit: e.g. every position before the
    first differing token of two aligned prompts) is the identity patch: it is target.delta,
    not run. The others run in batches of consecutive positions from the batch's first, with
    the earlier positions' clean keys and values (residual_deltas' `start`): for two prompts
    that first differ at position p0 of T, a layer costs about ((T - p0) / T)^2 of all cells."""
    L, T = model.n_layers, target.resid_pre.shape[1]
    layers = range(L) if layers is None else layers
    out = np.full((L, T), np.nan)
    size = max(1, batch_size - (controls is not None))
    for layer in tqdm(list(layers), desc=desc, leave=False):
        same = (source.resid_pre[layer] == target.resid_pre[layer]).all(-1).cpu().numpy()
        out[layer, same] = target.delta
        todo = np.flatnonzero(~same)
        for lo in range(0, len(todo), size):
            chunk = [int(p) for p in todo[lo:lo + size]]
            sets = [[p] for p in chunk] + ([[]] if controls is not None else [])
            got = residual_deltas(model, source, target, rows, layer, sets, start=chunk[0])
            if controls is not None:
                controls.append(abs(float(got[-1]) - target.delta))
                got = got[:-1]
            out[layer, chunk] = got
    return out


def residual_attribution(model, source: PromptActivations, target: PromptActivations,
                         rows: Sequence[int]) -> np.ndarray:
    """[L, T] AtP estimates of the residual grid's delta_change (float64)."""
    L = model.n_layers
    saved: dict[str, torch.Tensor] = {}

    def keep(act, name):
        saved[name] = act
        return act

    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(L)]
    hooks = {name: [keep] for name in names}
    with torch.enable_grad():
        resid = target.resid_pre[0][None].detach().clone().requires_grad_(True)
        logits = model.forward_from(resid, 0, hooks, rows=list(rows), last_only=True)
        delta = logits[0, 1] - logits[0, 0]
        grads = torch.autograd.grad(delta, [saved[n] for n in names])
    with torch.no_grad():
        diff = (source.resid_pre - target.resid_pre).double()  # [L, T, d]
        grad = torch.stack([g[0] for g in grads]).double()
        return (diff * grad).sum(-1).cpu().numpy()
