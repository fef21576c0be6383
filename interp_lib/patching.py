"""Activation patching between two models that see the same prompt.

A patch replaces, in the target's forward pass, one component's activation by the
source's and lets everything downstream recompute (norm scales included):

- head `L{l}H{h}`: the head's output z_h @ W_O[h] (TransformerLens `attn.hook_result`,
  summed into o_proj's output before Gemma-2's post-attention norm). With
  `head_site="z"` only its o_proj input z_h is replaced, so the target's own W_O[h]
  (which LoRA adapts) is applied to it.
- `L{l}_MLP`: the MLP block's addition to the residual (after Gemma-2's post-feedforward norm).

Positions: "all" prompt positions, or "decision" (the last position only).
Components below the patched layer are unchanged, so a patched run starts from the
target's cached resid_pre at the lowest patched layer, and many patches share one
batched forward pass. delta = logit(D) - logit(C) (post-softcap, read out in float32) at the decision
position; delta_change = patched - baseline (positive = towards Defect).

Noise floor: patches that must change nothing (an unpatched row in every batch of the
sweep, the target recomputed from layer 0, and its own head 0 and MLP patched into it at
every layer) run through the same runner; the largest |delta - baseline| among them is
the prompt's `noise_floor`.
A delta_change within NOISE_MULTIPLE times it is flagged `below_noise`.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch

from .behavior import action_of
from .noise import below_noise

POSITION_MODES = ("all", "decision")
HEAD_SITES = ("result", "z")
_COMPONENT = re.compile(r"^L(\d+)(?:H(\d+)|_MLP)$")


@dataclass(frozen=True)
class Component:
    layer: int
    head: int | None  # None for the MLP

    @property
    def kind(self) -> str:
        return "mlp" if self.head is None else "head"

    @property
    def name(self) -> str:
        return f"L{self.layer}_MLP" if self.head is None else f"L{self.layer}H{self.head}"

    @classmethod
    def parse(cls, name: str) -> "Component":
        m = _COMPONENT.match(name)
        if not m:
            raise ValueError(f"not a component name: {name!r} (expected L{{layer}}H{{head}} or L{{layer}}_MLP)")
        return cls(int(m.group(1)), None if m.group(2) is None else int(m.group(2)))


def all_components(n_layers: int, n_heads: int) -> list[Component]:
    """Every head and MLP, layer by layer (heads first within a layer)."""
    return [Component(l, h) for l in range(n_layers) for h in [*range(n_heads), None]]


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


class PatchRunner:
    """Exact patched deltas of a target model, many patch sets per batched forward pass."""

    def __init__(self, target, source_W_O: torch.Tensor | None, action_tokens: dict,
                 positions: str = "all", head_site: str = "result", batch_size: int = 64,
                 reuse_keys_values: bool = True, pass_overhead_flops: float | None = None):
        if positions not in POSITION_MODES:
            raise ValueError(f"positions must be one of {POSITION_MODES}, got {positions!r}")
        if head_site not in HEAD_SITES:
            raise ValueError(f"head_site must be one of {HEAD_SITES}, got {head_site!r}")
        if head_site == "result" and source_W_O is None:
            raise ValueError("head_site='result' needs the source's W_O [L, H, dh, d]")
        self.target, self.positions, self.head_site = target, positions, head_site
        self.source_W_O = source_W_O
        self.rows = [action_tokens["C"], action_tokens["D"]]
        self.batch_size = batch_size
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
        size = self.batch_size - 1 if controls is not None and self.batch_size > 1 else self.batch_size
        for group in self._plan(starts, target.resid_pre.shape[1]):
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

    def _plan(self, starts: list[int], T: int) -> list[list[int]]:
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
                passes = math.ceil(n / self.batch_size) * (L - layers[i])
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


def own_W_O(model) -> torch.Tensor:
    """[L, H, dh, d] a HookedModel's per-head output matrices (for self-patches)."""
    return torch.stack([model.W_O(layer) for layer in range(model.n_layers)])


