"""White-box interpretability of LoRA fine-tuned language models on the Iterated
Prisoner's Dilemma: hooked model, HDF5 activation cache, logit lens, direct logit
attribution and activation patching.

Sign convention everywhere: delta = logit(D) - logit(C) at the decision position;
positive = pro-Defect (action2), negative = pro-Cooperate (action1).
"""

from .deprecation_guard import install_from_env as _install_deprecation_guard
from .lazy import lazy_exports

__version__ = "0.1.0"

# Where INTERP_DEPRECATIONS_AS_ERRORS is set, a deprecated API called by our code raises
# (deprecation_guard.py). Every workflow script imports from interp_lib, and its own statements
# follow its imports, so the guard is in place before any of our code runs in a job. Cheap: the
# guard imports only the standard library (importing interp_lib must not load torch).
_install_deprecation_guard()

# Public names -> defining module; imported on first use (torch and transformers are heavy).
_EXPORTS = {
    "load_config": "config",
    "ConfigError": "config",
    "get_action_token_ids": "tokens",
    "decision_input_ids": "tokens",
    "load_prompt_dataset": "prompts",
    "build_dataset": "prompts",
    "HookedModel": "model.hooked",
    "HookedGemmaModel": "model.hooked",
    "LoRAModelLoader": "model.loader",
    "ModelLoadError": "model.loading",
    "CacheFile": "cache.read",
    "CacheError": "cache.storage",
    "LogitLensAnalyzer": "analyses.logit_lens",
    "LogitLensVisualizer": "plots.logit_lens",
    "DirectLogitAttributor": "analyses.dla",
    "DLAResult": "analyses.dla",
    "DLAVisualizer": "plots.dla",
    "ActivationPatcher": "patching",
    "PatchResult": "patching",
    "CircuitDiscovery": "patching",
    "PatchingVisualizer": "plots.patching",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
