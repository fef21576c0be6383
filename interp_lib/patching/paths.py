"""Path patching between models: a block output of the source written into the target over
a layer range [a, b], and the progressive sweep that lengthens b (the design repository's
mech_interp/path_patching.py, exact and batched).

Sites (`PATH_SITES`): `attn_out` (blocks.{l}.hook_attn_out), `mlp_out` (blocks.{l}.hook_mlp_out)
or `both`, at layers a..b, at the runner's positions (all, or the decision position).
`attn_out` is patched as every head of the layer (hook_result, the source's z_h @ W_O[h]):
o_proj's output is their sum, so the target's post-attention norm (Gemma; the same weights
as the source's, adapters do not touch norms) reproduces the source's attn_out within float
rounding (tests/test_path_patching.py checks it against a hook on hook_attn_out). Not
`resid_post`: replacing resid_post at layers a..b at the same positions equals replacing it
at layer b alone, since layer b's write overrides everything the earlier ones changed there.

delta_change = patched - baseline delta (positive = towards Defect); gap_fraction =
delta_change / (source - baseline delta). Every range is one patch set of
`PatchRunner.deltas`, so ranges that start at one layer share batched passes and the
noise-floor controls ride in those batches.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

from ..analyses.behaviour import action_of
from .components import Component

PATH_SITES = ("attn_out", "mlp_out", "both")
DEFAULT_STARTS = 4


def start_layers(n_layers: int, spec) -> list[int]:
    """The start layers a of the progressive sweep: `spec` an integer n gives n evenly spaced
    layers floor(i * L / n), i = 0..n-1 (layer 0 always; at most L of them), a list gives
    those layers. ValueError naming analysis.path_patch_starts for a layer outside 0..L-1."""
    if isinstance(spec, bool) or not isinstance(spec, (int, list, tuple)):
        raise ValueError(f"analysis.path_patch_starts: an integer or a list of layers, got {spec!r}")
    if isinstance(spec, int):
        if spec < 1:
            raise ValueError(f"analysis.path_patch_starts: at least 1, got {spec}")
        n = min(spec, n_layers)
        return sorted({i * n_layers // n for i in range(n)})
    bad = [a for a in spec if not isinstance(a, int) or not 0 <= a < n_layers]
    if bad or not spec:
        raise ValueError(f"analysis.path_patch_starts: layer {bad[0] if bad else '(none)'} is not a layer of "
                         f"this model (0..{n_layers - 1})")
    return sorted(set(spec))


def range_components(site: str, first: int, last: int, n_heads: int) -> tuple[Component, ...]:
    """The components whose joint patch writes `site` of layers first..last: every head
    (attn_out), the MLP (mlp_out) or both."""
    if site not in PATH_SITES:
        raise ValueError(f"path patching site must be one of {', '.join(PATH_SITES)}, got {site!r}")
    heads = site in ("attn_out", "both")
    mlp = site in ("mlp_out", "both")
    comps: list[Component] = []
    for layer in range(first, last + 1):
        if heads:
            comps += [Component(layer, h) for h in range(n_heads)]
        if mlp:
            comps.append(Component(layer, None))
    return tuple(comps)


def progressive_ranges(n_layers: int, starts: Sequence[int]) -> list[tuple[int, int]]:
    """(a, b) for every start a and every b = a..L-1."""
    return [(a, b) for a in starts for b in range(a, n_layers)]


@dataclass
class PathResult:
    site: str
    layer_from: int
    layer_to: int
    baseline_delta: float
    source_delta: float
    patched_delta: float
    delta_change: float
    gap_fraction: float  # NaN when source and baseline deltas are equal
    patched_action: str
    action_flipped: bool

    @classmethod
    def make(cls, site: str, first: int, last: int, baseline: float, source: float, patched: float) -> "PathResult":
        change = patched - baseline
        gap = source - baseline
        return cls(site, first, last, baseline, source, patched, change,
                   change / gap if abs(gap) > 1e-12 else math.nan, action_of(patched),
                   action_of(patched) != action_of(baseline))

    def to_dict(self) -> dict:
        return asdict(self)


def path_sweep(runner, source, target, starts: Sequence[int], sites: Sequence[str] = PATH_SITES,
               controls: list | None = None) -> list[PathResult]:
    """Every range [a, b] of the progressive sweep (`progressive_ranges`) at every site, each
    patched jointly from `source` into `target` (PromptActivations of one prompt) by
    `runner` (a PatchRunner whose head_site is "result": attn_out is the source's head
    outputs); `controls` as for PatchRunner.deltas. Results in the order site, a, b."""
    import torch

    if runner.head_site != "result":
        raise ValueError("path patching of attn_out needs the source's head outputs: a runner with head_site='result'")
    if not torch.equal(source.input_ids.cpu(), target.input_ids.cpu()):
        raise ValueError("source and target caches hold different token ids for this prompt (another tokenizer?)")
    L, H = runner.target.n_layers, runner.target.n_heads
    ranges = progressive_ranges(L, starts)
    keys = [(site, a, b) for site in sites for a, b in ranges]
    deltas = runner.deltas(source, target, [range_components(site, a, b, H) for site, a, b in keys], controls)
    return [PathResult.make(site, a, b, target.delta, source.delta, float(d)) for (site, a, b), d in zip(keys, deltas)]


def path_noise_floor(runner, target, target_W_O, starts: Sequence[int], controls: Sequence[float] = (),
                     component_floor: float | None = None) -> float:
    """The noise floor of a path sweep (`runner`, result site): the largest of the component
    floor (`runner.noise_floor`'s self-patches, computed unless `component_floor` is given:
    the same runs when the component sweep used this runner), `controls` (the unpatched rows
    in the path sweep's batches) and the target's own attn_out and mlp_out written into it
    over every full range [a, L-1] (`target_W_O` [L, H, dh, d]: its own head outputs)."""
    import copy

    import numpy as np

    from .runner import noise_floor

    floor = noise_floor(runner, target, target_W_O, controls) if component_floor is None \
        else max([component_floor, *controls])
    own = copy.copy(runner)
    own.source_W_O = target_W_O
    L, H = runner.target.n_layers, runner.target.n_heads
    selves = own.deltas(target, target, [range_components("both", a, L - 1, H) for a in starts])
    return float(max(floor, np.abs(selves - target.delta).max(initial=0.0)))


# Columns of the per-job table (patching/per/{experiment}/{scenario}/path_patches.csv).
PATH_COLUMNS = ["experiment", "source", "target", "scenario", "variant", "labelling", "positions", "precision",
                *PathResult.__dataclass_fields__, "noise_floor", "below_noise", "full_delta_change",
                "saturation_layer", "saturated"]
