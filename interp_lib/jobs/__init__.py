"""Workflow jobs: each reads its inputs, runs a model and writes one output (the Snakemake
scripts call these; analyses that only read caches live in their own modules).

The scripts import a job from its own module (interp_lib.jobs.caching, ...), so that a
rule's code version (interp_lib.code_version) covers that job's code and not every job's;
the names below are loaded on first use for interactive work."""

from importlib import import_module

_EXPORTS = {"build_cache_file": "caching", "counterfactual_patch": "counterfactual", "patch_scenario": "patching",
            "steer_scenario": "steering"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_EXPORTS)
