"""Steering vectors: directions from cached decision-position activations (directions),
steered forward passes batched over layers x alphas (steer), and the tables built from
them (summary). The workflow job is `interp_lib.jobs.steering.steer_scenario`.

The names below load their module on first use, so that the table and plot jobs, which
import `steering.summary` only, start without torch."""

from ..lazy import lazy_exports

_EXPORTS = {"Direction": "directions", "DirectionError": "directions", "KINDS": "directions", "SITES": "directions",
            "decision_difference": "directions", "model_difference": "directions", "random_controls": "directions",
            "read_site_activations": "directions", "POSITIONS": "steer", "steered_deltas": "steer"}



__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
