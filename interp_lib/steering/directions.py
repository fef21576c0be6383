"""Steering directions from cached activations at the decision position.

A direction holds one vector per layer, [L, d], in the units of the site it is added to:
`resid_pre` (blocks.{l}.hook_resid_pre, the stream entering block l) or `mlp_out`
(blocks.{l}.hook_mlp_out). Adding alpha times it at alpha = 1 moves the mean activation of
one group of prompts onto the other's:

- `models`: mean over the source model's prompts minus mean over the reference model's
  (the same prompts; e.g. PT3_COREDe - PT2_COREDe);
- `decisions`: one model's mean over the prompts it answers Defect (delta > 0) minus the
  mean over those it answers Cooperate, so alpha > 0 pushes towards Defect.

`expected_sign` is the sign of the delta change that steering with alpha > 0 should cause:
+1 for `decisions`; for `models` the sign of mean delta(source) - mean delta(reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..cache.decision_activations import DecisionActivations

SITES = {"resid_pre": "hook_resid_pre", "mlp_out": "hook_mlp_out"}
KINDS = ("models", "decisions")
MAIN = "mean difference"  # the `direction` label of rows steered by the direction (not a control)


class DirectionError(ValueError):
    """A direction that cannot be built from the given prompts (one line, naming them)."""


def read_site_activations(cache_paths: Sequence[str], site: str) -> DecisionActivations:
    """Every variant of every cache file (one model): `site` at the decision position."""
    from ..cache.decision_activations import read_decision_activations

    if site not in SITES:
        raise ValueError(f"steering site must be one of {', '.join(SITES)}, got {site!r}")
    return read_decision_activations(list(cache_paths), site)


@dataclass
class Direction:
    """vectors [L, d] (added at alpha = 1), the mean activation norm per layer [L] of the
    prompts it was built from (the scale to compare alpha |v| with), and how it was built."""

    vectors: np.ndarray
    expected_sign: int
    activation_norm: np.ndarray
    n_plus: int
    n_minus: int
    description: str

    @property
    def norms(self) -> np.ndarray:
        """[L] |v_l|."""
        return np.linalg.norm(self.vectors, axis=-1)


def _mean_norm(*groups: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.concatenate(groups).astype(np.float64), axis=-1).mean(0)


def model_difference(source: DecisionActivations, reference: DecisionActivations, source_name: str = "source",
                     reference_name: str = "reference") -> Direction:
    """mean(source) - mean(reference) per layer."""
    if source.acts.shape[1:] != reference.acts.shape[1:]:
        raise DirectionError(f"{source_name} and {reference_name} have activations of different shapes "
                             f"{source.acts.shape[1:]} and {reference.acts.shape[1:]}; they must share an architecture")
    gap = float(source.delta.mean() - reference.delta.mean())
    return Direction(source.acts.mean(0, dtype=np.float64) - reference.acts.mean(0, dtype=np.float64),
                     1 if gap >= 0 else -1,
                     _mean_norm(source.acts, reference.acts), len(source.delta), len(reference.delta),
                     f"mean({source_name}) - mean({reference_name})")


def decision_difference(model: DecisionActivations, model_name: str = "model") -> Direction:
    """mean over the prompts answered Defect minus mean over those answered Cooperate."""
    defect = model.delta > 0
    if defect.all() or not defect.any():
        answer = "Defect" if defect.all() else "Cooperate"
        raise DirectionError(f"{model_name} answers {answer} on all {len(defect)} prompts of "
                             f"{', '.join(dict.fromkeys(model.scenario))}; a decision direction needs prompts "
                             "answered each way (add scenarios to direction.scenarios)")
    acts = model.acts
    return Direction(acts[defect].mean(0, dtype=np.float64) - acts[~defect].mean(0, dtype=np.float64), 1,
                     _mean_norm(acts), int(defect.sum()),
                     int((~defect).sum()), f"mean({model_name} | Defect) - mean({model_name} | Cooperate)")


def random_controls(direction: Direction, n: int, seed: int = 0) -> np.ndarray:
    """[n, L, d] random directions with the direction's norm at every layer (isotropic
    Gaussian, normalised): how much steering by that much moves delta at all."""
    rng = np.random.default_rng(seed)
    L, d = direction.vectors.shape
    raw = rng.standard_normal((n, L, d))
    return raw / np.linalg.norm(raw, axis=-1, keepdims=True) * direction.norms[None, :, None]
