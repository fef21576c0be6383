"""Exact patched deltas, many patch sets per batched forward pass, and the noise floor."""

from __future__ import annotations

import copy
import math
from typing import Iterable, Sequence

import numpy as np
import torch

from ..model.gpu_rows import (CPU_BATCH_SIZE, MAX_GPU_BATCH_SIZE, device_rows, gpu_batch_size,  # noqa: F401
                               patch_row_bytes)
from ..cache.prompt_activations import POSITION_MODES, PromptActivations, check_positions  # noqa: F401
from .components import Component, PatchResult, all_components

HEAD_SITES = ("result", "z")
class PatchRunner:
    """Exact patched deltas of a target model, many patch sets per batched forward pass.

    `batch_size`: patch sets per pass; None = CPU_BATCH_SIZE on a CPU and, on a GPU, what
    its free memory holds when a sweep starts (gpu_batch_size). Batching changes which sets
    share a pass, never what a set computes."""

    def __init__(self, target, source_W_O: torch.Tensor | None, action_tokens: dict,
                 positions: str = "all", head_site: str = "result", batch_size: int | None = None,
                 reuse_keys_values: bool = True, pass_overhead_flops: float | None = None):
        check_positions(positions)
        if head_site not in HEAD_SITES:
            raise ValueError(f"head_site must be one of {HEAD_SITES}, got {head_site!r}")
        if head_site == "result" and source_W_O is None:
            raise ValueError("head_site='result' needs the source's W_O [L, H, dh, d]")
        self.target, self.positions, self.head_site = target, positions, head_site
        self.source_W_O = source_W_O
        self.rows = [action_tokens["C"], action_tokens["D"]]
        self.batch_size = batch_size
        self._gpu_rows: dict[int, int] = {}  # T -> automatic batch size (shared by copies)
        self.pass_overhead_flops = pass_overhead_flops
        # Recompute only what the decision logit reads. With positions="decision", earlier
        # positions never change: only the last one is recomputed, attending to the target's
        # clean keys and values. With "all", the last block needs only its keys and values
        # at earlier positions (and patches of the last block alone change nothing earlier).
        self.last_only = positions == "decision" and reuse_keys_values
        self.prune_last_block = reuse_keys_values

    def _position_mask(self, T: int, device) -> torch.Tensor:
        mask = torch.zeros(T, dtype=torch.bool, device=device)
        if self.positions == "all":
            mask[:] = True
        else:
            mask[-1] = True
        return mask

    def deltas(self, source: PromptActivations, target: PromptActivations,
               patch_sets: Sequence[Iterable[Component]], controls: list | None = None) -> np.ndarray:
        """[len(patch_sets)] patched deltas; each set is patched jointly in one run.

        With a `controls` list, every batch also carries one unpatched row (the empty patch
        set, recomputed from the batch's start layer in the batch's shape) and its
        |delta - target.delta| is appended to `controls`: the batch's own rounding noise."""
        sets = [tuple(s) for s in patch_sets]
        out = np.empty(len(sets))
        L = self.target.n_layers
        starts = [min((c.layer for c in s), default=L) for s in sets]
        T = target.resid_pre.shape[1]
        batch_size = self.rows_per_pass(T)
        size = batch_size - 1 if controls is not None and batch_size > 1 else batch_size
        for group in self._plan(starts, T, batch_size):
            for chunk_start in range(0, len(group), size):
                chunk = group[chunk_start:chunk_start + size]
                batch = [sets[i] for i in chunk]
                if controls is None:
                    out[chunk] = self._run(batch, source, target)
                    continue
                got = self._run([*batch, ()], source, target)
                out[chunk] = got[:-1]
                if any(batch):  # a batch of empty sets runs nothing: no control
                    controls.append(abs(float(got[-1]) - target.delta))
        return out

    def rows_per_pass(self, T: int) -> int:
        """Patch sets per forward pass for prompts of T positions (see the class doc)."""
        if self.batch_size is not None:
            return self.batch_size
        device = self.target.device
        if device.type != "cuda":
            return CPU_BATCH_SIZE
        if T not in self._gpu_rows:  # once per length: a sweep and its noise floor batch alike
            # reproducible: see interp_lib.model.gpu_rows
            self._gpu_rows[T] = device_rows(self.target, T, self.positions, self.head_site)
        return self._gpu_rows[T]

    def _plan(self, starts: list[int], T: int, batch_size: int) -> list[list[int]]:
        """Groups of patch-set indices, each run as one batch from its lowest start layer.

        A batch started at layer s recomputes layers s..L-1 for every member, so sets that
        start higher waste work in a lower batch; but every batch's pass costs a fixed
        overhead. Contiguous groups of start layers minimise
        passes * overhead + members * their layers' work (dynamic programming): big models
        get one group per start layer (the FLOP-bound optimum), tiny ones may merge groups.
        """
        L = self.target.n_layers
        layers = sorted(set(starts))
        members = {s: [i for i, st in enumerate(starts) if st == s] for s in layers}
        work, overhead = self._cost_model(T)
        work_from = [sum(work[s:]) for s in range(L)]  # one sequence from layer s to the end
        best = [0.0] + [math.inf] * len(layers)  # best[j]: cost of the first j start layers
        cut = [0] * (len(layers) + 1)
        for j in range(1, len(layers) + 1):
            for i in range(j):
                n = sum(len(members[s]) for s in layers[i:j])
                passes = math.ceil(n / batch_size) * (L - layers[i])
                cost = best[i] + passes * overhead + n * work_from[layers[i]]
                if cost < best[j]:
                    best[j], cut[j] = cost, i
        groups, j = [], len(layers)
        while j > 0:
            groups.append([m for s in layers[cut[j]:j] for m in members[s]])
            j = cut[j]
        return groups[::-1]

    def _cost_model(self, T: int) -> tuple[list[float], float]:
        """(FLOPs of one sequence through each layer as a patched run computes it, the fixed
        cost of one layer pass in FLOP-equivalents). The overhead is a per-device estimate
        (kernel launches on a GPU, Python and small-op costs on a CPU), overridable with
        `pass_overhead_flops`."""
        cfg = self.target.cfg
        kv_params = 2 * cfg.d_model * cfg.n_kv_heads * cfg.d_head
        params = 2 * cfg.d_model * cfg.n_heads * cfg.d_head + kv_params
        params += sum(p.numel() for p in self.target._layers[0].mlp.parameters())
        Tq = 1 if self.last_only else T
        work = []
        for layer, window in enumerate(cfg.sliding_windows):
            if self.prune_last_block and layer == cfg.n_layers - 1 and not self.last_only:
                work.append(2.0 * T * kv_params)  # keys and values; the rest is one position
                continue
            keys = min(T, window) if window else T
            work.append(2.0 * Tq * params + 4.0 * Tq * keys * cfg.n_heads * cfg.d_head)
        if self.pass_overhead_flops is not None:
            return work, self.pass_overhead_flops
        on_gpu = self.target.device.type == "cuda"
        return work, 2e10 if on_gpu else 5e6

    def recompute(self, target: PromptActivations) -> float:
        """The target's delta recomputed from its cached resid_pre of layer 0 with no patch
        (equals target.delta up to float error)."""
        return float(self._run([()], target, target, start=0)[0])

    @torch.no_grad()
    def _run(self, sets: list[tuple[Component, ...]], source: PromptActivations,
             target: PromptActivations, start: int | None = None) -> np.ndarray:
        model = self.target
        L, H, B = model.n_layers, model.n_heads, len(sets)
        device = target.resid_pre.device
        if start is None:
            start = min((c.layer for s in sets for c in s), default=L)
        if start == L:
            return np.full(B, target.delta)
        head_mask = torch.zeros(B, L, H, dtype=torch.bool, device=device)
        mlp_mask = torch.zeros(B, L, dtype=torch.bool, device=device)
        for b, s in enumerate(sets):
            for c in s:
                if c.head is None:
                    mlp_mask[b, c.layer] = True
                else:
                    head_mask[b, c.layer, c.head] = True
        T = target.resid_pre.shape[1]
        pos = self._position_mask(T, device)
        last_position = slice(T - 1, T)
        # Earlier positions equal the target's clean run when only the decision position is
        # patched, or when only the last block is (nothing reads its earlier positions).
        use_clean_kv = self.last_only or (self.prune_last_block and start == L - 1)
        hooks: dict = {}
        for layer in range(start, L):
            pruned = use_clean_kv or (self.prune_last_block and layer == L - 1)
            sel = last_position if pruned else slice(None)
            if head_mask[:, layer].any():
                where = head_mask[:, layer][:, None, :] & pos[sel][None, :, None]  # [B, T, H]
                if self.head_site == "z":
                    hooks[f"blocks.{layer}.attn.hook_z"] = [self._replace(where[..., None], source.z[layer, sel])]
                else:
                    src = torch.einsum("thk,hkd->thd", source.z[layer, sel], self.source_W_O[layer])
                    hooks[f"blocks.{layer}.attn.hook_result"] = [self._replace(where[..., None], src)]
            if mlp_mask[:, layer].any():
                where = mlp_mask[:, layer][:, None] & pos[sel][None, :]  # [B, T]
                hooks[f"blocks.{layer}.hook_mlp_out"] = [self._replace(where[..., None], source.mlp_out[layer, sel])]
        sel = last_position if use_clean_kv else slice(None)
        resid = target.resid_pre[start, sel].expand(B, -1, -1).contiguous()
        kv = target.kv_prefixes(model, start) if use_clean_kv else None
        logits = model.forward_from(resid, start, hooks, rows=self.rows, last_only=True, kv_prefixes=kv,
                                    prune_last_block=self.prune_last_block)  # [B, 2]
        return (logits[:, 1] - logits[:, 0]).float().cpu().numpy()

    @staticmethod
    def _replace(where: torch.Tensor, value: torch.Tensor):
        def hook(act, name):
            return torch.where(where, value.to(act.dtype)[None], act)

        return hook


