"""Workflow jobs: each reads its inputs, runs a model and writes one output (the Snakemake
scripts call these; analyses that only read caches live in their own modules)."""

from .caching import build_cache_file
from .counterfactual import counterfactual_patch
from .patching import patch_scenario

__all__ = ["build_cache_file", "counterfactual_patch", "patch_scenario"]
