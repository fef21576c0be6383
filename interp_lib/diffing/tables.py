"""The activation-difference lens's tables over every (fine-tune, reference) pair: the per-pair
files concatenated, and the cosine similarities between the fine-tunes' differences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .adl import cosine_matrix, split_key

PARTS = ("differences", "tokens", "lora", "steering")
COSINE_COLUMNS = ["reference", "context", "state", "labelling", "layer", "model_a", "model_b", "cosine"]


def cosine_rows(vectors: dict[str, dict], reference: str) -> pd.DataFrame:
    """COSINE_COLUMNS rows: cosine similarities between the fine-tunes' decision-position
    differences against one reference, per (context, state, labelling) and layer, for every
    ordered pair of fine-tunes. vectors = {model: {group_key: [L, d]}} (jobs.adl.group_key)."""
    models = list(vectors)
    rows = []
    keys = sorted(set.intersection(*(set(v) for v in vectors.values()))) if vectors else []
    for key in keys:
        ctx, lab, state = split_key(key)
        stack = np.stack([vectors[m][key] for m in models])  # [m, L, d]
        for layer in range(stack.shape[1]):
            cos = cosine_matrix(stack[:, layer])
            rows += [{"reference": reference, "context": ctx, "state": state, "labelling": lab, "layer": layer,
                      "model_a": a,
                      "model_b": b, "cosine": cos[i, j]} for i, a in enumerate(models) for j, b in enumerate(models)]
    return pd.DataFrame(rows, columns=COSINE_COLUMNS)


def adl_tables(pair_dirs: dict[tuple[str, str], Path]) -> dict[str, pd.DataFrame]:
    """{part: the pairs' tables concatenated} for PARTS, plus "cosines"; `pair_dirs` maps
    (model, reference) -> the directory of its adl_pair job's files."""
    out = {}
    for part in PARTS:
        frames = [pd.read_csv(d / f"{part}.csv") for d in pair_dirs.values()]
        frames = [f for f in frames if len(f)]
        out[part] = pd.concat(frames, ignore_index=True) if frames else pd.read_csv(next(iter(pair_dirs.values())) /
                                                                                     f"{part}.csv")
    by_reference: dict[str, dict] = {}
    for (model, reference), d in pair_dirs.items():
        with np.load(d / "vectors.npz") as z:
            by_reference.setdefault(reference, {})[model] = {k: z[k] for k in z.files}
    frames = [cosine_rows(v, r) for r, v in by_reference.items()]
    out["cosines"] = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COSINE_COLUMNS)
    return out
