"""Path-patching tables, figure and RQ-summary section on a synthetic per-job table shaped
like the patching job's (PATH_COLUMNS): means and intervals against numpy and stats.mean_ci,
saturation of the mean curve against saturation_layer on the numpy mean."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from interp_lib.patching.paths import PATH_COLUMNS  # noqa: E402
from interp_lib.patching.saturation import saturation_layer, with_saturation  # noqa: E402
from interp_lib.plots.path_patching import plot_path_patching  # noqa: E402
from interp_lib.report.document import Document, to_markdown  # noqa: E402
from interp_lib.report.inputs import Inputs  # noqa: E402
from interp_lib.report.path_patching import path_patching_section, saturation_overview  # noqa: E402
from interp_lib.report.path_patching_tables import (SATURATION_COLUMNS, SUMMARY_COLUMNS,  # noqa: E402
                                                    path_patch_summary, path_saturation_table, read_path_patches)
from interp_lib.stats import mean_ci  # noqa: E402

L = 6
STARTS = [0, 3]


def synthetic_paths(seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for exp, (src, tgt) in {"A_to_B": ("A", "B"), "B_to_A": ("B", "A")}.items():
        for scenario, labelling, sign in (("S1", "standard", 1.0), ("S1_swapped", "swapped", -1.0)):
            for variant in (1, 2, 3):
                base, source = -2.0 * sign + rng.normal(0, 0.1), 3.0 * sign + rng.normal(0, 0.1)
                for site, scale in (("attn_out", 0.6), ("mlp_out", 0.4), ("both", 1.0)):
                    for a in STARTS:
                        for b in range(a, L):
                            change = sign * scale * 5.0 / (1 + np.exp(-(b - 2.5) * 2)) + rng.normal(0, 0.05)
                            patched = base + change
                            rows.append(dict(experiment=exp, source=src, target=tgt, scenario=scenario,
                                             variant=variant, labelling=labelling, positions="all",
                                             precision="float32", site=site, layer_from=a, layer_to=b,
                                             baseline_delta=base, source_delta=source, patched_delta=patched,
                                             delta_change=change, gap_fraction=change / (source - base),
                                             patched_action="D" if patched > 0 else "C",
                                             action_flipped=(patched > 0) != (base > 0),
                                             noise_floor=1e-6 * variant, below_noise=False))
    df = pd.DataFrame(rows)
    return with_saturation(df)[PATH_COLUMNS]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    df = synthetic_paths()
    d = tmp_path_factory.mktemp("per")
    files = []
    for (exp, scen), g in df.groupby(["experiment", "scenario"]):
        files.append(d / f"{exp}_{scen}.csv")
        g.to_csv(files[-1], index=False)
    empty = d / "off.csv"
    pd.DataFrame(columns=PATH_COLUMNS).to_csv(empty, index=False)
    out = read_path_patches([*files, empty])
    assert len(out) == len(df)
    return out


def test_summary_means_intervals_and_mean_curve_saturation(paths):
    summary = path_patch_summary(paths)
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert len(summary) == len(paths) // 3
    curve = paths[(paths["experiment"] == "A_to_B") & (paths["scenario"] == "S1") & (paths["site"] == "both")
                  & (paths["layer_from"] == 0)]
    got = summary[(summary["experiment"] == "A_to_B") & (summary["scenario"] == "S1") & (summary["site"] == "both")
                  & (summary["layer_from"] == 0)].sort_values("layer_to")
    means = curve.groupby("layer_to")["delta_change"].mean().sort_index()
    assert np.allclose(got["mean_delta_change"], means.to_numpy())
    b4 = curve[curve["layer_to"] == 4]["delta_change"].to_numpy()
    row = got[got["layer_to"] == 4].iloc[0]
    assert (row["mean_delta_change"], row["ci_low"], row["ci_high"]) == pytest.approx(mean_ci(b4))
    assert got["noise_floor"].iat[0] == pytest.approx(3e-6)  # the largest of the variants'
    expected = saturation_layer(means.index.to_numpy(), means.to_numpy(), 3e-6)
    assert (got["saturation_layer"] == expected).all() and 1 <= expected < L - 1
    assert got["saturated"].tolist() == [b >= expected for b in got["layer_to"]]
    assert not summary["below_noise"].any()


def test_saturation_table_one_row_per_curve(paths):
    sat = path_saturation_table(paths)
    assert list(sat.columns) == SATURATION_COLUMNS
    assert len(sat) == 2 * 2 * 3 * len(STARTS)
    assert (sat["last_layer"] == L - 1).all()
    row = sat[(sat["experiment"] == "B_to_A") & (sat["scenario"] == "S1_swapped") & (sat["site"] == "mlp_out")
              & (sat["layer_from"] == 3)].iloc[0]
    full = paths[(paths["experiment"] == "B_to_A") & (paths["scenario"] == "S1_swapped") & (paths["site"] == "mlp_out")
                 & (paths["layer_from"] == 3) & (paths["layer_to"] == L - 1)]
    assert row["full_mean"] == pytest.approx(full["delta_change"].mean()) and row["full_mean"] < 0
    assert row["variant_saturation_min"] == full["saturation_layer"].min()
    assert row["variant_saturation_max"] == full["saturation_layer"].max()
    assert row["labelling"] == "swapped"


def test_empty_inputs_give_empty_tables_and_a_figure_that_says_so(tmp_path):
    header_only = tmp_path / "off.csv"
    pd.DataFrame(columns=PATH_COLUMNS).to_csv(header_only, index=False)
    assert list(read_path_patches([header_only]).columns) == PATH_COLUMNS
    for empty in (read_path_patches([]), read_path_patches([header_only])):
        assert path_patch_summary(empty).empty and path_saturation_table(empty).empty
    plot_path_patching(path_patch_summary(empty), tmp_path / "off.png", "A_to_B")
    assert (tmp_path / "off.png").stat().st_size > 0


def test_figure_renders(paths, tmp_path):
    summary = path_patch_summary(paths)
    plot_path_patching(summary, tmp_path / "a.png", "A_to_B", labels={"A": "Model A"})
    assert (tmp_path / "a.png").stat().st_size > 10_000


def test_rq_section_reports_saturation_per_experiment(paths, tmp_path):
    sat = path_saturation_table(paths)
    path = tmp_path / "sat.csv"
    sat.to_csv(path, index=False)
    overview = saturation_overview(sat[sat["labelling"] == "standard"])
    row = overview[(overview["experiment"] == "A_to_B") & (overview["site"] == "both")
                   & (overview["from layer"] == 0)].iloc[0]
    own = sat[(sat["experiment"] == "A_to_B") & (sat["site"] == "both") & (sat["layer_from"] == 0)
              & (sat["labelling"] == "standard")]
    assert row["saturation layer (median)"] == own["saturation_layer"].median()
    assert row["full-range delta change"] == pytest.approx(own["full_mean"].mean())
    doc = Document()
    path_patching_section(doc, Inputs(path_saturation=str(path), swapped_scenarios={"S1_swapped"}), 10)
    text = to_markdown(doc)
    assert "## Path patching: where the effect saturates" in text and "### A_to_B (A -> B)" in text
    assert "### B_to_A (B -> A)" in text
    doc = Document()
    path_patching_section(doc, Inputs(path_saturation=str(tmp_path / "missing.csv")), 10)
    assert "does not exist" in to_markdown(doc)
