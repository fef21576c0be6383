"""Counterfactual prompt patching within one model: residual layer x position patching
(exact against a full forward pass with one hook, AtP against a finite difference) and
component patching between two aligned prompts."""

import numpy as np
import pytest
import torch

from interp_lib.model.hooked import HookedModel
from interp_lib.patching import Component, PatchRunner, PromptActivations, sweep
from interp_lib.patching.counterfactual import PromptAlignmentError, differing_positions
from interp_lib.patching.residual import residual_attribution, residual_deltas, residual_grid
from interp_lib.reference import naive_patched_delta
from test_hooked import tiny_gemma2

TOKENS = {"C": 5, "D": 7}
ROWS = [TOKENS["C"], TOKENS["D"]]
DIFFERING = [4, 11, 12]  # positions where the corrupted prompt's tokens differ (as move words do)


@pytest.fixture(scope="module")
def prompts():
    torch.manual_seed(1)
    model = HookedModel(tiny_gemma2())
    clean = torch.randint(0, 97, (1, 24))
    corrupted = clean.clone()
    corrupted[0, DIFFERING] = (clean[0, DIFFERING] + 13) % 97
    src = PromptActivations.from_run(model, clean, TOKENS)
    tgt = PromptActivations.from_run(model, corrupted, TOKENS)
    assert abs(src.delta - tgt.delta) > 1e-2  # the tests mean something
    return model, clean, corrupted, src, tgt


def naive_residual_delta(model, ids, source, layer, position) -> float:
    """One full forward pass of the target prompt from its token ids, with resid_pre[layer,
    position] replaced by the source's."""
    def hook(act, name):
        act = act.clone()
        act[:, position] = source.resid_pre[layer, position].to(act.dtype)
        return act

    logits = model.run_with_hooks(ids, [(f"blocks.{layer}.hook_resid_pre", hook)], last_only=True)
    return float(logits[0, TOKENS["D"]] - logits[0, TOKENS["C"]])


def test_patching_every_position_at_layer_0_reproduces_the_source(prompts):
    model, _, _, src, tgt = prompts
    T = tgt.resid_pre.shape[1]
    everything, nothing = residual_deltas(model, src, tgt, ROWS, 0, [range(T), []])
    assert abs(everything - src.delta) < 1e-5
    assert abs(nothing - tgt.delta) < 1e-5
    # and only the differing positions carry anything at layer 0
    assert abs(residual_deltas(model, src, tgt, ROWS, 0, [DIFFERING])[0] - src.delta) < 1e-5


def test_residual_grid_equals_a_full_forward_pass_with_one_hook(prompts):
    model, _, corrupted, src, tgt = prompts
    controls: list = []
    grid = residual_grid(model, src, tgt, ROWS, batch_size=7, controls=controls)
    T = tgt.resid_pre.shape[1]
    assert grid.shape == (model.n_layers, T) and np.isfinite(grid).all()
    for layer in range(model.n_layers):
        for pos in range(T):
            assert abs(grid[layer, pos] - naive_residual_delta(model, corrupted, src, layer, pos)) < 1e-5
    # Cells whose streams agree (layer 0: every position but the differing ones; later layers:
    # every position before the first, and those a sliding window keeps from it) are the
    # identity patch, not run: exactly the target's delta.
    same = (src.resid_pre == tgt.resid_pre).all(-1).numpy()  # [L, T]
    assert set(np.flatnonzero(~same[0])) == set(DIFFERING) and same[1:, :DIFFERING[0]].all()
    assert (grid[same] == tgt.delta).all() and same.sum() == 96 - 59  # 37 of the 4 x 24 cells not run
    # one control row per batch of up to 6 run cells
    assert len(controls) == sum(int(np.ceil((~row).sum() / 6)) for row in same) and max(controls) < 1e-5


@pytest.mark.parametrize("layer", [0, 1])
def test_residual_deltas_from_a_clean_prefix_equal_the_whole_prompt(prompts, layer):
    """`start` reads the positions before it from the target's clean keys and values."""
    model, _, _, src, tgt = prompts
    sets = [[11], [12, 17], [11, 12, 23], []]
    whole = residual_deltas(model, src, tgt, ROWS, layer, sets)
    assert np.abs(residual_deltas(model, src, tgt, ROWS, layer, sets, start=11) - whole).max() < 1e-5
    with pytest.raises(ValueError, match="before start=12"):
        residual_deltas(model, src, tgt, ROWS, layer, sets, start=12)


