"""Merged-weight deltas: norms against an independent numpy computation on synthetic
safetensors (float32 and bfloat16, read in row blocks), the per-head split of o_proj,
the choice of the reference model, errors, pooling, and the heatmaps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from interp_lib import weight_deltas as wd
from interp_lib.weight_deltas import (COLUMNS, MODULES, WeightDeltaError, compared_models, head_table, module_table,
                                      pooled, read_weight_deltas, reference_model, weight_deltas)

D, H, DH, FF, L = 12, 3, 4, 20, 2
SHAPES = {"q_proj": (H * DH, D), "k_proj": (DH, D), "v_proj": (DH, D), "o_proj": (D, H * DH),
          "gate_proj": (FF, D), "up_proj": (FF, D), "down_proj": (D, FF)}


def _state(seed: int, scale: float = 1.0, base: dict | None = None) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {"model.embed_tokens.weight": torch.randn(7, D, generator=g),
           "model.norm.weight": torch.ones(D)}
    for l in range(L):
        for m, shape in SHAPES.items():
            part = "self_attn" if m in wd.ATTN_MODULES else "mlp"
            key = f"model.layers.{l}.{part}.{m}.weight"
            w = torch.randn(*shape, generator=g) * scale
            out[key] = w if base is None else base[key] + w
        out[f"model.layers.{l}.input_layernorm.weight"] = torch.ones(D)
    return out


def _write(directory, state, dtype=torch.float32, heads=H):
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(dtype).contiguous() for k, v in state.items()}, directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps({"num_attention_heads": heads, "head_dim": DH}))
    return directory / "model.safetensors"


@pytest.fixture
def pair(tmp_path):
    base = _state(0)
    model = _state(1, scale=0.1, base=base)
    return (_write(tmp_path / "m", model), _write(tmp_path / "b", base), model, base)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.to(torch.float64).numpy()


def test_norms_match_numpy(pair):
    mpath, bpath, model, base = pair
    df = weight_deltas(mpath, bpath, "m", "b")
    assert list(df.columns) == COLUMNS
    mods = module_table(df)
    assert len(mods) == L * len(MODULES) and list(mods["module"][: len(MODULES)]) == list(MODULES)
    for row in mods.itertuples(index=False):
        part = "self_attn" if row.module in wd.ATTN_MODULES else "mlp"
        key = f"model.layers.{row.layer}.{part}.{row.module}.weight"
        w, w0 = _np(model[key]), _np(base[key])
        assert row.norm_delta == pytest.approx(np.linalg.norm(w - w0), rel=1e-10)
        assert row.norm_base == pytest.approx(np.linalg.norm(w0), rel=1e-10)
        assert row.relative_delta == pytest.approx(np.linalg.norm(w - w0) / np.linalg.norm(w0), rel=1e-10)
        assert (row.model, row.reference) == ("m", "b")


def test_o_proj_heads_are_column_slices(pair):
    mpath, bpath, model, base = pair
    df = weight_deltas(mpath, bpath, "m", "b")
    heads = head_table(df)
    assert len(heads) == L * H and set(heads["module"]) == {"o_proj"}
    for l in range(L):
        key = f"model.layers.{l}.self_attn.o_proj.weight"
        d = _np(model[key]) - _np(base[key])
        rows = heads[heads["layer"] == l].sort_values("head")
        expected = [np.linalg.norm(d[:, h * DH:(h + 1) * DH]) for h in range(H)]
        assert np.allclose(rows["norm_delta"], expected, rtol=1e-10)
        whole = df[(df["layer"] == l) & (df["module"] == "o_proj") & df["head"].isna()]["norm_delta"].item()
        assert np.sqrt((rows["norm_delta"] ** 2).sum()) == pytest.approx(whole, rel=1e-10)


def test_row_blocks_and_bfloat16(pair, tmp_path, monkeypatch):
    mpath, bpath, model, base = pair
    whole = weight_deltas(mpath, bpath)
    monkeypatch.setattr(wd, "ROW_BLOCK_ELEMENTS", 7)  # a row or two per block
    blocked = weight_deltas(mpath, bpath)
    assert np.allclose(blocked["norm_delta"], whole["norm_delta"], rtol=1e-12)
    bf_m = _write(tmp_path / "bm", model, torch.bfloat16)
    bf_b = _write(tmp_path / "bb", base, torch.bfloat16)
    bf = weight_deltas(bf_m, bf_b)
    key = "model.layers.1.mlp.down_proj.weight"
    expected = np.linalg.norm(_np(model[key].bfloat16()) - _np(base[key].bfloat16()))
    got = bf[(bf["layer"] == 1) & (bf["module"] == "down_proj")]["norm_delta"].item()
    assert got == pytest.approx(expected, rel=1e-10)


def test_identical_weights_give_zero(pair):
    _, bpath, _, _ = pair
    df = weight_deltas(bpath, bpath)
    assert (df["norm_delta"] == 0).all() and (df["relative_delta"] == 0).all()


def test_mismatches_are_named(pair, tmp_path):
    mpath, bpath, model, base = pair
    other = dict(base)
    other["model.layers.0.mlp.up_proj.weight"] = torch.zeros(FF + 1, D)
    with pytest.raises(WeightDeltaError, match="up_proj.*shape"):
        weight_deltas(mpath, _write(tmp_path / "o", other))
    fewer = {k: v for k, v in base.items() if "layers.1." not in k}
    with pytest.raises(WeightDeltaError, match="lacks layer 1"):
        weight_deltas(mpath, _write(tmp_path / "f", fewer))
    with pytest.raises(WeightDeltaError, match="num_attention_heads"):
        weight_deltas(_write(tmp_path / "h", model, heads=5), bpath)
    with pytest.raises(WeightDeltaError, match="no layers"):
        save_file({"x": torch.zeros(2, 2)}, tmp_path / "x.safetensors")
        weight_deltas(tmp_path / "x.safetensors", tmp_path / "x.safetensors", "x")


def test_reference_model():
    config = {"models": {
        "plain": {"base": "B"}, "base": {"base": "B"}, "ft": {"base": "B", "adapter": "a"},
        "other_base": {"base": "C"}, "ft_c": {"base": "C", "adapter": "c"}, "orphan": {"base": "Z", "adapter": "z"},
    }}
    assert reference_model(config, "ft") == "base"  # "base" preferred over config order
    assert reference_model(config, "ft", preferred="none") == "plain"
    assert reference_model(config, "ft_c") == "other_base"
    assert reference_model(config, "orphan") is None
    assert reference_model(config, "base") is None  # no adapter: nothing to compare
    assert compared_models(config) == {"ft": "base", "ft_c": "other_base"}


def test_pooled_and_csv_round_trip(pair, tmp_path):
    mpath, bpath, _, _ = pair
    df = weight_deltas(mpath, bpath, "m", "b")
    df.to_csv(tmp_path / "w.csv", index=False)
    back = read_weight_deltas(tmp_path / "w.csv")
    assert back["head"].dtype == "Int64" and back["head"].isna().sum() == L * len(MODULES)
    per_layer = pooled(back, ["model", "layer"])
    mods = module_table(df)
    for l in range(L):
        g = mods[mods["layer"] == l]
        row = per_layer[per_layer["layer"] == l].iloc[0]
        assert row["norm_delta"] == pytest.approx(np.sqrt((g["norm_delta"] ** 2).sum()))
        assert row["relative_delta"] == pytest.approx(row["norm_delta"] / np.sqrt((g["norm_base"] ** 2).sum()))


def test_heatmaps(pair, tmp_path):
    from interp_lib.plots.weights import RELATIVE_LABEL, WeightVisualizer
    from interp_lib.style import ModelStyle

    mpath, bpath, _, _ = pair
    df = pd.concat([weight_deltas(mpath, bpath, "m", "b"), weight_deltas(bpath, bpath, "b2", "b")])
    viz = WeightVisualizer(ModelStyle.from_names(["m", "b2"], {"m": "Model M"}))
    fig = viz.plot_module_heatmaps(df, save_path=tmp_path / "mods.png")
    assert (tmp_path / "mods.png").stat().st_size > 0
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["Model M", "b2"]
    panel = fig.axes[0]
    assert [t.get_text() for t in panel.get_xticklabels()] == list(MODULES)
    assert np.allclose(panel.images[0].get_array()[0], module_table(df).query("model == 'm' and layer == 0")
                       ["relative_delta"])
    assert fig.axes[-1].get_ylabel() == RELATIVE_LABEL  # the colour bar
    viz.plot_head_heatmaps(df, save_path=tmp_path / "heads.png")
    assert (tmp_path / "heads.png").stat().st_size > 0


def test_heatmaps_without_models(tmp_path):
    from interp_lib.plots.weights import WeightVisualizer

    empty = pd.DataFrame(columns=COLUMNS).astype({"head": "Int64"})
    WeightVisualizer().plot_module_heatmaps(empty, save_path=tmp_path / "mods.png")
    WeightVisualizer().plot_head_heatmaps(empty, save_path=tmp_path / "heads.png")
    assert (tmp_path / "mods.png").stat().st_size > 0 and (tmp_path / "heads.png").stat().st_size > 0
