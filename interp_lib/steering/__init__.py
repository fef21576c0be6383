"""Steering vectors: directions from cached decision-position activations (directions),
steered forward passes batched over layers x alphas (steer), and the tables built from
them (summary). The workflow job is `interp_lib.jobs.steering.steer_scenario`.

The names below load their module on first use, so that the table and plot jobs, which
import `steering.summary` only, start without torch."""

from importlib import import_module

_EXPORTS = {"Direction": "directions", "DirectionError": "directions", "KINDS": "directions", "SITES": "directions",
            "decision_difference": "directions", "model_difference": "directions", "random_controls": "directions",
            "read_site_activations": "directions", "POSITIONS": "steer", "steered_deltas": "steer"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
