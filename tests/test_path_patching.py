"""Path patching (block outputs over layer ranges) against the naive reference: one full
forward pass of the target per range, with hooks on hook_attn_out / hook_mlp_out writing the
source's own cached values; the saturation rule on hand-built curves."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from interp_lib.patching import (PATH_SITES, PatchRunner, PromptActivations, noise_floor, path_noise_floor, path_sweep,
                                 progressive_ranges, range_components, saturation_layer, start_layers,
                                 with_saturation)
from interp_lib.reference import naive_range_patched_delta
from test_hooked import tiny, tiny_gemma2, tiny_gemma3
from test_patching import TOKENS, lora_like_pair

FAMILIES = {"gemma2": tiny_gemma2, "gemma3": tiny_gemma3, "llama": lambda: tiny(LlamaConfig, LlamaForCausalLM)}


def _W_O(model):
    return torch.stack([model.W_O(layer) for layer in range(model.n_layers)])


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    torch.manual_seed(1)
    target, source = lora_like_pair(FAMILIES[request.param], seed=5)
    ids = torch.randint(0, 97, (1, 22))
    _, cache = source.run_with_cache(ids, last_only=True)
    return target, source, ids, cache


@pytest.mark.parametrize("positions", ["all", "decision"])
def test_every_range_equals_a_full_forward_pass_with_hooks_on_the_block_outputs(family, positions):
    """attn_out patched as all of a layer's heads (hook_result, the source's z_h @ W_O[h], the
    target's own post-attention norm recomputed) equals writing the source's hook_attn_out."""
    target, source, ids, cache = family
    src = PromptActivations.from_run(source, ids, TOKENS)
    tgt = PromptActivations.from_run(target, ids, TOKENS)
    L = target.n_layers
    starts = range(L) if L <= 4 else [0, L // 2]  # Gemma-3's 6 layers: two starts suffice
    results = {}
    for batch_size in (None, 3):
        runner = PatchRunner(target, _W_O(source), TOKENS, positions, "result", batch_size=batch_size)
        results[batch_size] = path_sweep(runner, src, tgt, starts=starts)
        assert len(results[batch_size]) == 3 * len(progressive_ranges(L, starts))
    for r, r3 in zip(results[None], results[3]):
        expected = naive_range_patched_delta(target, ids, cache, r.site, r.layer_from, r.layer_to, positions, TOKENS)
        assert abs(r.patched_delta - expected) < 2e-5, (r.site, r.layer_from, r.layer_to)
        assert abs(r3.patched_delta - expected) < 2e-5, (r.site, r.layer_from, r.layer_to, "batches of 3")
    changes = np.array([r.delta_change for r in results[None]])
    assert np.abs(changes).max() > 0.01  # 500 x the tolerance: the comparison means something
    # both block outputs of every layer: the source itself, also at the decision position alone,
    # whose final residual is the embedding plus every block output there
    both = [r for r in results[None] if r.site == "both" and (r.layer_from, r.layer_to) == (0, L - 1)]
    assert abs(both[0].patched_delta - src.delta) < 1e-5 and abs(src.delta - tgt.delta) > 1e-3


def test_resid_post_over_a_range_is_its_last_layer_alone(family):
    """Why resid_post is no site: at the same positions, layer b's write overrides layers a..b-1's."""
    target, _, ids, cache = family
    L = target.n_layers

    def patched(layers):
        def hook(act, name):
            act = act.clone()
            act[0] = cache[name][0]
            return act
        logits = target.run_with_hooks(ids, [(f"blocks.{l}.hook_resid_post", hook) for l in layers], last_only=True)
        return float(logits[0, TOKENS["D"]] - logits[0, TOKENS["C"]])

    assert patched(range(0, L - 1)) == pytest.approx(patched([L - 2]), abs=1e-6)
    assert abs(patched([0]) - patched([L - 2])) > 1e-3  # different layers alone do differ


@pytest.mark.parametrize("positions", ["all", "decision"])
def test_noise_floor_rides_in_the_sweeps_batches(family, positions):
    target, source, ids, _ = family
    src = PromptActivations.from_run(source, ids, TOKENS)
    tgt = PromptActivations.from_run(target, ids, TOKENS)
    runner = PatchRunner(target, _W_O(source), TOKENS, positions, "result", batch_size=4)
    controls: list = []
    results = path_sweep(runner, src, tgt, starts=[0, 1], controls=controls)
    n_sets = len(results)
    assert len(controls) >= math.ceil(n_sets / 3)  # one unpatched row in every batch of <= 3 sets
    floor = noise_floor(runner, tgt, _W_O(target), controls)
    assert 0 <= floor < 1e-5
    path_floor = path_noise_floor(runner, tgt, _W_O(target), [0, 1], controls)
    assert path_floor == path_noise_floor(runner, tgt, _W_O(target), [0, 1], controls, component_floor=floor)
    assert floor <= path_floor < 1e-5
    assert max(abs(r.delta_change) for r in results) > 1e4 * max(path_floor, 1e-9)
    # the full-range self-patches are the target's own block outputs: they change nothing
    assert path_noise_floor(runner, tgt, _W_O(target), [0, 1], [], component_floor=0.0) < 1e-5


def test_path_sweep_needs_result_site_and_the_same_prompt(family):
    target, source, ids, _ = family
    src = PromptActivations.from_run(source, ids, TOKENS)
    tgt = PromptActivations.from_run(target, ids, TOKENS)
    with pytest.raises(ValueError, match="head_site='result'"):
        path_sweep(PatchRunner(target, None, TOKENS, "all", "z"), src, tgt, [0])
    other = PromptActivations.from_run(source, torch.randint(0, 97, (1, 22)), TOKENS)
    with pytest.raises(ValueError, match="different token ids"):
        path_sweep(PatchRunner(target, _W_O(source), TOKENS, "all", "result"), other, tgt, [0])


def test_ranges_components_and_start_layers():
    assert progressive_ranges(4, [0, 2]) == [(0, 0), (0, 1), (0, 2), (0, 3), (2, 2), (2, 3)]
    assert [c.name for c in range_components("attn_out", 1, 2, 2)] == ["L1H0", "L1H1", "L2H0", "L2H1"]
    assert [c.name for c in range_components("mlp_out", 1, 2, 2)] == ["L1_MLP", "L2_MLP"]
    assert [c.name for c in range_components("both", 3, 3, 2)] == ["L3H0", "L3H1", "L3_MLP"]
    assert PATH_SITES == ("attn_out", "mlp_out", "both")
    with pytest.raises(ValueError, match="site must be one of"):
        range_components("resid_post", 0, 1, 2)
    assert start_layers(30, 4) == [0, 7, 15, 22]
    assert start_layers(18, 4) == [0, 4, 9, 13]
    assert start_layers(4, 4) == [0, 1, 2, 3] == start_layers(4, 10)
    assert start_layers(26, 1) == [0]
    assert start_layers(26, [20, 0, 20]) == [0, 20]
    with pytest.raises(ValueError, match=r"path_patch_starts: layer 26 is not a layer of this model \(0..25\)"):
        start_layers(26, [0, 26])


def test_saturation_layer_on_hand_built_curves():
    b = [2, 3, 4, 5, 6, 7]
    # rises to 1.0 at b = 5 and stays within 10% (0.1): saturates at 5
    assert saturation_layer(b, [0.1, 0.4, 0.85, 0.95, 1.02, 1.0], floor=0.0) == 5
    # 0.91 at b = 4 is within 0.1 of 1.0 too
    assert saturation_layer(b, [0.1, 0.4, 0.91, 0.95, 1.02, 1.0], floor=0.0) == 4
    # overshoots and comes back: saturates where it comes back for good, not where it first got close
    assert saturation_layer(b, [0.1, 0.95, 1.5, 0.97, 1.02, 1.0], floor=0.0) == 5
    # the noise band widens the tolerance: 3 x 0.1 = 0.3 > 10% of 1.0
    assert saturation_layer(b, [0.1, 0.4, 0.75, 0.95, 1.02, 1.0], floor=0.1) == 4
    # a curve that is flat from its first layer saturates there; order of the input does not matter
    assert saturation_layer(b[::-1], [1.0] * 6, floor=0.0) == 2
    # the full effect decides the sign: a negative curve
    assert saturation_layer(b, [-0.2, -2.0, -1.0, -1.9, -2.05, -2.0], floor=float("nan")) == 5
    assert saturation_layer([7], [0.3], floor=0.0) == 7
    # a NaN effect is never within the tolerance
    assert saturation_layer(b, [1.0, float("nan"), 1.0, 1.0, 1.0, 1.0], floor=0.0) == 4


def test_with_saturation_marks_each_curve():
    rows = []
    for variant, curve in ((1, [0.0, 0.5, 1.0, 1.0]), (2, [1.0, 1.0, 1.0, 1.0])):
        for b, e in enumerate(curve):
            rows.append(dict(variant=variant, site="mlp_out", layer_from=0, layer_to=b, delta_change=e,
                             noise_floor=1e-7))
    out = with_saturation(pd.DataFrame(rows))
    assert out["saturation_layer"].tolist() == [2] * 4 + [0] * 4
    assert out["saturated"].tolist() == [False, False, True, True] + [True] * 4
    assert out["full_delta_change"].tolist() == [1.0] * 8
