"""Steering: the batched, truncated runner against the naive reference (one full forward pass
with one hook that adds the vector), the invariants it must keep, and the directions
against means computed by hand."""

import numpy as np
import pandas as pd
import pytest
import torch

from interp_lib.model.hooked import HookedModel
from interp_lib.patching import PromptActivations
from interp_lib.cache.decision_activations import DecisionActivations
from interp_lib.steering import (DirectionError, decision_difference, model_difference,
                                 random_controls, steered_deltas)
from test_hooked import tiny_gemma2

TOKENS = {"C": 5, "D": 7}
ROWS = [TOKENS["C"], TOKENS["D"]]
ALPHAS = [-2.0, 0.0, 1.0, 3.0]


@pytest.fixture(scope="module")
def case():
    model = HookedModel(tiny_gemma2())
    torch.manual_seed(4)
    ids = torch.randint(0, 97, (1, 22))  # longer than the sliding window (8)
    prompt = PromptActivations.from_run(model, ids, TOKENS)
    vectors = torch.randn(2, model.n_layers, model.cfg.d_model)  # a direction and a control
    return model, ids, prompt, vectors


def naive_delta(model, ids, site, layer, vector, alpha, positions) -> float:
    """One full forward pass from the tokens with a single hook adding alpha * vector."""
    def add(value, name):
        value = value.clone()
        if positions == "all":
            value += alpha * vector
        else:
            value[:, -1] += alpha * vector
        return value

    hook = f"blocks.{layer}.hook_resid_pre" if site == "resid_pre" else f"blocks.{layer}.hook_mlp_out"
    logits = model.run_with_hooks(ids, [(hook, add)], rows=ROWS, last_only=True)
    return float(logits[0, 1] - logits[0, 0])


@pytest.mark.parametrize("site", ["resid_pre", "mlp_out"])
@pytest.mark.parametrize("positions", ["all", "decision"])
def test_runner_equals_naive(case, site, positions):
    model, ids, prompt, vectors = case
    layers = list(range(model.n_layers))
    want = np.array([[[naive_delta(model, ids, site, layer, vectors[k, layer], a, positions) for a in ALPHAS]
                      for layer in layers] for k in range(2)])
    # the premise: steering moves delta well beyond the tolerance
    assert np.abs(want - prompt.delta).max() > 0.05
    for max_rows in (None, 7, 1000):  # one layer per pass, chunks across layers, one pass
        got = steered_deltas(model, prompt, ROWS, vectors, layers, ALPHAS, site, positions, max_rows)
        assert got.shape == (2, len(layers), len(ALPHAS))
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=0, err_msg=f"max_rows={max_rows}")


@pytest.mark.parametrize("site", ["resid_pre", "mlp_out"])
@pytest.mark.parametrize("positions", ["all", "decision"])
def test_alpha_zero_reproduces_the_clean_delta(case, site, positions):
    model, _, prompt, vectors = case
    got = steered_deltas(model, prompt, ROWS, vectors, [0, 2, 3], [0.0], site, positions)
    np.testing.assert_allclose(got, prompt.delta, atol=1e-5, rtol=0)


@pytest.mark.parametrize("positions", ["all", "decision"])
def test_mlp_out_at_a_layer_is_resid_pre_at_the_next(case, positions):
    """resid_pre[l + 1] = resid_mid[l] + mlp_out[l]: adding v to either is the same run."""
    model, _, prompt, vectors = case
    v = vectors[:1, :1].expand(1, model.n_layers, -1)  # the same vector at every layer
    mlp = steered_deltas(model, prompt, ROWS, v, [0, 1, 2], ALPHAS, "mlp_out", positions)
    resid = steered_deltas(model, prompt, ROWS, v, [1, 2, 3], ALPHAS, "resid_pre", positions)
    np.testing.assert_allclose(mlp, resid, atol=2e-5, rtol=0)


def test_decision_only_differs_from_all_positions(case):
    """Steering every position reaches the decision through attention too: a different run
    (a check that the positions setting is not ignored)."""
    model, _, prompt, vectors = case
    every = steered_deltas(model, prompt, ROWS, vectors[:1], [0], [3.0], "resid_pre", "all")
    last = steered_deltas(model, prompt, ROWS, vectors[:1], [0], [3.0], "resid_pre", "decision")
    assert abs(float((every - last).item())) > 1e-3


