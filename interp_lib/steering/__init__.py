"""Steering vectors: directions from cached decision-position activations (directions),
steered forward passes batched over layers x alphas (steer), and the tables built from
them (summary). The workflow job is `interp_lib.jobs.steering.steer_scenario`."""

from .directions import KINDS, SITES, Direction, DirectionError, decision_difference, \
    model_difference, random_controls, read_site_activations
from .steer import POSITIONS, steered_deltas

__all__ = ["Direction", "DirectionError", "KINDS", "POSITIONS", "SITES", "decision_difference",
           "model_difference", "random_controls", "read_site_activations", "steered_deltas"]
