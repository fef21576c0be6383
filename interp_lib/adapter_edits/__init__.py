"""LoRA adapter edits in weight space: ablation, transplant and sufficiency of a fine-tune's
update, per layer and module group, measured on the decision.

A fine-tune's weights are W + U_ft with U_ft = scaling * B @ A per adapted module (computed
from the adapter's factors, interp_lib.model.adapter_deltas). For a layer l and a module
group G (attn: q/k/v/o_proj, mlp: gate/up/down_proj, block: all seven, or a single module):

- ablation:    the fine-tune with U_ft removed at (l, G)             (starts from its cache)
- transplant:  the fine-tune with U_ft replaced by U_src at (l, G)   (starts from its cache)
- sufficiency: the base with U_ft added at (l, G) only               (starts from the base's cache)

A transplant moves the update, not the factors, so the two adapters' ranks may differ; a
module that the target adapts and the source does not is refused (EditError naming module
and adapter). Weights are swapped by assigning new tensors and restoring the original
tensor objects (never by in-place arithmetic), and every run starts from the cached
resid_pre of the lowest edited layer and recomputes every position from there.

delta = logit(D) - logit(C) at the decision position (post-softcap, float32 readout);
delta_change = edited - baseline (the background model's cached delta); positive = towards
Defect. Noise floor: the unedited condition recomputed from the same start layer in every
batch, against the cached delta (which also holds the difference between base + on-the-fly
update and the merged weights the cache was made from).

Modules: conditions (what an edit is; no torch), weights (adapters' updates and the swap),
runner (batched edited runs), minimal (the greedy minimal sufficient set; no torch),
summary (tables; no torch). The workflow job is interp_lib.jobs.adapter_edits. Names are
exported lazily: importing the package loads no torch.
"""

from ..lazy import lazy_exports

# Public names -> defining module (code_version reads this table: see interp_lib/code_version.py).
_EXPORTS = {
    "Condition": "conditions",
    "EditError": "conditions",
    "MODULE_GROUPS": "conditions",
    "group_modules": "conditions",
    "AdapterUpdates": "weights",
    "EditableWeights": "weights",
    "load_adapter": "weights",
    "EditRunner": "runner",
    "MinimalSet": "minimal",
    "minimal_sufficient_set": "minimal",
    "reproduces": "minimal",
    "edit_summary": "summary",
    "layer_verdicts": "summary",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
