"""Model diffing's building blocks (interp_lib.diffing, jobs.adl, jobs.crosscoder) against naive
computations and hand cases; the workflow's outputs are tests/test_diffing_workflow.py's."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from interp_lib.analyses.logit_lens import ActionReadout
from interp_lib.diffing.adl import class_positions, cosine_matrix, difference_stats, lens_delta, span_alignment, \
    span_rank, top_tokens
from interp_lib.diffing.dataset import held_out_prompts
from interp_lib.diffing.tables import cosine_rows
from interp_lib.jobs.crosscoder import _pearson_ci, checked_latents, choose_layer


def test_difference_stats_equal_a_naive_paired_mean_and_bootstrap():
    rng = np.random.default_rng(0)
    n, L, d = 12, 3, 8
    ref = rng.normal(size=(n, L, d)).astype(np.float32)
    shift = np.zeros((L, d))
    shift[2, 0] = 3.0  # a real difference at layer 2 only
    model = (ref + shift + 0.1 * rng.normal(size=(n, L, d))).astype(np.float32)
    direction = rng.normal(size=d)
    st = difference_stats(model, ref, direction, n_resamples=300, seed=1)
    diff = model.astype(float) - ref.astype(float)
    np.testing.assert_allclose(st.mean, diff.mean(0), atol=1e-12)
    np.testing.assert_allclose(st.norm, [np.linalg.norm(diff[:, l].mean(0)) for l in range(L)], atol=1e-12)
    naive_noise = [np.sqrt(sum(np.var(diff[:, l, k], ddof=1) for k in range(d)) / n) for l in range(L)]
    np.testing.assert_allclose(st.noise_norm, naive_noise, rtol=1e-10)
    # the same resamples, drawn by hand
    draws = np.random.default_rng(1)
    norms = [np.linalg.norm(diff[draws.integers(0, n, n)].mean(0), axis=-1) for _ in range(300)]
    np.testing.assert_allclose(st.norm_low, np.minimum(np.percentile(norms, 2.5, axis=0), st.norm), atol=1e-12)
    assert st.norm_low[2] > st.noise_norm[2] and st.norm_low[0] < 3 * st.noise_norm[0]  # only layer 2 stands out
    np.testing.assert_allclose(st.reference_norm, np.linalg.norm(ref.astype(float), axis=-1).mean(0), rtol=1e-6)
    # a prompt with NaN (no position of its class) is dropped from both sides
    model[0, 0, 0] = np.nan
    assert difference_stats(model, ref, direction, 50).n == n - 1


def test_lens_delta_is_the_logit_lens_of_the_difference_as_a_residual():
    rng = np.random.default_rng(2)
    d = 6
    readout = ActionReadout(rng.normal(size=(2, d)), 1 + rng.random(d), 0.0, None)
    v = rng.normal(size=(4, d))
    # the final norm with eps 0 on v itself: logit D - logit C
    assert lens_delta(v, readout.direction) == pytest.approx(readout.delta(v), abs=1e-12)
    assert lens_delta(7.0 * v, readout.direction) == pytest.approx(lens_delta(v, readout.direction))  # size-free
    assert np.isnan(lens_delta(np.zeros(d), readout.direction))


def test_top_tokens_by_hand():
    W_U = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.5, 0.5]], dtype=np.float32)
    ids, logits = top_tokens(np.array([2.0, 1.0]), W_U, np.ones(2), 2)
    rms = np.sqrt((4 + 1) / 2)
    assert ids.tolist() == [[0, 3], [2, 1]]
    np.testing.assert_allclose(logits, [[2 / rms, 1.5 / rms], [-2 / rms, 1 / rms]], rtol=1e-6)


def test_span_alignment_by_hand():
    cols = np.zeros((4, 2))
    cols[0, 0], cols[1, 1] = 2.0, -3.0
    best, frac = span_alignment(np.array([3.0, 4.0, 0.0, 0.0]), cols)
    assert best == pytest.approx(0.8) and frac == pytest.approx(1.0)
    best, frac = span_alignment(np.array([1.0, 0.0, 1.0, 0.0]), cols)
    assert best == pytest.approx(1 / np.sqrt(2)) and frac == pytest.approx(1 / np.sqrt(2))
    assert span_rank(np.concatenate([cols, cols[:, :1] * 5], axis=1)) == 2
    assert np.isnan(span_alignment(np.ones(4), np.zeros((4, 0)))[0])


def test_cosine_matrix_and_rows():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    cos = cosine_matrix(a)
    assert cos[0, 1] == pytest.approx(1 / np.sqrt(2)) and cos[0, 0] == pytest.approx(1.0) and np.isnan(cos[2, 0])
    vectors = {"A": {"ipd|standard": np.array([[1.0, 0.0]])}, "B": {"ipd|standard": np.array([[0.0, 2.0]]),
                                                                  "x|swapped": np.ones((1, 2))}}
    rows = cosine_rows(vectors, "base")
    assert len(rows) == 4  # the keys both have, every ordered pair
    assert rows.set_index(["model_a", "model_b"])["cosine"][("A", "B")] == pytest.approx(0.0)


def test_position_classes():
    ids = np.array([1, 50, 7, 51, 9, 50])
    got = class_positions(ids, {50, 51})
    assert got["decision"].tolist() == [5] and got["action_mentions"].tolist() == [1, 3]
    assert got["prompt"].tolist() == [1, 2, 3, 4]


def test_held_out_prompts():
    prompts = [("s", v) for v in range(10)]
    held = held_out_prompts(prompts, 0.2, 0)
    assert len(held) == 2 and held == held_out_prompts(prompts, 0.2, 0) and held != held_out_prompts(prompts, 0.2, 1)
    assert len(held_out_prompts(prompts[:2], 0.9, 0)) == 1 and held_out_prompts(prompts[:1], 0.5, 0) == set()


def test_choose_layer():
    probes = pd.DataFrame({"model": ["A"] * 4 + ["B"] * 4, "target": "decision_both_labellings",
                           "layer": [0, 1, 2, 3] * 2, "accuracy": [0.5, 0.97, 1.0, 1.0, 0.5, 0.6, 0.96, 1.0]})
    assert choose_layer("auto", probes, ["A", "B"], 6)[0] == 2  # A from 1, B from 2
    assert choose_layer("auto", probes, ["A", "B"], 3)[0] == 1  # capped at n_layers - 2
    # a fine-tune without a probe (one class) is left out; none at all: the middle layer
    assert choose_layer("auto", probes, ["A", "C"], 6)[0] == 1
    assert choose_layer("auto", probes, ["C"], 6) == (3, "middle layer (the probes read no decision)")
    assert choose_layer(4, None, ["A"], 6) == (4, "diffing.crosscoder.layer")
    with pytest.raises(ValueError, match=r"^diffing.crosscoder.layer: 5 is not in 0-4"):
        choose_layer(5, None, ["A"], 6)


def test_pearson_interval_and_checked_latents():
    rng = np.random.default_rng(3)
    a = rng.normal(size=40)
    b = a + rng.normal(size=40)
    r, lo, hi = _pearson_ci(a, b)
    assert r == pytest.approx(np.corrcoef(a, b)[0, 1]) and lo < r < hi
    assert np.isnan(_pearson_ci(np.zeros(10), b[:10])[0])
    latents = pd.DataFrame({"class": ["shared", "moral-only", "fine-tune-only", "moral-only"],
                            "decision_frequency": [1.0, 0.5, 0.0, 0.2],
                            "decision_mean_activation": [9.0, 1.0, 5.0, 2.0]})
    assert checked_latents(latents, 5).index.tolist() == [3, 1]  # specific and firing at the decision, strongest first
    # too few specific latents: the live ones leaning most to the fine-tunes fill up, never a base-leaning one
    latents = pd.DataFrame({"class": ["shared", "moral-only", "shared", "shared", "dead"],
                            "decision_frequency": [1.0, 0.5, 0.3, 0.2, 0.0], "decision_mean_activation": 1.0,
                            "relative_norm_base": [0.6, 0.1, 1.0, 0.9, 0.0],
                            "relative_norm_A": [1.0, 1.0, 0.5, 1.0, 1.0], "relative_norm_B": [0.9, 0.2, 0.4, 1.0, 1.0]})
    assert checked_latents(latents, 5, "base").index.tolist() == [1, 0, 3]  # lean 0.35, then 0.1; #2 leans to base


def test_a_bad_crosscoder_layer_is_one_line_naming_the_key():
    from interp_lib.config import ConfigError, read_yaml, validate_config

    from conftest import REPO

    config = read_yaml(REPO / "config.yaml")
    config["diffing"]["crosscoder"]["layer"] = "middle"
    with pytest.raises(ConfigError, match=r"^config: diffing\.crosscoder\.layer: 'middle' is not one of \['auto'\]$"):
        validate_config(config)
    config["diffing"]["crosscoder"]["layer"] = 3
    assert validate_config(config)["diffing"]["crosscoder"]["layer"] == 3
