"""Logit lens: the decision delta read out after every block.

For each layer l, the residual stream after block l at the decision position goes
through the final norm (its scale recomputed on that residual), the C and D rows of
the unembedding and the final softcap; trajectory[l] = logit D - logit C
(positive = pro-Defect). The last entry is the model's own delta.

One implementation works on arrays (`lens_trajectory`); the cache path
(`trajectories_from_cache`) and `LogitLensAnalyzer` (one forward pass of a
`HookedModel`) both feed it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import numpy as np

from .behaviour import action_of
from ..cache import CacheError, CacheFile

log = logging.getLogger(__name__)


def _cap_or_none(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class ActionReadout:
    """Final norm + unembedding restricted to the C and D tokens (float64).

    W_U_actions [2, d] (rows C, D); ln_final_gain [d] the effective gain ((1 + w) for
    Gemma); final_softcap None when the model has none.
    """

    W_U_actions: np.ndarray
    ln_final_gain: np.ndarray
    eps: float
    final_softcap: float | None

    def __post_init__(self):
        object.__setattr__(self, "W_U_actions", np.asarray(self.W_U_actions, dtype=np.float64))
        object.__setattr__(self, "ln_final_gain", np.asarray(self.ln_final_gain, dtype=np.float64))
        object.__setattr__(self, "final_softcap", _cap_or_none(self.final_softcap))
        if self.W_U_actions.ndim != 2 or self.W_U_actions.shape[0] != 2:
            raise ValueError(f"W_U_actions must be [2, d] (C row, D row), got {self.W_U_actions.shape}")

    @classmethod
    def from_cache(cls, cache: CacheFile) -> "ActionReadout":
        return cls(cache.unembed["W_U_actions"], cache.unembed["ln_final_gain"], float(cache.attrs["eps"]),
                   cache.attrs.get("final_softcap"))

    def for_labelling(self, labelling: str) -> "ActionReadout":
        """This readout (rows C, D of the standard labelling) for a cache variant's labelling:
        in "swapped" action1 is Defect, so the rows are exchanged."""
        if labelling == "standard":
            return self
        if labelling != "swapped":
            raise ValueError(f"labelling must be 'standard' or 'swapped', got {labelling!r}")
        return replace(self, W_U_actions=self.W_U_actions[::-1].copy())

    @classmethod
    def from_model(cls, hooked, action_tokens: dict) -> "ActionReadout":
        rows = [action_tokens["C"], action_tokens["D"]]
        return cls(hooked.W_U[rows].detach().float().cpu().numpy(),
                   hooked.final_norm_gain().detach().cpu().numpy(), hooked.cfg.eps, hooked.cfg.final_softcap)

    @property
    def direction(self) -> np.ndarray:
        """[d] (W_U[D] - W_U[C]) * gain: the pre-softcap delta per unit of normed residual."""
        return (self.W_U_actions[1] - self.W_U_actions[0]) * self.ln_final_gain

    def scale(self, resid) -> np.ndarray:
        """[...] final-norm scale sqrt(mean(x^2) + eps) of resid [..., d]."""
        x = np.asarray(resid, dtype=np.float64)
        return np.sqrt((x * x).mean(-1) + self.eps)

    def logits(self, resid, apply_softcap: bool = True) -> np.ndarray:
        """[..., 2] (C, D) logits of resid [..., d], final norm recomputed."""
        x = np.asarray(resid, dtype=np.float64)
        normed = x / self.scale(x)[..., None] * self.ln_final_gain
        out = normed @ self.W_U_actions.T
        if apply_softcap and self.final_softcap is not None:
            out = self.final_softcap * np.tanh(out / self.final_softcap)
        return out

    def delta(self, resid, apply_softcap: bool = True) -> np.ndarray:
        """[...] logit D - logit C (the softcap acts on each logit, before the difference)."""
        lg = self.logits(resid, apply_softcap)
        return lg[..., 1] - lg[..., 0]


def lens_trajectory(resid_post, readout: ActionReadout) -> np.ndarray:
    """[L] delta after each block from resid_post [L, d] at the decision position."""
    return readout.delta(resid_post)


def trajectory_from_arrays(arrays, attrs, readout: ActionReadout) -> np.ndarray:
    """[L] trajectory of one prompt. `arrays`/`attrs`: a cache variant group (h5py) or the
    dicts of `cache.collect_variant` (both index as arrays["resid_post"][:, pos])."""
    pos = int(attrs["decision_position"])
    return lens_trajectory(np.asarray(arrays["resid_post"][:, pos]), readout)


def trajectories_from_cache(cache: CacheFile) -> list[dict]:
    """One record per variant: {model, scenario, variant, trajectory (list, [L]), delta}.

    `delta` is the model's own post-softcap delta (equals trajectory[-1]; to float16 rounding of
    resid_post when the cache stores float16, analysis.cache_dtype)."""
    readout = ActionReadout.from_cache(cache)
    records = []
    for v in cache.variants:
        try:
            group = cache.group(v)
            traj = trajectory_from_arrays(group, group.attrs, readout.for_labelling(cache.labelling(v)))
            delta = float(group.attrs["delta"])
        except (OSError, KeyError) as exc:
            raise CacheError(f"cannot read variant {v} of {cache.path} ({exc}); delete it and rerun the workflow") from None
        records.append({"model": str(cache.attrs["model"]), "scenario": str(cache.attrs["scenario"]),
                        "variant": int(v), "labelling": cache.labelling(v), "trajectory": [float(t) for t in traj], "delta": delta})
    return records


def scenario_trajectories(cache_path, fingerprint: str) -> list[dict]:
    """`trajectories_from_cache` of one cache file, checked against its model's
    `fingerprint`: one scenario of a logit_lens_model job."""
    with CacheFile(cache_path, fingerprint=fingerprint) as cache:
        records = trajectories_from_cache(cache)
    worst = max(abs(r["trajectory"][-1] - r["delta"]) for r in records)
    log.info("%s: %d variants; max |last lens layer - model delta| = %.3g", cache_path, len(records), worst)
    return records


def layer_statistics(trajectory) -> dict:
    """Summary of a trajectory [L] (delta > 0 counts as D, else C, as `behavior.action_of`).

    flip_layers: layers l >= 1 whose action differs from layer l - 1's. decision_layer:
    the first layer from which the action no longer changes (0 when it never flips).
    """
    traj = np.asarray(trajectory, dtype=np.float64)
    if traj.ndim != 1 or traj.size == 0:
        raise ValueError(f"trajectory must be a non-empty 1-D array, got shape {traj.shape}")
    defect = traj > 0
    flips = [int(l) for l in np.nonzero(defect[1:] != defect[:-1])[0] + 1]
    return {
        "mean_delta": float(traj.mean()),
        "std_delta": float(traj.std()),
        "final_delta": float(traj[-1]),
        "final_action": action_of(float(traj[-1])),
        "cooperate_layers": int((~defect).sum()),
        "defect_layers": int(defect.sum()),
        "flip_layers": flips,
        "decision_layer": flips[-1] if flips else 0,
    }


STAT_COLUMNS = ["model", "scenario", "variant", "n_layers", "mean_delta", "std_delta", "final_delta",
                "final_action", "cooperate_layers", "defect_layers", "n_flips", "flip_layers",
                "decision_layer", "model_delta", "lens_minus_model"]


def statistics_table(records) -> "pd.DataFrame":
    """statistics.csv rows (one per record of `trajectories_from_cache`); flip_layers is
    written as "3;7" (empty when none); lens_minus_model = final_delta - the model's delta."""
    import pandas as pd

    rows = []
    for rec in records:
        stats = layer_statistics(rec["trajectory"])
        rows.append({
            "model": rec["model"], "scenario": rec["scenario"], "variant": rec["variant"],
            "n_layers": len(rec["trajectory"]), **stats,
            "n_flips": len(stats["flip_layers"]),
            "flip_layers": ";".join(str(l) for l in stats["flip_layers"]),
            "model_delta": rec.get("delta", float("nan")),
            "lens_minus_model": stats["final_delta"] - rec.get("delta", float("nan")),
        })
    return pd.DataFrame(rows, columns=STAT_COLUMNS)


class LogitLensAnalyzer:
    """Logit lens on a `HookedModel` (one forward pass per prompt, same arrays as the cache)."""

    def __init__(self, model, action_tokens: dict | None = None):
        from ..tokens import get_action_token_ids

        self.model = model
        self.action_tokens = action_tokens or get_action_token_ids(model.tokenizer)
        self.readout = ActionReadout.from_model(model, self.action_tokens)

    def _variant(self, prompt):
        import torch

        from ..cache import collect_variant
        from ..tokens import decision_input_ids

        ids = prompt if not isinstance(prompt, str) else decision_input_ids(self.model.tokenizer, prompt, self.action_tokens)
        with torch.no_grad():
            return collect_variant(self.model, ids.to(self.model.device), self.action_tokens, self.model.name)

    def compute_action_trajectory(self, prompt) -> np.ndarray:
        """[n_layers] delta (D - C) after each block. `prompt`: text (chat template and
        action prefix are added) or decision input ids [1, T]."""
        data = self._variant(prompt)
        return trajectory_from_arrays(data["arrays"], data["attrs"], self.readout)

    @staticmethod
    def get_layer_statistics(trajectory) -> dict:
        return layer_statistics(trajectory)
