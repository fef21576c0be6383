"""Patching figures on synthetic tables (demo-sized 4 x 4 and Gemma-2-2b-sized 26 x 8):
they render, the heatmap shows the mean over variants, colour scales are centred at zero,
and circuit plots explain flipped=False, agreeing models and circuits that were not run."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402

from interp_lib.patching import CIRCUIT_COLUMNS, RESULT_COLUMNS, Component, all_components  # noqa: E402
from interp_lib.plots.patching import PatchingVisualizer, patch_grid, read_table  # noqa: E402
from interp_lib.style import ModelStyle  # noqa: E402

SCENARIOS = ["CC_continue", "CC_temptation", "CD_punished", "DC_exploited", "DD_trapped"]
SIZES = [(4, 4), (26, 8)]


def synthetic_results(n_layers, n_heads, scenarios=SCENARIOS, n_variants=3, seed=0, baseline=-4.0, source=4.5):
    """A patch-results table shaped like the workflow's (RESULT_COLUMNS), with one flipping patch."""
    rng = np.random.default_rng(seed)
    comps = all_components(n_layers, n_heads)
    effect = rng.normal(0, 0.3, len(comps)) * np.linspace(0.3, 1.5, len(comps))
    rows = []
    for s_i, scen in enumerate(scenarios):
        for v in range(1, n_variants + 1):
            base = baseline + rng.normal(0, 0.05)
            src = source + rng.normal(0, 0.05)
            for c_i, c in enumerate(comps):
                change = effect[c_i] + rng.normal(0, 0.1)
                if s_i == 0 and v == 2 and c_i == len(comps) - 1:
                    change = 5.0  # the last MLP flips variant 2 of the first scenario
                patched = base + change
                rows.append(dict(
                    experiment="A_to_B", source="A", target="B", scenario=scen, variant=v, positions="all",
                    head_site="result", component=c.name, layer=c.layer, head=c.head, kind=c.kind,
                    baseline_delta=base, source_delta=src, patched_delta=patched, delta_change=change,
                    baseline_action="D" if base > 0 else "C", patched_action="D" if patched > 0 else "C",
                    action_flipped=(base > 0) != (patched > 0), effect_size=abs(change) / abs(base),
                    gap_fraction=change / (src - base), atp_delta_change=change * 0.9))
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def synthetic_circuits(results, scenario, flip=True, max_components=10, pruned_variant=None, gain=1.0):
    """Circuit rows as `patching.circuit_record` writes them, consistent with `results`: the
    greedy search over the candidates (single patches toward the source), its first flip,
    and for `pruned_variant` a minimal circuit pruned from that prefix (its second member
    dropped). Joint deltas: the baseline plus `gain` times the sum of the candidates' scores."""
    from interp_lib.patching.ranking import rank_toward_source

    rows = []
    for v, g in results[results["scenario"] == scenario].groupby("variant"):
        g = g.reset_index(drop=True)
        base, src = g["baseline_delta"][0], g["source_delta"][0]
        ranked, n_cand, excluded = rank_toward_source(g["component"].tolist(), g["delta_change"], None, base, src,
                                                      max_components)
        order = [name for name, _ in ranked[:min(n_cand, max_components)]]
        scores = np.array([score for _, score in ranked[:len(order)]])
        deltas = base + np.cumsum(scores) * np.sign(src - base) * (gain if flip else 0.05)
        attempts = [(k + 1, float(d)) for k, d in enumerate(deltas)]
        first = next((k for k, d in attempts if (d > 0) == (src > 0)), None)
        circuit, loo = order[:first or 0], ""
        if first is None:
            size = len(attempts)
            circuit, kind = order[:size], "none"
            reason = f"no set of up to {len(attempts)} top candidate components flipped the action"
        else:
            size, kind, reason = first, "minimal", ""
            if v == pruned_variant and first >= 2:
                circuit = circuit[:1] + circuit[2:]
            loo = ";".join(f"{c}:{base:.6g}" for c in circuit)
        patched = attempts[size - 1][1]
        rows.append(dict(
            experiment="A_to_B", source="A", target="B", scenario=scenario, variant=v, positions="all",
            head_site="result", ranking="exact", flipped=first is not None, circuit_kind=kind,
            circuit_size=len(circuit), greedy_size=size, circuit=";".join(circuit), excluded_opposing=len(excluded),
            baseline_delta=base, source_delta=src, patched_delta=patched, gap_recovered=(patched - base) / (src - base),
            attempts=";".join(f"{k}:{d:.6g}" for k, d in attempts), leave_one_out=loo, reason=reason))
    return pd.DataFrame(rows, columns=CIRCUIT_COLUMNS)


@pytest.fixture(scope="module")
def viz():
    return PatchingVisualizer(style=ModelStyle.from_names(["A", "B"], {"A": "Model A", "B": "Model B"}))


