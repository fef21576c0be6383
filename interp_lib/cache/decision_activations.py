"""One model's cached activations at the decision position, over many prompts: what the
steering directions and the probes are built from (only the [L, d] rows at each prompt's
decision position are read)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import CacheError, CacheFile


@dataclass
class DecisionActivations:
    """One model's cached array `key` at each prompt's decision position, over prompts of
    several cache files: acts [n, L, d] float32, and per prompt its scenario, variant,
    labelling and delta (post-softcap logit(D) - logit(C): > 0 = chooses Defect)."""

    acts: np.ndarray
    scenario: np.ndarray  # [n] str
    variant: np.ndarray  # [n] int
    labelling: np.ndarray  # [n] "standard" or "swapped"
    delta: np.ndarray  # [n] float


def read_decision_activations(paths, key: str, fingerprint: str | None = None) -> DecisionActivations:
    """`key` (a stacked [L, T, d] array, e.g. resid_pre, resid_post, mlp_out) at the decision
    position of every variant of every file (only those [L, d] rows are read). `paths` maps
    scenario -> file, or is a list of files (scenarios named by their attrs); checked against
    `fingerprint` if given. Raises CacheError without prompts or with files of other shapes."""
    named = paths.items() if isinstance(paths, dict) else [(None, p) for p in paths]
    acts, scenario, variant, labelling, delta = [], [], [], [], []
    for name, path in named:
        with CacheFile(path, fingerprint=fingerprint) as cache:
            for v in cache.variants:
                group = cache.group(v)
                pos = int(group.attrs["decision_position"])
                acts.append(np.asarray(group[key][:, pos, :], dtype=np.float32))
                scenario.append(name or str(cache.attrs["scenario"]))
                variant.append(v)
                labelling.append(cache.labelling(v))
                delta.append(float(group.attrs["delta"]))
    if not acts:
        raise CacheError(f"no prompts in {', '.join(str(p) for _, p in named) or 'no cache files'}")
    shapes = {a.shape for a in acts}
    if len(shapes) > 1:
        raise CacheError(f"{key} has different [layers, d_model] in {', '.join(str(p) for _, p in named)}: "
                         f"{sorted(shapes)}; they must come from one model")
    return DecisionActivations(np.stack(acts), np.array(scenario, dtype=object), np.array(variant),
                               np.array(labelling, dtype=object), np.array(delta, dtype=float))