def test_bad_site_and_positions_are_named(case):
    model, _, prompt, vectors = case
    with pytest.raises(ValueError, match="steering site must be one of resid_pre, mlp_out, got 'attn_out'"):
        steered_deltas(model, prompt, ROWS, vectors, [0], [1.0], "attn_out")
    with pytest.raises(ValueError, match="steering positions must be one of all, decision, got 'first'"):
        steered_deltas(model, prompt, ROWS, vectors, [0], [1.0], "resid_pre", "first")


def _site(seed, n, shift=0.0, delta=None):
    rng = np.random.default_rng(seed)
    acts = rng.standard_normal((n, 3, 5)) + shift
    delta = np.asarray(delta if delta is not None else rng.standard_normal(n))
    return DecisionActivations(acts, np.array(["S"] * n, dtype=object), np.arange(1, n + 1),
                               np.array(["standard"] * n, dtype=object), delta)


def test_model_difference_is_the_difference_of_means():
    source, reference = _site(1, 6, shift=1.0, delta=[-2.0] * 6), _site(2, 4, delta=[3.0] * 4)
    d = model_difference(source, reference, "PT3", "PT2")
    want = source.acts.sum(0) / 6 - reference.acts.sum(0) / 4
    np.testing.assert_allclose(d.vectors, want, atol=1e-12)
    assert d.expected_sign == -1  # the source defects less: steering towards it lowers delta
    assert (d.n_plus, d.n_minus) == (6, 4)
    assert d.description == "mean(PT3) - mean(PT2)"
    norms = np.concatenate([np.linalg.norm(source.acts, axis=-1), np.linalg.norm(reference.acts, axis=-1)]).mean(0)
    np.testing.assert_allclose(d.activation_norm, norms)


def test_decision_difference_points_to_defect():
    acts = _site(3, 5, delta=[1.0, -1.0, 2.0, -0.5, 0.3])
    d = decision_difference(acts, "PT4")
    defect = np.array([True, False, True, False, True])
    np.testing.assert_allclose(d.vectors, acts.acts[defect].mean(0) - acts.acts[~defect].mean(0), atol=1e-12)
    assert (d.expected_sign, d.n_plus, d.n_minus) == (1, 3, 2)


def test_decision_difference_of_a_constant_policy_is_refused():
    with pytest.raises(DirectionError, match="PT2 answers Defect on all 3 prompts of S; a decision direction"):
        decision_difference(_site(4, 3, delta=[1.0, 2.0, 3.0]), "PT2")


def test_random_controls_have_the_direction_norm_per_layer():
    d = model_difference(_site(5, 4, shift=2.0), _site(6, 4))
    controls = random_controls(d, 3, seed=0)
    assert controls.shape == (3, 3, 5)
    np.testing.assert_allclose(np.linalg.norm(controls, axis=-1), np.broadcast_to(d.norms, (3, 3)))
    np.testing.assert_array_equal(controls, random_controls(d, 3, seed=0))  # seeded
    cos = (controls * d.vectors).sum(-1) / (np.linalg.norm(controls, axis=-1) * d.norms)
    assert np.abs(cos).max() < 0.99  # not the direction itself


def _results(effects: dict, control: dict, floor: float = 1e-3, n: int = 4, labelling: str = "standard"):
    """A steering results table by hand: per layer, n prompts whose delta changes by
    effects[layer] (+- 0.1) at alpha 2 (half that at alpha 1), the control by control[layer]."""
    from interp_lib.steering.directions import MAIN
    rows = []
    for layer, effect in effects.items():
        for direction, value in ((MAIN, effect), ("random 1", control[layer])):
            for v in range(n):
                for alpha in (0.0, 1.0, 2.0):
                    change = value * alpha / 2 + (0.1 * (v - (n - 1) / 2) if alpha else 0.0)
                    rows.append(dict(steering="s", target="T", scenario="S", labelling=labelling, variant=v + 1,
                                     site="resid_pre", positions="all", direction=direction, layer=layer,
                                     alpha=alpha, expected_sign=-1, direction_norm=2.0 + layer,
                                     activation_norm=4.0, baseline_delta=3.0, delta=3.0 + change,
                                     delta_change=change, baseline_p_defect=0.95, p_defect=1 / (1 + np.exp(-3 - change)),
                                     p_defect_change=1 / (1 + np.exp(-3 - change)) - 0.95,
                                     flipped=3.0 + change < 0, noise_floor=floor, in_sample=True))
    import pandas as pd
    return pd.DataFrame(rows)