def noise_floor(runner: PatchRunner, target: PromptActivations, target_W_O: torch.Tensor | None,
                controls: Sequence[float] = ()) -> float:
    """Largest |delta - target.delta| over runs that must change nothing, through `runner`'s
    path: the target recomputed from layer 0 unpatched; at every layer its own head 0 and
    MLP patched into it (`target_W_O` [L, H, dh, d]: the target's own per-head output
    matrices, for head_site "result"); and `controls`, the unpatched rows that rode in the
    sweep's own batches (`PatchRunner.deltas(controls=...)`), whose kernels and batch shapes
    a separate run would not reproduce."""
    own = copy.copy(runner)
    own.source_W_O = target_W_O
    L = runner.target.n_layers
    sets = [(Component(layer, 0), Component(layer, None)) for layer in range(L)]
    deltas = [runner.recompute(target), *own.deltas(target, target, sets)]
    return float(np.max(np.abs(np.asarray(deltas) - target.delta), initial=max(controls, default=0.0)))


def sweep(runner: PatchRunner, source: PromptActivations, target: PromptActivations,
          controls: list | None = None, same_prompt: bool = True) -> list[PatchResult]:
    """Every single-component patch (all heads and MLPs); `controls` as for PatchRunner.deltas.
    `same_prompt=False` (counterfactual prompts): the token ids may differ, not their number."""
    if same_prompt and not torch.equal(source.input_ids.cpu(), target.input_ids.cpu()):
        raise ValueError("source and target caches hold different token ids for this prompt (another tokenizer?)")
    if source.input_ids.shape != target.input_ids.shape:
        raise ValueError(f"source and target prompts have {source.input_ids.numel()} and "
                         f"{target.input_ids.numel()} tokens; patching needs them aligned token for token")
    comps = all_components(runner.target.n_layers, runner.target.n_heads)
    deltas = runner.deltas(source, target, [(c,) for c in comps], controls)
    return [PatchResult.make(c, target.delta, source.delta, float(d)) for c, d in zip(comps, deltas)]