@pytest.fixture(scope="module", params=SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def results(request):
    return synthetic_results(*request.param)


def _texts(fig) -> str:
    texts = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    return "\n".join(texts)


def _image(ax) -> AxesImage:
    (im,) = [a for a in ax.get_images()]
    return im


def test_heatmap_values_are_the_mean_over_variants(viz, results, tmp_path):
    scen = results[results["scenario"] == "CC_continue"]
    out = tmp_path / "heat.png"
    fig = viz.plot_patch_heatmap(scen, out=out)
    assert out.stat().st_size > 0 and not plt.fignum_exists(fig.number)
    im = _image(fig.axes[0])
    shown = np.asarray(im.get_array())
    L, H = int(scen["layer"].max()) + 1, int(scen["head"].max()) + 1
    assert shown.shape == (L, H + 1)
    for (layer, head), g in scen.groupby(["layer", scen["head"].fillna(-1)]):
        col = H if head < 0 else int(head)
        assert shown[int(layer), col] == pytest.approx(g["delta_change"].mean())
    vmin, vmax = im.norm.vmin, im.norm.vmax
    assert vmin == -vmax and vmax == pytest.approx(np.abs(shown).max())
    text = _texts(fig)
    assert "1 of 3 variants" in text and "(1 component)" in text  # the flipping MLP patch is framed
    assert "source" in text and "Model A \u2192 Model B" in text and "CC_continue" in text
    assert any(ax.get_label() == "<colorbar>" or "delta change" in ax.get_ylabel() for ax in fig.axes)


def test_heatmap_other_metric_and_scenario_selection(viz, results):
    fig = viz.plot_patch_heatmap(results, metric="gap_fraction", scenario="DD_trapped")
    shown = np.asarray(_image(fig.axes[0]).get_array())
    g = results[(results["scenario"] == "DD_trapped") & (results["component"] == "L0H0")]
    assert shown[0, 0] == pytest.approx(g["gap_fraction"].mean())
    assert "no single patch flips the action" in _texts(fig)
    plt.close(fig)
    with pytest.raises(ValueError, match="scenario"):
        viz.plot_patch_heatmap(results)


def test_top_components_and_consistency(viz, results, tmp_path):
    top_k = 12
    fig = viz.plot_top_components(results, top_k=top_k, out=tmp_path / "top.png")
    assert (tmp_path / "top.png").exists()
    per = results.groupby(["component", "scenario"])["delta_change"].mean().unstack()
    expected = per.abs().mean(axis=1).sort_values(ascending=False).index[:top_k]
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[::-1] == list(expected)  # largest at the top
    from interp_lib.report.patching_tables import component_consistency

    table = component_consistency(results, top_k)
    fig = viz.plot_consistency(results, top_k=top_k, top_components=table)
    im = _image(fig.axes[0])
    shown = np.asarray(im.get_array())
    assert shown.shape == (top_k, len(SCENARIOS))
    first = table["component"].iat[0]
    assert shown[0] == pytest.approx(per.loc[first, SCENARIOS].to_numpy())
    assert im.norm.vmin == -im.norm.vmax
    assert f"in top {top_k}" in _texts(fig)
    plt.close(fig)
    # without the table: the same ranking, computed from the results
    fig = viz.plot_consistency(results, top_k=top_k)
    assert np.asarray(_image(fig.axes[0]).get_array()) == pytest.approx(shown)
    plt.close(fig)


def test_circuit_discovery_flipped(viz, results, tmp_path):
    circuits = synthetic_circuits(results, "CC_continue")
    patches = results[results["scenario"] == "CC_continue"]
    fig = viz.plot_circuit_discovery(circuits, patches, out=tmp_path / "circ.png")
    assert (tmp_path / "circ.png").exists()
    ax = fig.axes[0]
    text = _texts(fig)
    assert "decision boundary" in text and "flips at k =" in text
    # each variant's line: k = 0 (the baseline) then its attempts
    row = circuits.iloc[0]
    line = next(l for l in ax.get_lines() if l.get_label().startswith(f"variant {row['variant']}:"))
    attempts = [float(a.split(":")[1]) for a in row["attempts"].split(";")]
    assert list(line.get_ydata()) == pytest.approx([row["baseline_delta"], *attempts])
    # the tick of step 1 names the top-ranked component
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[1].lstrip("+").split(" / ")[0] in set(circuits["circuit"].str.split(";").str[0])
    horizontal = {round(l.get_ydata()[0], 6) for l in ax.get_lines() if len(set(l.get_ydata())) == 1}
    assert round(circuits["baseline_delta"].mean(), 6) in horizontal
    assert round(circuits["source_delta"].mean(), 6) in horizontal


def test_circuit_discovery_pruned_and_excluded(viz, results, caplog):
    """A variant whose minimal circuit was pruned from its greedy prefix: the star stays at
    the greedy flip point, a diamond marks the minimal circuit, the legend names what was
    dropped; components left out for pushing away are counted in the title."""
    circuits = synthetic_circuits(results, "CC_continue", pruned_variant=1, gain=3.0)
    patches = results[results["scenario"] == "CC_continue"]
    row = circuits.set_index("variant").loc[1]
    assert row["circuit_size"] < row["greedy_size"] and circuits["excluded_opposing"].sum() > 0
    assert circuits["flipped"].all()
    fig = viz.plot_circuit_discovery(circuits, patches)
    assert "does not hold the circuit" not in caplog.text  # the rebuilt ranking agrees with the table
    text = _texts(fig)
    k, m = int(row["greedy_size"]), int(row["circuit_size"])
    assert f"variant 1: flips at k = {k} (greedy); minimal circuit of {m} after pruning" in text
    assert "the greedy prefix is the minimal circuit" in text  # the other variants
    assert f"{circuits['excluded_opposing'].sum()} of the variants' strongest single patches pushed away" in text
    assert "minimal circuits of" in text and "minimal = no member can be dropped" in text
    ax = fig.axes[0]
    diamonds = [l for l in ax.get_lines() if l.get_marker() == "D" and len(l.get_xdata())]
    assert len(diamonds) == 1
    assert (diamonds[0].get_xdata()[0], diamonds[0].get_ydata()[0]) == pytest.approx((k, row["patched_delta"]))
    stars = [l for l in ax.get_lines() if l.get_marker() == "*" and len(l.get_xdata())]
    greedy_delta = float(row["attempts"].split(";")[k - 1].split(":")[1])
    assert any(tuple(l.get_xdata()) == (k,) and l.get_ydata()[0] == pytest.approx(greedy_delta) for l in stars)
    plt.close(fig)


def test_circuit_discovery_not_flipped(viz, results):
    circuits = synthetic_circuits(results, "CC_continue", flip=False)
    assert not circuits["flipped"].any()
    fig = viz.plot_circuit_discovery(circuits, results[results["scenario"] == "CC_continue"])
    text = _texts(fig)
    assert "no flip within 10 components" in text
    plt.close(fig)


def test_circuit_discovery_models_agree_and_not_run(viz, tmp_path):
    agree = pd.DataFrame([dict(experiment="A_to_B", source="A", target="B", scenario="CC_continue", variant=v,
                               positions="all", head_site="result", flipped=False, circuit_size=0, circuit="",
                               baseline_delta=-3.9, source_delta=-4.0, patched_delta=-3.9, gap_recovered=math.nan,
                               attempts="", reason="source and target already take the same action")
                          for v in (1, 2)], columns=CIRCUIT_COLUMNS)
    path = tmp_path / "agree.csv"
    agree.to_csv(path, index=False)
    fig = viz.plot_circuit_discovery(read_table(path))  # attempts read back as NaN
    assert "already take the same action" in _texts(fig)
    plt.close(fig)

    empty = tmp_path / "empty.csv"
    pd.DataFrame(columns=CIRCUIT_COLUMNS).to_csv(empty, index=False)
    headerless = tmp_path / "headerless.csv"
    headerless.write_text("")
    for table in (read_table(empty), read_table(headerless)):
        fig = viz.plot_circuit_discovery(table, experiment="A_to_B", scenario="CC_continue", source="A",
                                         target="B", circuits_run=False, out=tmp_path / "none.png")
        assert "not run" in _texts(fig) and "CC_continue" in _texts(fig)
        assert (tmp_path / "none.png").exists()


def test_circuit_discovery_from_discovery_object(viz):
    from interp_lib.patching import CircuitDiscovery

    found = CircuitDiscovery(ranked_components=[("L3_MLP", 2.0), ("L2H1", 1.5), ("L0H0", 0.1)],
                             minimal_circuit=["L3_MLP", "L2H1"], all_patches=[], flipped=True, patched_delta=0.5,
                             gap_recovered=0.55, baseline_delta=-3.0, source_delta=3.0,
                             attempts=[(1, -1.0), (2, 0.5), (3, 0.6)])
    assert (found.kind, found.greedy_size) == ("greedy", 2)  # nothing checked its minimality
    fig = viz.plot_circuit_discovery(found, experiment="A_to_B", scenario="CC_continue", source="A", target="B")
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["none", "+L3_MLP", "+L2H1", "+L0H0"]
    assert "flips at k = 2 (greedy prefix, not checked for minimality)" in _texts(fig)
    plt.close(fig)


def test_patch_grid_places_heads_and_mlps():
    res = synthetic_results(3, 2, scenarios=["S"], n_variants=1)
    values, flips, n_var = patch_grid(res)
    assert values.shape == (3, 3) and n_var == 1
    for _, r in res.iterrows():
        c = Component.parse(r["component"])
        assert values[c.layer, 2 if c.head is None else c.head] == pytest.approx(r["delta_change"])
