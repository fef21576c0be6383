"""Steered forward passes of one model on one cached prompt, batched over layers x alphas.

Steering at layer l adds alpha * v_l to the site's activation (blocks.{l}.hook_resid_pre or
blocks.{l}.hook_mlp_out) at every position ("all") or at the decision position only
("decision"), then recomputes everything downstream. Blocks below l are unchanged, so a
pass starts from the prompt's cached resid_pre at the lowest layer it steers; rows that
steer a higher layer ride along unchanged until their layer. With "decision", earlier
positions are the cached run's, so only the last position is computed (against the cached
keys and values).

delta = logit(D) - logit(C) (post-softcap, float32 readout); positive = towards Defect.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..model.gpu_rows import device_rows
from ..cache.prompt_activations import POSITION_MODES, PromptActivations, check_positions
from .directions import SITES

POSITIONS = POSITION_MODES


def default_max_rows(model, target: PromptActivations, n_per_layer: int, positions: str) -> int:
    """Rows per pass. On a CPU one layer's rows (a pass from each row's own layer costs the
    fewest FLOPs). On a GPU what patching's budget gives a row that patches no head outputs
    (interp_lib.model.gpu_rows), at least one layer's rows, so that layers x alphas share one pass
    per prompt where memory allows."""
    device = target.resid_pre.device
    if device.type != "cuda":
        return n_per_layer
    return max(n_per_layer, device_rows(model, target.resid_pre.shape[1], positions, head_site="z", device=device))


@torch.no_grad()
def steered_deltas(model, target: PromptActivations, rows: Sequence[int], vectors: torch.Tensor,
                   layers: Sequence[int], alphas: Sequence[float], site: str = "resid_pre",
                   positions: str = "all", max_rows: int | None = None) -> np.ndarray:
    """[K, len(layers), len(alphas)] steered deltas of `target` (a prompt's cached run) for
    vectors [K, L, d] (e.g. a direction and random controls); `rows` = [C token, D token].

    Rows (k, layer, alpha) go in layer order, at most `max_rows` per forward pass."""
    if site not in SITES:
        raise ValueError(f"steering site must be one of {', '.join(SITES)}, got {site!r}")
    check_positions(positions, "steering positions")
    K = vectors.shape[0]
    plan = [(k, i, j) for i in range(len(layers)) for k in range(K) for j in range(len(alphas))]
    max_rows = max_rows or default_max_rows(model, target, K * len(alphas), positions)
    out = np.full((K, len(layers), len(alphas)), np.nan)
    vectors = vectors.to(device=target.resid_pre.device, dtype=target.resid_pre.dtype)
    for lo in range(0, len(plan), max_rows):
        chunk = plan[lo:lo + max_rows]
        got = _steered_pass(model, target, rows, vectors, [layers[i] for _, i, _ in chunk],
                            [(k, float(alphas[j])) for k, _, j in chunk], site, positions)
        for (k, i, j), value in zip(chunk, got):
            out[k, i, j] = value
    return out


def _steered_pass(model, target, rows, vectors, row_layers, row_steps, site, positions) -> np.ndarray:
    """One batched pass: row b adds alpha_b * vectors[k_b, layer_b] at layer_b."""
    start = min(row_layers)
    B, d = len(row_layers), vectors.shape[-1]
    adds: dict[int, torch.Tensor] = {}
    for b, (layer, (k, alpha)) in enumerate(zip(row_layers, row_steps)):
        if layer not in adds:
            adds[layer] = vectors.new_zeros(B, d)
        adds[layer][b] = alpha * vectors[k, layer]

    def add_hook(add):
        # at every position of the pass: all of them, or ("decision") the last one only
        return lambda value, name: value + add[:, None, :]

    hooks = {f"blocks.{layer}.{SITES[site]}": [add_hook(add)] for layer, add in adds.items()}
    if positions == "decision":
        resid = target.resid_pre[start][None, -1:].expand(B, -1, -1)
        logits = model.forward_from(resid, start, hooks, rows=list(rows), last_only=True,
                                    kv_prefixes=target.kv_prefixes(model, start))
    else:
        resid = target.resid_pre[start][None].expand(B, -1, -1)
        # the last block's keys and values are computed before its hooks fire: prune it only
        # when no row steers it
        prune = model.n_layers - 1 not in adds
        logits = model.forward_from(resid, start, hooks, rows=list(rows), last_only=True, prune_last_block=prune)
    return (logits[:, 1] - logits[:, 0]).float().cpu().numpy()
