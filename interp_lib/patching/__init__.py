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

Modules: components (names, result rows), activations (what a patch reads), runner (exact
batched patching, noise floor), atp (attribution patching), circuits, patcher (the design's
text API), ranking (the circuits' order, numpy only), paths (path patching: block outputs over
layer ranges), saturation (where a path-patching curve saturates, numpy only). The workflow job is
`interp_lib.jobs.patch_scenario`. Names are exported lazily (interp_lib/lazy.py): importing
the package loads no torch.
"""

from ..lazy import lazy_exports

# Public names -> defining module (code_version reads this table: see interp_lib/code_version.py).
_EXPORTS = {
    "PromptActivations": "activations",
    "load_W_O": "activations",
    "own_W_O": "activations",
    "attribution_patch": "atp",
    "CIRCUIT_COLUMNS": "circuits",
    "CircuitDiscovery": "circuits",
    "circuit_record": "circuits",
    "discover_circuit": "circuits",
    "RESULT_COLUMNS": "components",
    "Component": "components",
    "PatchResult": "components",
    "all_components": "components",
    "ActivationPatcher": "patcher",
    "HEAD_SITES": "runner",
    "POSITION_MODES": "runner",
    "PatchRunner": "runner",
    "noise_floor": "runner",
    "sweep": "runner",
    "rank_toward_source": "ranking",
    "PATH_COLUMNS": "paths",
    "PATH_SITES": "paths",
    "PathResult": "paths",
    "path_noise_floor": "paths",
    "path_sweep": "paths",
    "progressive_ranges": "paths",
    "range_components": "paths",
    "start_layers": "paths",
    "saturation_layer": "saturation",
    "with_saturation": "saturation",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
