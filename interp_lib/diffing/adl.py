"""Activation-difference lens (ADL; Minder et al. 2025, arXiv 2510.13900) from the cache.

For a fine-tune F and a reference R (the base, or the Game model) run on the same prompts,
the difference of `resid_post` per prompt, x_F(p) - x_R(p) [L, d], is averaged over prompts
at each position class (POSITION_CLASSES). Each mean difference delta [L, d] carries:

- its norm with a 95% bootstrap interval over prompts, and the noise norm
  sqrt(sum_d var_d / n), the norm a mean of n differences with the same spread but no common
  direction would have: a difference no larger than that is not distinguishable from noise;
- the logit lens of the difference: (W_U[D] - W_U[C]) . (g * delta) / rms(delta), the
  pre-softcap delta that the difference, put through the final norm (gain g) as if it were the
  residual stream, writes (> 0 = towards Defect, in the tokens of the prompts' labelling); it
  does not depend on the difference's size. Read in meaning across the two labellings: the
  same sign in both = a decision, opposite signs = a token preference;
- the top tokens it promotes and suppresses through the whole unembedding.

Differences are taken over a context's prompts pooled and, where they show several states
(the last moves), over each state's prompts alone (state_groups): a conditional policy writes
opposite differences in different states, and their mean can read as nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSITION_CLASSES = ("decision", "action_mentions", "prompt")
N_RESAMPLES = 200  # each resample is a [L, d] mean; the interval is on its norm and lens readout
CONFIDENCE = 0.95
ALL_STATES = "all"  # the state column of a difference pooled over every state of its context
STATE_SEPARATOR = " | "  # between a steering run's name and its state (steering_name)


def group_key(context: str, labelling: str, state: str = ALL_STATES) -> str:
    """The key of a group's decision-class difference in vectors.npz: "context|labelling", and
    "context|labelling|state" for one state's."""
    return f"{context}|{labelling}" if state == ALL_STATES else f"{context}|{labelling}|{state}"


def split_key(key: str) -> tuple[str, str, str]:
    """(context, labelling, state) of a group_key."""
    ctx, lab, *state = key.split("|")
    return ctx, lab, state[0] if state else ALL_STATES


def steering_name(model: str, reference: str, state: str = ALL_STATES) -> str:
    """The `steering` column of the ADL's steering rows: "ADL <model> - <reference>", with
    " | <state>" for a state's run."""
    name = f"ADL {model} - {reference}"
    return name if state == ALL_STATES else f"{name}{STATE_SEPARATOR}{state}"


def steering_state(name: str) -> str:
    """The state of a steering_name (ALL_STATES for a pooled run)."""
    return name.split(STATE_SEPARATOR, 1)[1] if STATE_SEPARATOR in name else ALL_STATES


