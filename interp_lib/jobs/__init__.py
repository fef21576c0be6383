"""Workflow jobs: each reads its inputs, runs a model and writes one output (the Snakemake
scripts call these; analyses that only read caches live in their own modules).

The scripts import a job from its own module (interp_lib.jobs.caching, ...), so that a
rule's code version (interp_lib.code_version) covers that job's code and not every job's;
the names below are loaded on first use for interactive work."""

from ..lazy import lazy_exports

_EXPORTS = {"build_cache_file": "caching", "circuit_transfer": "circuit_transfer",
            "counterfactual_patch": "counterfactual", "patch_scenario": "patching",
            "steer_scenario": "steering"}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