def test_layer_ranking_labels_noise_and_control_and_ranks_the_rest():
    from interp_lib.steering.summary import best_layer, layer_ranking, ranking_alpha
    results = _results({0: 0.002, 1: -6.0, 2: -1.0, 3: 2.0, 4: -4.0}, {0: 0.0, 1: -0.5, 2: 1.5, 3: 0.1, 4: 0.2})
    table = layer_ranking(results)
    by = table.set_index("layer")
    assert ranking_alpha(results["alpha"]) == 2.0 and (table["alpha"] == 2.0).all()
    np.testing.assert_allclose(by.loc[1, "effect"], -6.0, atol=1e-12)  # the mean over the 4 prompts
    assert by.loc[0, "status"] == "below noise"  # |0.002| <= 3 x 1e-3
    assert by.loc[2, "status"] == "within control"  # |-1.0| <= |1.5|
    # ranked by effect x expected sign (-1): layer 1 lowers delta most; layer 3 raises it
    assert list(table.loc[table["status"] == "ranked", "layer"]) == [1, 4]
    assert by.loc[3, "status"] == "against expected" and pd.isna(by.loc[3, "rank"])
    assert list(table["rank"].dropna()) == [1, 2]
    assert best_layer(table) == 1
    assert by.loc[1, "ci_low"] < -6.0 < by.loc[1, "ci_high"]
    assert by.loc[1, "control_effect"] == pytest.approx(-0.5)
    assert by.loc[3, "relative_norm"] == pytest.approx(5.0 / 4.0)
    # the swapped labelling is kept out of a ranking that has standard prompts
    both = pd.concat([results, _results({1: 9.0}, {1: 0.0}, labelling="swapped")])
    assert layer_ranking(both).set_index("layer").loc[1, "effect"] == pytest.approx(-6.0)
    # at a negative alpha the expected change flips sign: the same layers rank first
    negative = results.assign(alpha=-results["alpha"], delta_change=-results["delta_change"])
    at_minus = layer_ranking(negative, alpha=-2.0)
    assert list(at_minus.loc[at_minus["status"] == "ranked", "layer"]) == [1, 4]


def test_gpu_rows_per_pass_come_from_patchings_budget_not_the_drivers_free_memory(monkeypatch):
    """On a GPU, steering sizes its passes with interp_lib.model.gpu_rows (the device's memory less
    this process's, the same budget as patching; a row patches no head outputs), never with
    torch.cuda.mem_get_info, whose figure moves with other processes."""
    from types import SimpleNamespace

    from interp_lib.model import gpu_rows
    from interp_lib.steering import steer

    hooked = HookedModel(tiny_gemma2())
    budgets = []
    monkeypatch.setattr(gpu_rows, "device_budget_bytes", lambda device: budgets[-1])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: pytest.fail("mem_get_info was called"))
    target = SimpleNamespace(resid_pre=SimpleNamespace(device=torch.device("cuda"), shape=(4, 210, 64)))
    rows = {}
    for budget in (1e5, 1e7, 1e9, 1e12):
        budgets.append(budget)
        rows[budget] = steer.default_max_rows(hooked, target, 6, "all")
    d_mlp = hooked.model.config.intermediate_size
    per_row = gpu_rows.patch_row_bytes(hooked.cfg, d_mlp, 210, "all", head_site="z")
    assert per_row == 4 * 210 * (12 * 64 + 3 * 96 + 2 * 4 * 210)
    assert rows[1e5] == 6  # at least one layer's rows
    assert rows[1e9] == 1 << (int(0.5 * 1e9 // per_row).bit_length() - 1)  # a power of two
    assert rows[1e12] == gpu_rows.MAX_GPU_BATCH_SIZE
    assert list(rows.values()) == sorted(rows.values())
    cpu = SimpleNamespace(resid_pre=SimpleNamespace(device=torch.device("cpu"), shape=(4, 210, 64)))
    assert steer.default_max_rows(hooked, cpu, 6, "all") == 6