@dataclass
class PatchResult:
    component: str
    layer: int
    head: int | None
    kind: str
    baseline_delta: float
    source_delta: float
    patched_delta: float
    delta_change: float
    baseline_action: str
    patched_action: str
    action_flipped: bool
    effect_size: float  # |delta_change| / |baseline_delta| (NaN when baseline_delta == 0)
    gap_fraction: float  # delta_change / (source_delta - baseline_delta) (NaN when they are equal)

    @classmethod
    def make(cls, component: Component, baseline: float, source: float, patched: float) -> "PatchResult":
        change = patched - baseline
        return cls(
            component=component.name, layer=component.layer, head=component.head, kind=component.kind,
            baseline_delta=baseline, source_delta=source, patched_delta=patched, delta_change=change,
            baseline_action=action_of(baseline), patched_action=action_of(patched),
            action_flipped=action_of(baseline) != action_of(patched),
            effect_size=_ratio(abs(change), abs(baseline)), gap_fraction=_ratio(change, source - baseline),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _ratio(num: float, den: float) -> float:
    return num / den if abs(den) > 1e-12 else math.nan


@dataclass
class CircuitDiscovery:
    """Greedy joint patching of the top-ranked components until the target takes the
    source's action. `flipped=False` means no prefix of up to `max_components` flipped it;
    `minimal_circuit` is then the best attempt (largest gap recovered), never padded."""

    ranked_components: list[tuple[str, float]]  # (component, delta_change), by |delta_change|
    minimal_circuit: list[str]
    all_patches: list[PatchResult]
    flipped: bool
    patched_delta: float
    gap_recovered: float
    baseline_delta: float = math.nan
    source_delta: float = math.nan
    attempts: list[tuple[int, float]] = field(default_factory=list)  # (k, joint patched delta)
    reason: str = ""


def discover_circuit(runner: PatchRunner, source: PromptActivations, target: PromptActivations,
                     results: list[PatchResult], max_components: int = 10,
                     scores: Sequence[float] | None = None) -> CircuitDiscovery:
    """Ranks components by |delta_change| (or by |scores|, e.g. AtP estimates aligned with
    `results`) and patches the top k jointly, k = 1..max_components, in one batched pass
    of exact patching; the first k that gives the source's action is the circuit."""
    scores = [r.delta_change for r in results] if scores is None else list(scores)
    order = sorted(range(len(results)), key=lambda i: abs(scores[i]), reverse=True)
    ranked = [results[i] for i in order]
    ranking = [(results[i].component, float(scores[i])) for i in order]
    base, src = target.delta, source.delta
    common = dict(ranked_components=ranking, all_patches=results, baseline_delta=base, source_delta=src)
    if action_of(base) == action_of(src):
        return CircuitDiscovery(minimal_circuit=[], flipped=False, patched_delta=base, gap_recovered=math.nan,
                                reason="source and target already take the same action", **common)
    comps = [Component.parse(r.component) for r in ranked[:max_components]]
    prefixes = [comps[:k] for k in range(1, len(comps) + 1)]
    deltas = runner.deltas(source, target, prefixes)
    attempts = [(k + 1, float(d)) for k, d in enumerate(deltas)]
    for k, d in attempts:
        if action_of(d) == action_of(src):
            return CircuitDiscovery(minimal_circuit=[c.name for c in comps[:k]], flipped=True, patched_delta=d,
                                    gap_recovered=_ratio(d - base, src - base), attempts=attempts, **common)
    best_k, best_d = max(attempts, key=lambda a: _ratio(a[1] - base, src - base))
    return CircuitDiscovery(minimal_circuit=[c.name for c in comps[:best_k]], flipped=False, patched_delta=best_d,
                            gap_recovered=_ratio(best_d - base, src - base), attempts=attempts,
                            reason=f"no set of up to {len(comps)} top components flipped the action", **common)


def sweep(runner: PatchRunner, source: PromptActivations, target: PromptActivations,
          controls: list | None = None) -> list[PatchResult]:
    """Every single-component patch (all heads and MLPs); `controls` as for PatchRunner.deltas."""
    if not torch.equal(source.input_ids.cpu(), target.input_ids.cpu()):
        raise ValueError("source and target caches hold different token ids for this prompt (another tokenizer?)")
    comps = all_components(runner.target.n_layers, runner.target.n_heads)
    deltas = runner.deltas(source, target, [(c,) for c in comps], controls)
    return [PatchResult.make(c, target.delta, source.delta, float(d)) for c, d in zip(comps, deltas)]


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


def load_W_O(model_dir: str, n_layers: int, n_heads: int, d_head: int, device="cpu", dtype=torch.float32):
    """[L, H, dh, d] per-head output matrices read from a merged model's safetensors
    (only the o_proj tensors are read)."""
    from .hooked import W_O_from_o_proj, o_proj_weight_name
    from .models import WEIGHTS_FILE, open_weights

    with open_weights(Path(model_dir) / WEIGHTS_FILE, Path(model_dir).name) as f:
        mats = [W_O_from_o_proj(f.get_tensor(o_proj_weight_name(l)), n_heads, d_head) for l in range(n_layers)]
    return torch.stack(mats).to(device=device, dtype=dtype)


RESULT_COLUMNS = ["experiment", "source", "target", "scenario", "variant", "positions", "head_site", "precision",
                  *PatchResult.__dataclass_fields__, "atp_delta_change", "noise_floor", "below_noise"]


def patch_scenario(experiment: str, source_name: str, target_name: str, scenario: str,
                   source_cache: str, target_cache: str, source_dir: str, target_dir: str,
                   positions: str = "all", head_site: str = "result", circuits: bool = True,
                   max_components: int = 10, precision: str = "float32", device: str = "cpu",
                   atp: bool = True, circuit_ranking: str = "exact"):
    """The workflow's patching job for one (experiment, scenario): every single-component
    patch on every variant, each variant's noise floor, then circuits. Returns (results
    DataFrame, circuit records)."""
    import pandas as pd
    from tqdm import tqdm

    from .cache import CacheFile
    from .hooked import HookedModel
    from .models import load_base_model, read_fingerprint, resolve_device
    from .precision import get_precision

    device = resolve_device(device)
    mode = get_precision(precision)
    model = load_base_model(target_dir, mode.weights_name, device, target_name)
    hooked = HookedModel(model, name=target_name, precision=mode)
    rows, circuit_records = [], []
    with CacheFile(source_cache, fingerprint=read_fingerprint(source_dir)["fingerprint"]) as src_file, \
            CacheFile(target_cache, fingerprint=read_fingerprint(target_dir)["fingerprint"]) as tgt_file, \
            mode.matmuls():
        action_tokens = {"C": int(tgt_file.attrs["token_C"]), "D": int(tgt_file.attrs["token_D"])}
        if (int(src_file.attrs["token_C"]), int(src_file.attrs["token_D"])) != (action_tokens["C"], action_tokens["D"]):
            raise ValueError(f"{source_name} and {target_name} use different action tokens; they cannot be patched")
        for cache_file in (src_file, tgt_file):
            if cache_file.attrs.get("precision") != mode.name:
                raise ValueError(f"{cache_file.path} was cached in precision {cache_file.attrs.get('precision')!r}, "
                                 f"not {mode.name!r}; rerun the workflow to rebuild it")
        W_O = load_W_O(source_dir, hooked.n_layers, hooked.n_heads, hooked.cfg.d_head, device, mode.weights) \
            if head_site == "result" else None
        target_W_O = own_W_O(hooked) if head_site == "result" else None
        runner = PatchRunner(hooked, W_O, action_tokens, positions, head_site)
        for variant in tqdm(tgt_file.variants, desc=f"patch {experiment}/{scenario}"):
            src = PromptActivations.from_cache(src_file[variant], device, mode.weights, mode.residual)
            tgt = PromptActivations.from_cache(tgt_file[variant], device, mode.weights, mode.residual)
            controls: list = []
            results = sweep(runner, src, tgt, controls)
            floor = noise_floor(runner, tgt, target_W_O, controls)
            estimates = attribution_patch(runner, src, tgt) if atp or circuit_ranking == "atp" \
                else np.full(len(results), np.nan)
            meta = dict(experiment=experiment, source=source_name, target=target_name, scenario=scenario,
                        variant=variant, positions=positions, head_site=head_site, precision=mode.name)
            rows += [{**meta, **r.to_dict(), "atp_delta_change": e, "noise_floor": floor,
                      "below_noise": below_noise(r.delta_change, floor)}
                     for r, e in zip(results, estimates)]
            if circuits:
                scores = estimates if circuit_ranking == "atp" else None
                found = discover_circuit(runner, src, tgt, results, max_components, scores)
                circuit_records.append({**meta, "ranking": circuit_ranking, **circuit_record(found)})
    return pd.DataFrame(rows, columns=RESULT_COLUMNS), circuit_records


CIRCUIT_COLUMNS = ["experiment", "source", "target", "scenario", "variant", "positions", "head_site",
                   "ranking", "flipped", "circuit_size", "circuit", "baseline_delta", "source_delta", "patched_delta",
                   "gap_recovered", "attempts", "reason"]


def circuit_record(found: CircuitDiscovery) -> dict:
    return {
        "flipped": found.flipped,
        "circuit_size": len(found.minimal_circuit),
        "circuit": ";".join(found.minimal_circuit),
        "baseline_delta": found.baseline_delta,
        "source_delta": found.source_delta,
        "patched_delta": found.patched_delta,
        "gap_recovered": found.gap_recovered,
        "attempts": ";".join(f"{k}:{d:.6g}" for k, d in found.attempts),
        "reason": found.reason,
    }


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
