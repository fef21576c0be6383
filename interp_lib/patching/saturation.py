"""Where a progressive path-patching curve saturates (numpy and pandas only, so that the
table and figure jobs load no torch).

A curve is one start layer a and site: E(b) = delta_change of the range [a, b] for
b = a..L-1, of one prompt or a mean over prompts; F = E(L-1), the full range [a, L-1].
With tol = max(SATURATION_FRACTION x |F|, NOISE_MULTIPLE x noise floor), the saturation
layer is the smallest b such that |E(b') - F| <= tol for every b' >= b: from there on,
lengthening the range moves the effect by at most 10% of the full range's effect (or by
no more than noise). It always exists (b = L-1 qualifies). A curve that leaves the band and
comes back saturates only where it comes back for good. Where F itself is within the noise
band, the layer says only where the curve settles into noise (flag it: below_noise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..noise import NOISE_MULTIPLE

SATURATION_FRACTION = 0.1
CURVE_KEYS = ["experiment", "scenario", "variant", "labelling", "positions", "site", "layer_from"]


def saturation_tolerance(full: float, floor: float, fraction: float = SATURATION_FRACTION) -> float:
    """max(fraction x |full|, NOISE_MULTIPLE x floor); an unknown (NaN) floor counts as 0."""
    band = NOISE_MULTIPLE * floor if math.isfinite(floor) else 0.0
    return max(fraction * abs(full), band)


def saturation_layer(layers_to: Sequence[int], effects: Sequence[float], floor: float,
                     fraction: float = SATURATION_FRACTION) -> int:
    """The saturation layer (module doc) of a curve: `effects[i]` is the effect of the range
    ending at `layers_to[i]`; the longest range's is the full one."""
    order = np.argsort(np.asarray(layers_to))
    b = np.asarray(layers_to)[order]
    e = np.asarray(effects, dtype=float)[order]
    if not len(b):
        raise ValueError("saturation_layer: an empty curve")
    tol = saturation_tolerance(e[-1], floor, fraction)
    outside = np.nonzero(~(np.abs(e - e[-1]) <= tol))[0]  # NaN effects count as outside
    return int(b[outside[-1] + 1]) if len(outside) else int(b[0])


def with_saturation(df, keys: Sequence[str] = CURVE_KEYS, value: str = "delta_change", floor: str = "noise_floor"):
    """`df` (one row per range, the `keys` of CURVE_KEYS it has identifying a curve) with
    full_delta_change (the curve's longest range), saturation_layer and saturated
    (layer_to >= saturation_layer) added; the floor is the curve's largest `floor`."""
    keys = [k for k in keys if k in df.columns]
    out = df.reset_index(drop=True)
    full, sat = np.full(len(out), np.nan), np.zeros(len(out), dtype=int)
    for _, g in out.groupby(keys, sort=False):
        idx = g.index.to_numpy()
        longest = g["layer_to"].to_numpy().argmax()
        full[idx] = g[value].iat[longest]
        sat[idx] = saturation_layer(g["layer_to"].to_numpy(), g[value].to_numpy(float), float(g[floor].max()))
    out["full_delta_change"] = full
    out["saturation_layer"] = sat
    out["saturated"] = out["layer_to"].to_numpy() >= sat
    return out
