"""The crosscoder's data: every model's cached resid_post at one layer on the same tokens.

Rows are token positions of every prompt (every scenario, variant and labelling), position 0
(the BOS / attention-sink position, whose norm is orders larger) left out. Prompts share
their chat-template prefix, and a causal model's activations at a position depend only on the
tokens up to it, so the positions of a prefix already seen are the same vectors again: each
distinct prefix is kept once (the first prompt that has it). Whole prompts are held out for
evaluation (a seeded draw), and a held-out row is a position no training prompt has: held-out
rows are the unseen parts of unseen prompts, their decision positions among them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class TokenSet:
    """x [N, M, d] float32 (models in `models` order), rows: a frame of N rows (scenario,
    variant, labelling, position, token, decision (bool), held_out (bool)), deltas: a frame of
    one row per prompt (scenario, variant, labelling, held_out, and each model's delta), and
    n_positions: positions before removing repeated prefixes (BOS left out)."""

    x: np.ndarray
    rows: pd.DataFrame
    deltas: pd.DataFrame
    models: list
    n_positions: int


def held_out_prompts(prompts: list[tuple[str, int]], share: float, seed: int) -> set:
    """A seeded draw of round(share * n) prompts (at least one, never all when n > 1)."""
    n = len(prompts)
    k = min(max(1, round(share * n)), n - 1) if n > 1 else 0
    order = np.random.default_rng(seed).permutation(n)
    return {prompts[i] for i in order[:k]}


def collect_tokens(caches: dict[str, dict], layer: int, holdout: float, seed: int = 0,
                   fingerprints: dict | None = None) -> TokenSet:
    """TokenSet of resid_post[layer] from `caches` = {model: {scenario: cache file}} (every
    model the same scenarios, the same prompts). The held-out prompts are drawn from the prompts
    in (scenario, variant) order and read after the training prompts, so that a position whose
    prefix a training prompt has is a training row: every held-out row is unseen in training.
    Neither depends on the order of `caches`."""
    from ..cache import CacheError, CacheFile

    models = list(caches)
    scenarios = sorted(caches[models[0]])
    prompts = []
    for scenario in scenarios:
        with CacheFile(caches[models[0]][scenario], fingerprint=(fingerprints or {}).get(models[0])) as cache:
            prompts += [(scenario, v) for v in cache.variants]
    held = held_out_prompts(prompts, holdout, seed)
    blocks, rows, deltas, seen, n_positions = [], [], [], set(), 0
    for scenario, v in [p for p in prompts if p not in held] + [p for p in prompts if p in held]:
        files = [CacheFile(caches[m][scenario], fingerprint=(fingerprints or {}).get(m)) for m in models]
        try:
            groups = [f.group(v) for f in files]
            ids = np.asarray(groups[0]["input_ids"])
            for m, g in zip(models[1:], groups[1:]):
                if not np.array_equal(np.asarray(g["input_ids"]), ids):
                    raise CacheError(f"{caches[m][scenario]} variant {v} holds another prompt than "
                                     f"{caches[models[0]][scenario]}; rerun their caching jobs")
            T = len(ids)
            n_positions += T - 1
            keep = []
            digest = hashlib.sha1()
            digest.update(ids[:1].tobytes())
            for t in range(1, T):
                digest.update(ids[t:t + 1].tobytes())
                key = digest.copy().hexdigest()
                if key not in seen:
                    seen.add(key)
                    keep.append(t)
            labelling = files[0].labelling(v)
            out = (scenario, v) in held
            deltas.append({"scenario": scenario, "variant": v, "labelling": labelling, "held_out": out,
                           **{m: float(g.attrs["delta"]) for m, g in zip(models, groups)}})
            if not keep:
                continue
            blocks.append(np.stack([np.asarray(g["resid_post"][layer], dtype=np.float32)[keep] for g in groups],
                                   axis=1))
            texts = files[0].token_texts(v)
            rows.append(pd.DataFrame({"scenario": scenario, "variant": v, "labelling": labelling,
                                      "position": keep, "token": [texts[t] for t in keep],
                                      "decision": [t == T - 1 for t in keep], "held_out": out}))
        finally:
            for f in files:
                f.close()
    return TokenSet(np.concatenate(blocks), pd.concat(rows, ignore_index=True), pd.DataFrame(deltas), models,
                    n_positions)
