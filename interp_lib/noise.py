"""When an effect is indistinguishable from numerical noise.

A prompt's noise floor is the largest deviation, in runs that must change nothing, of
the quantity an analysis reports (`patching.noise_floor` for patched deltas). An effect
within NOISE_MULTIPLE times the floor is flagged, not ranked.
"""

from __future__ import annotations

import math

NOISE_MULTIPLE = 3.0


def largest_floor(table) -> float:
    """The largest `noise_floor` among a results table's rows (a DataFrame); NaN when it has
    no such column or only NaN there."""
    if "noise_floor" not in table or table["noise_floor"].isna().all():
        return math.nan
    return float(table["noise_floor"].max())


def noise_band(floor: float) -> float:
    """Half-width of the band of effects indistinguishable from noise (NaN floor: NaN)."""
    return NOISE_MULTIPLE * floor


def below_noise(value: float, floor: float) -> bool:
    """|value| <= NOISE_MULTIPLE * floor (False when the floor is unknown)."""
    return bool(math.isfinite(floor) and abs(value) <= noise_band(floor))