def state_groups(idx: np.ndarray, state: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """[(state, prompt indices)]: every prompt of the group pooled (ALL_STATES), then each of
    its states on its own where it has more than one: a state-dependent policy (tit-for-tat
    cooperates after C and defects after D) writes differences that a mean over states cancels."""
    groups = [(ALL_STATES, idx)]
    found = sorted(set(state[idx]))
    if len(found) > 1:
        groups += [(s, idx[state[idx] == s]) for s in found]
    return groups


@dataclass
class ClassActivations:
    """One model's activations averaged per prompt over each position class: acts[cls]
    [n, L, d] float32 (NaN rows where a prompt has no position of that class), and per
    prompt its scenario, variant, labelling, delta (> 0 = Defect) and action token ids [n, 2]
    (C, D in its labelling)."""

    acts: dict
    scenario: np.ndarray
    variant: np.ndarray
    labelling: np.ndarray
    delta: np.ndarray
    action_ids: np.ndarray

    def keys(self) -> list[tuple[str, int]]:
        return list(zip(self.scenario, self.variant))


def class_positions(input_ids: np.ndarray, action_ids: set[int]) -> dict[str, np.ndarray]:
    """Positions of each class in a prompt of T tokens: decision = the last; action_mentions =
    earlier positions holding an action token; prompt = every position but the first (the
    BOS / attention-sink position, whose huge norm would swamp the mean) and the last."""
    T = len(input_ids)
    earlier = np.arange(1, T - 1)
    return {"decision": np.array([T - 1]),
            "action_mentions": earlier[np.isin(input_ids[1:T - 1], list(action_ids))],
            "prompt": earlier}


def read_class_activations(paths: dict, key: str = "resid_post", fingerprint: str | None = None) -> ClassActivations:
    """`key` ([L, T, d]) of every variant of every cache file (`paths`: scenario -> file), averaged
    over each class's positions."""
    from ..cache import CacheError, CacheFile

    acts = {c: [] for c in POSITION_CLASSES}
    scenario, variant, labelling, delta, action_ids = [], [], [], [], []
    for name, path in paths.items():
        with CacheFile(path, fingerprint=fingerprint) as cache:
            for v in cache.variants:
                group = cache.group(v)
                ids = np.asarray(group["input_ids"])
                if int(group.attrs["decision_position"]) != len(ids) - 1:
                    raise CacheError(f"{path} variant {v}: the decision is not the last position")
                x = np.asarray(group[key], dtype=np.float32)  # [L, T, d]
                tokens = cache.action_tokens(v)
                action_ids.append((tokens["C"], tokens["D"]))
                for cls, pos in class_positions(ids, set(tokens.values())).items():
                    acts[cls].append(x[:, pos].mean(1) if len(pos) else np.full((x.shape[0], x.shape[2]), np.nan,
                                                                                 np.float32))
                scenario.append(name)
                variant.append(v)
                labelling.append(cache.labelling(v))
                delta.append(float(group.attrs["delta"]))
    if not scenario:
        raise CacheError(f"no prompts in {', '.join(map(str, paths.values())) or 'no cache files'}")
    return ClassActivations({c: np.stack(a) for c, a in acts.items()}, np.array(scenario, dtype=object),
                            np.array(variant), np.array(labelling, dtype=object), np.array(delta),
                            np.array(action_ids, dtype=np.int64))


def lens_delta(vectors: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """[...] logit lens of difference vectors [..., d]: direction . v / rms(v), direction =
    (W_U[D] - W_U[C]) * final-norm gain (ActionReadout.direction); NaN for a zero vector."""
    v = np.asarray(vectors, dtype=np.float64)
    rms = np.sqrt((v * v).mean(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rms > 0, v @ direction / np.where(rms > 0, rms, 1), np.nan)


@dataclass
class DifferenceStats:
    """mean [L, d]; per layer [L]: norm, its interval, noise_norm, the reference's mean
    activation norm, lens (lens_delta) and its interval; n prompts."""

    mean: np.ndarray
    norm: np.ndarray
    norm_low: np.ndarray
    norm_high: np.ndarray
    noise_norm: np.ndarray
    reference_norm: np.ndarray
    lens: np.ndarray
    lens_low: np.ndarray
    lens_high: np.ndarray
    n: int


def difference_stats(model: np.ndarray, reference: np.ndarray, direction: np.ndarray,
                     n_resamples: int = N_RESAMPLES, seed: int = 0) -> DifferenceStats:
    """Statistics of the mean of model - reference ([n, L, d] each, rows paired by prompt;
    rows with NaN dropped). Percentile intervals over resampled prompts; NaN below 2 prompts."""
    keep = np.isfinite(model).all((1, 2)) & np.isfinite(reference).all((1, 2))
    diff = (model[keep].astype(np.float64) - reference[keep].astype(np.float64))
    n, L = diff.shape[0], model.shape[1]
    nan = np.full(L, np.nan)
    if n == 0:
        return DifferenceStats(np.full(model.shape[1:], np.nan), nan, nan, nan, nan, nan, nan, nan, nan, 0)
    mean = diff.mean(0)
    norm = np.linalg.norm(mean, axis=-1)
    lens = lens_delta(mean, direction)
    ref_norm = np.linalg.norm(reference[keep].astype(np.float64), axis=-1).mean(0)
    if n < 2:
        return DifferenceStats(mean, norm, nan, nan, nan, ref_norm, lens, nan, nan, n)
    noise = np.sqrt(diff.var(0, ddof=1).sum(-1) / n)
    rng = np.random.default_rng(seed)
    tail = 100 * (1 - CONFIDENCE) / 2
    norms, lenses = np.empty((n_resamples, L)), np.empty((n_resamples, L))
    for b in range(n_resamples):  # one [L, d] mean at a time: memory stays at one mean
        m = diff[rng.integers(0, n, n)].mean(0)
        norms[b], lenses[b] = np.linalg.norm(m, axis=-1), lens_delta(m, direction)
    nlo, nhi = np.percentile(norms, [tail, 100 - tail], axis=0)
    llo, lhi = np.nanpercentile(lenses, [tail, 100 - tail], axis=0)
    return DifferenceStats(mean, norm, np.minimum(nlo, norm), np.maximum(nhi, norm), noise, ref_norm, lens,
                           np.minimum(llo, lens), np.maximum(lhi, lens), n)


def top_tokens(vector: np.ndarray, W_U: np.ndarray, gain: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids [2, k] (promoted, suppressed) and their logits [2, k] of a difference
    vector [d] through the final-norm gain and the unembedding W_U [V, d] (rms-normalised, as
    lens_delta)."""
    v = np.asarray(vector, dtype=np.float64)
    logits = W_U @ (v * gain / np.sqrt((v * v).mean())).astype(W_U.dtype)  # W_U's dtype: no widened copy
    order = np.argsort(logits)
    ids = np.stack([order[::-1][:k], order[:k]])
    return ids, logits[ids]


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """[m, m] cosine similarities of vectors [m, d] (NaN where one is zero)."""
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (v @ v.T) / np.outer(norms, norms)


def span_alignment(vector: np.ndarray, columns: np.ndarray) -> tuple[float, float]:
    """(max |cos| of vector [d] with any column of columns [d, r], the fraction ||P v|| / ||v||
    of it inside their span); (NaN, NaN) without columns. A random direction's span fraction
    is about sqrt(rank / d)."""
    if columns.size == 0 or not np.linalg.norm(vector):
        return float("nan"), float("nan")
    v = np.asarray(vector, dtype=np.float64)
    c = np.asarray(columns, dtype=np.float64)
    cols = c / np.linalg.norm(c, axis=0, keepdims=True).clip(1e-300)
    best = float(np.abs(cols.T @ v).max() / np.linalg.norm(v))
    basis = _basis(c)
    return best, float(np.linalg.norm(basis.T @ v) / np.linalg.norm(v))


def _basis(columns: np.ndarray) -> np.ndarray:
    """[d, rank] orthonormal basis of the columns' span (singular values > 1e-10 of the largest)."""
    u, s, _ = np.linalg.svd(columns, full_matrices=False)
    return u[:, s > 1e-10 * s.max()] if s.size and s.max() > 0 else u[:, :0]


def span_rank(columns: np.ndarray) -> int:
    """Numerical rank of columns [d, r] (as span_alignment counts it)."""
    return 0 if columns.size == 0 else _basis(np.asarray(columns, dtype=np.float64)).shape[1]