def test_residual_atp_is_the_first_order_term(prompts):
    """AtP at (layer, position) equals the derivative of the patched delta along the patch,
    measured by a central difference of exact patches scaled by +-eps."""
    model, _, _, src, tgt = prompts
    atp = residual_attribution(model, src, tgt, ROWS)
    assert atp.shape == (model.n_layers, tgt.resid_pre.shape[1])
    eps = 1e-2
    for layer, pos in [(0, 4), (1, 11), (2, 20), (3, 23)]:
        diff = src.resid_pre[layer, pos] - tgt.resid_pre[layer, pos]
        deltas = []
        for sign in (1, -1):
            scaled = PromptActivations(src.input_ids, tgt.resid_pre.clone(), src.z, src.mlp_out, src.delta)
            scaled.resid_pre[layer, pos] = tgt.resid_pre[layer, pos] + sign * eps * diff
            deltas.append(residual_deltas(model, scaled, tgt, ROWS, layer, [[pos]])[0])
        finite = (deltas[0] - deltas[1]) / (2 * eps)
        assert abs(atp[layer, pos] - finite) < 1e-3 * max(1.0, abs(finite)), (layer, pos)
    assert np.abs(atp[0, [p for p in range(atp.shape[1]) if p not in DIFFERING]]).max() == 0.0


def test_component_patching_between_aligned_prompts_equals_naive(prompts):
    model, _, corrupted, src, tgt = prompts
    W_O = torch.stack([model.W_O(l) for l in range(model.n_layers)])
    runner = PatchRunner(model, W_O, TOKENS, "all", "result")
    with pytest.raises(ValueError, match="different token ids"):
        sweep(runner, src, tgt)
    results = sweep(runner, src, tgt, same_prompt=False)
    for r in results[:: 3]:
        expected = naive_patched_delta(model, corrupted, src, W_O, Component.parse(r.component), "all", "result",
                                       TOKENS)
        assert abs(r.patched_delta - expected) < 1e-5, r.component


def test_prompts_that_do_not_align_name_the_first_differing_position():
    assert differing_positions([1, 2, 3, 4], [1, 9, 3, 8], "cf") == [1, 3]
    with pytest.raises(PromptAlignmentError, match=r"^cf x: the prompts do not align token for token "
                                                   r"\(4 vs 5 tokens\); first difference at position 2: '3' vs '7'$"):
        differing_positions([1, 2, 3, 4], [1, 2, 7, 3, 4], "cf x")
    with pytest.raises(PromptAlignmentError, match=r"position 3: '4' vs \(end of prompt\)$"):
        differing_positions([1, 2, 3, 4], [1, 2, 3], "cf")
    with pytest.raises(PromptAlignmentError, match="identical"):
        differing_positions([1, 2], [1, 2], "cf")


@pytest.mark.slow
def test_the_workflows_counterfactual_on_the_embedded_family(workflow_dir):
    """config.yaml's opponent_move_PT4 from its caches: patching every position at layer 0
    reproduces the source prompt's delta; the job's residual cells equal fresh patches."""
    import pandas as pd

    from interp_lib.cache import CacheFile
    from interp_lib.model.loading import load_base_model

    results = workflow_dir / "results"
    table = pd.read_csv(results / "counterfactual/per/opponent_move_PT4/residual_patches.csv")
    model = HookedModel(load_base_model(str(results / "models/PT4_COREDe"), name="PT4_COREDe"))
    with CacheFile(results / "cache/PT4_COREDe/CC_continue.h5") as src_file, \
            CacheFile(results / "cache/PT4_COREDe/CD_punished.h5") as tgt_file:
        assert tgt_file.variants == [1, 2, 3]
        for variant in tgt_file.variants:
            rows = table[table["variant"] == variant]
            source_variant = int(rows["source_variant"].iat[0])
            assert src_file.labelling(source_variant) == tgt_file.labelling(variant)
            src = PromptActivations.from_cache(src_file[source_variant], "cpu", torch.float32)
            tgt = PromptActivations.from_cache(tgt_file[variant], "cpu", torch.float32)
            tokens = tgt_file.action_tokens(variant)
            T = tgt.resid_pre.shape[1]
            everything = residual_deltas(model, src, tgt, [tokens["C"], tokens["D"]], 0, [range(T)])[0]
            assert abs(everything - src.delta) < 1e-4 and abs(src.delta - tgt.delta) > 5.0
            cells = rows.sort_values("delta_change").head(3)  # the strongest cells
            fresh = [residual_deltas(model, src, tgt, [tokens["C"], tokens["D"]], int(c.layer), [[int(c.position)]])[0]
                     for c in cells.itertuples()]
            assert np.allclose(fresh, cells["patched_delta"], atol=1e-4)
