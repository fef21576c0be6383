"""Weight deltas. From a PEFT LoRA adapter: every module's and head's norm against
||scaling * B @ A|| in float64 numpy and against PEFT's own merge (rank/alpha patterns,
rslora), whatever dtype the merged weights are stored in, while the merged difference in
bfloat16 is off; adapter errors named. The merged-difference fallback: norms against an
independent numpy computation on synthetic safetensors (float32 and bfloat16, read in row
blocks), the per-head split of o_proj, the choice of the reference model, errors, pooling,
and the heatmaps."""

from __future__ import annotations

import copy
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from interp_lib.analyses import weight_deltas as wd
from interp_lib.analyses.weight_deltas import (COLUMNS, MODULES, WeightDeltaError, compared_models, head_table, module_table,
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


# --- from the adapter's factors -------------------------------------------------------------
# A tiny Gemma-2 (o_proj [18, 12]: not square, so a transposed head split would show) and a
# real PEFT adapter on it with random factors. gate/up_proj are not targeted; layer 1's
# q_proj has rank 2 (rank_pattern), every o_proj alpha 3 (alpha_pattern).
AD, AH, ADH, AFF, AL, R, ALPHA = 18, 3, 4, 24, 3, 4, 8
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]
RANK_PATTERN, ALPHA_PATTERN = {"layers.1.self_attn.q_proj": 2}, {"o_proj": 3}
SMALL = ("model.layers.0.mlp.down_proj", 1e-5)  # this module's update: 1e-5 of its weight's norm


def _expected_scaling(name: str, rslora: bool) -> float:
    r = 2 if name.endswith("layers.1.self_attn.q_proj") else R
    alpha = 3 if name.endswith("o_proj") else ALPHA
    return alpha / np.sqrt(r) if rslora else alpha / r


def _tiny_lm(seed: int = 0):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(seed)
    cfg = Gemma2Config(vocab_size=11, hidden_size=AD, intermediate_size=AFF, num_hidden_layers=AL,
                       num_attention_heads=AH, num_key_value_heads=1, head_dim=ADH)
    return Gemma2ForCausalLM(cfg).eval()


def _peft_family(root, rslora: bool = False, dtypes=(torch.float32, torch.bfloat16)) -> dict:
    """{adapter: dir, base/merged: {dtype: model.safetensors}} for a random base and a
    random PEFT adapter (merged by PEFT in float32, as merge_model does)."""
    from peft import LoraConfig, get_peft_model

    lm = _tiny_lm()
    out = {"base": {}, "merged": {}}
    for dtype in dtypes:
        copy.deepcopy(lm).to(dtype).save_pretrained(root / f"base_{dtype}")
        out["base"][dtype] = root / f"base_{dtype}" / "model.safetensors"
    peft_lm = get_peft_model(lm, LoraConfig(r=R, lora_alpha=ALPHA, target_modules=TARGETS, rank_pattern=RANK_PATTERN,
                                            alpha_pattern=ALPHA_PATTERN, use_rslora=rslora))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, mod in peft_lm.named_modules():
            if hasattr(mod, "lora_A") and "default" in mod.lora_A:
                a, b = mod.lora_A["default"].weight, mod.lora_B["default"].weight
                a.copy_(torch.randn(a.shape, generator=g))
                b.copy_(torch.randn(b.shape, generator=g) * 0.01)
                if name.endswith(SMALL[0]):  # rescale to a relative update of SMALL[1]
                    ratio = (b @ a).norm() * mod.scaling["default"] / mod.base_layer.weight.norm()
                    b.mul_(SMALL[1] / ratio)
    peft_lm.save_pretrained(root / "adapter")
    out["adapter"] = root / "adapter"
    merged = peft_lm.merge_and_unload()
    for dtype in dtypes:
        copy.deepcopy(merged).to(dtype).save_pretrained(root / f"merged_{dtype}")
        out["merged"][dtype] = root / f"merged_{dtype}" / "model.safetensors"
    return out


def _factor_updates(adapter, rslora: bool = False) -> dict[str, np.ndarray]:
    """{weight name: scaling * B @ A} in float64 numpy, from the saved file directly."""
    from safetensors.numpy import load_file

    factors = load_file(adapter / "adapter_model.safetensors")
    out = {}
    for key, a in factors.items():
        if ".lora_A." in key:
            name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            b = factors[key.replace(".lora_A.", ".lora_B.")].astype(np.float64)
            out[f"{name}.weight"] = _expected_scaling(name, rslora) * (b @ a.astype(np.float64))
    return out


def _weight_name(layer: int, module: str) -> str:
    return f"model.layers.{layer}.{'self_attn' if module in wd.ATTN_MODULES else 'mlp'}.{module}.weight"


@pytest.fixture(scope="module")
def peft_family(tmp_path_factory):
    return _peft_family(tmp_path_factory.mktemp("peft"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_adapter_deltas_match_factors_in_float64(peft_family, dtype):
    """Acceptance: every module's and head's norm_delta is ||scaling * B @ A|| (float64
    numpy) to 1e-6 relative, with the merged weights in float32 or bfloat16; untargeted
    modules are rows with 0. The merged difference in bfloat16 is off by > 1e-3 for the
    small update, so this would fail on the old path."""
    fam = peft_family
    df = weight_deltas(fam["merged"][dtype], fam["base"][dtype], "m", "b", adapter=fam["adapter"])
    assert list(df.columns) == COLUMNS
    expected = _factor_updates(fam["adapter"])
    base = {k: _np(v) for k, v in load_file(fam["base"][dtype]).items()}
    mods, heads = module_table(df), head_table(df)
    assert len(mods) == AL * len(MODULES) and len(heads) == AL * AH
    for row in mods.itertuples(index=False):
        key = _weight_name(row.layer, row.module)
        want = np.linalg.norm(expected[key]) if row.module in TARGETS else 0.0
        assert row.norm_delta == pytest.approx(want, rel=1e-6, abs=0), key
        assert row.norm_base == pytest.approx(np.linalg.norm(base[key]), rel=1e-10)
    for row in heads.itertuples(index=False):
        d = expected[_weight_name(row.layer, "o_proj")][:, row.head * ADH:(row.head + 1) * ADH]
        assert row.norm_delta == pytest.approx(np.linalg.norm(d), rel=1e-6)
    # independent of the merged files' dtype: the same numbers from either
    other = torch.bfloat16 if dtype == torch.float32 else torch.float32
    again = weight_deltas(fam["merged"][other], fam["base"][other], "m", "b", adapter=fam["adapter"])
    assert np.allclose(again["norm_delta"], df["norm_delta"], rtol=1e-12, atol=0)

    small = mods[(mods["layer"] == 0) & (mods["module"] == "down_proj")].iloc[0]
    assert small["relative_delta"] == pytest.approx(SMALL[1], rel=1e-3)
    merged = module_table(weight_deltas(fam["merged"][dtype], fam["base"][dtype]))
    merged_small = merged[(merged["layer"] == 0) & (merged["module"] == "down_proj")]["norm_delta"].item()
    error = abs(merged_small / small["norm_delta"] - 1)
    if dtype == torch.bfloat16:
        assert error > 1e-3  # the fallback's resolution limit that the factors avoid
    else:
        assert error < 1e-3  # float32 merges resolve it (measured 1.3e-4)


def _merge_in_float64(adapter) -> dict[str, np.ndarray]:
    """{weight name: W_merged - W_base} of PEFT's own merge on a float64 base."""
    from peft import PeftModel

    lm = _tiny_lm().double()
    base = {k: v.clone() for k, v in lm.state_dict().items()}
    merged = PeftModel.from_pretrained(lm, adapter).merge_and_unload()
    return {k: (v.double() - base[k]).numpy() for k, v in merged.state_dict().items() if k in base}


@pytest.mark.parametrize("rslora", [False, True])
def test_adapter_deltas_are_peft_merge_and_rslora(tmp_path, rslora):
    """rank_pattern, alpha_pattern and use_rslora (alpha / sqrt(r)) as PEFT itself merges
    them (on a float64 base), and fan_in_fan_out ignored as PEFT ignores it for nn.Linear."""
    fam = _peft_family(tmp_path, rslora=rslora, dtypes=(torch.float32,))
    config = json.loads((fam["adapter"] / "adapter_config.json").read_text())
    assert config["use_rslora"] is rslora and config["rank_pattern"] == RANK_PATTERN
    peft_delta = _merge_in_float64(fam["adapter"])
    factors = _factor_updates(fam["adapter"], rslora)
    df = weight_deltas(None, fam["base"][torch.float32], adapter=fam["adapter"])
    for row in module_table(df).itertuples(index=False):
        key = _weight_name(row.layer, row.module)
        assert row.norm_delta == pytest.approx(np.linalg.norm(peft_delta[key]), rel=1e-6, abs=1e-300), key
        if row.module in TARGETS:
            assert row.norm_delta == pytest.approx(np.linalg.norm(factors[key]), rel=1e-10)
    # spelled out for layer 1's q_proj (rank 2): alpha / sqrt(2) with rslora, alpha / 2 without
    from safetensors.numpy import load_file

    raw = load_file(fam["adapter"] / "adapter_model.safetensors")
    q1 = "base_model.model.model.layers.1.self_attn.q_proj"
    ba = raw[f"{q1}.lora_B.weight"].astype(np.float64) @ raw[f"{q1}.lora_A.weight"].astype(np.float64)
    got = module_table(df).query("layer == 1 and module == 'q_proj'")["norm_delta"].item()
    assert got == pytest.approx(ALPHA / (np.sqrt(2) if rslora else 2) * np.linalg.norm(ba), rel=1e-10)

    config["fan_in_fan_out"] = True  # PEFT warns and sets it False for nn.Linear targets
    (fam["adapter"] / "adapter_config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="fan_in_fan_out is set to True"):
        peft_fifo = _merge_in_float64(fam["adapter"])
    fifo = weight_deltas(None, fam["base"][torch.float32], adapter=fam["adapter"])
    assert np.array_equal(fifo["norm_delta"], df["norm_delta"])
    assert all(np.allclose(peft_fifo[k], peft_delta[k], rtol=0, atol=1e-12) for k in peft_delta)


def _rewrite(adapter, change=None, drop: str | None = None, config: dict | None = None):
    if change or drop:
        state = load_file(adapter / "adapter_model.safetensors")
        state.update(change or {})
        state.pop(drop, None)
        save_file(state, adapter / "adapter_model.safetensors")
    if config is not None:
        (adapter / "adapter_config.json").write_text(json.dumps(config))


def test_adapter_errors_are_named(peft_family, tmp_path):
    """One-line messages naming the model, the adapter and the tensor or config key."""
    fam = peft_family
    base, good = fam["base"][torch.float32], fam["adapter"]
    config = json.loads((good / "adapter_config.json").read_text())

    def broken(tag, **kw):
        path = tmp_path / tag
        shutil.copytree(good, path)
        _rewrite(path, **kw)
        return path

    key = "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"
    wide = broken("wide", change={key: torch.zeros(AD + 1, R)})
    pattern = (r"^model ft: adapter " + re.escape(str(wide)) + r": model\.layers\.0\.mlp\.down_proj\.lora_B @ "
               r"lora_A is \[19, 24\].*base tensor model\.layers\.0\.mlp\.down_proj\.weight is \[18, 24\]$")
    with pytest.raises(WeightDeltaError, match=pattern) as err:
        weight_deltas(None, base, "ft", adapter=wide)
    assert "\n" not in str(err.value)
    for missing in ("r", "lora_alpha"):
        bad = broken(f"no_{missing}", config={k: v for k, v in config.items() if k != missing})
        with pytest.raises(WeightDeltaError, match=rf"^model ft: adapter {re.escape(str(bad))}: "
                                                   rf"adapter_config.json has no '{missing}'$"):
            weight_deltas(None, base, "ft", adapter=bad)
    rank = broken("rank", config={**config, "r": 5})
    with pytest.raises(WeightDeltaError, match=r"^model ft: adapter .*/rank: model\.layers\.\d\.\S+\.lora_A\.weight "
                                             r"\[4, \d+\] and lora_B\.weight \[\d+, 4\] do not have rank r = 5"):
        weight_deltas(None, base, "ft", adapter=rank)
    half = broken("half", drop=key)
    with pytest.raises(WeightDeltaError, match=r"down_proj\.lora_B\.weight is missing"):
        weight_deltas(None, base, "ft", adapter=half)
    layer = f"base_model.model.model.layers.{AL}.mlp.up_proj"  # one layer more than the base has
    deep = broken("deep", change={f"{layer}.lora_A.weight": torch.zeros(R, AD),
                                  f"{layer}.lora_B.weight": torch.zeros(AFF, R)})
    with pytest.raises(WeightDeltaError, match=rf"has no layer {AL} up_proj weight in the reference"):
        weight_deltas(None, base, "ft", adapter=deep)
    with pytest.raises(WeightDeltaError, match="cannot read adapter_config.json"):
        weight_deltas(None, base, "ft", adapter=tmp_path / "nowhere")


def test_adapter_pickle_dora_and_row_blocks(peft_family, tmp_path, monkeypatch, caplog):
    """adapter_model.bin only where allowed (same numbers); DoRA falls back to the merged
    difference with a warning; base norms read in row blocks agree."""
    fam = peft_family
    base, merged, adapter = fam["base"][torch.float32], fam["merged"][torch.float32], fam["adapter"]
    want = weight_deltas(None, base, adapter=adapter)
    monkeypatch.setattr(wd, "ROW_BLOCK_ELEMENTS", 7)
    blocked = weight_deltas(None, base, adapter=adapter)
    assert np.allclose(blocked["norm_base"], want["norm_base"], rtol=1e-12) and blocked["norm_delta"].equals(
        want["norm_delta"])

    pickled = tmp_path / "pickled"
    shutil.copytree(adapter, pickled)
    torch.save(load_file(pickled / "adapter_model.safetensors"), pickled / "adapter_model.bin")
    (pickled / "adapter_model.safetensors").unlink()
    with pytest.raises(WeightDeltaError, match="is a pickle"):
        weight_deltas(None, base, adapter=pickled)
    assert weight_deltas(None, base, adapter=pickled, allow_pickle=True)["norm_delta"].equals(want["norm_delta"])

    dora = tmp_path / "dora"
    shutil.copytree(adapter, dora)
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with caplog.at_level("WARNING", logger=wd.__name__):
        fallback = weight_deltas(merged, base, "ft", adapter=dora)
    assert "use_dora: true" in caplog.text and "comparing merged weights instead" in caplog.text
    assert fallback["norm_delta"].equals(weight_deltas(merged, base, "ft")["norm_delta"])
    with pytest.raises(WeightDeltaError, match="use_dora: true.*no merged weights"):
        weight_deltas(None, base, "ft", adapter=dora)


def test_adapter_modules_matched_by_layer_then_name():
    """A renamed prefix still matches by layer and module; two stacks with the same layer
    and module (e.g. a vision tower's) are told apart by the reference's tensor name."""
    from interp_lib.model.adapter_deltas import LoraUpdate, match_updates

    def update(name):
        return LoraUpdate(name, 0, "q_proj", torch.zeros(1, 2), torch.zeros(2, 1), 1.0)

    lm = update("model.language_model.layers.0.self_attn.q_proj")
    vision = update("model.vision.layers.0.self_attn.q_proj")
    assert match_updates([lm], {(0, "q_proj"): "language_model.model.layers.0.self_attn.q_proj.weight"}, "a") == {
        (0, "q_proj"): lm}
    tensors = {(0, "q_proj"): "model.language_model.layers.0.self_attn.q_proj.weight"}
    assert match_updates([vision, lm], tensors, "a")[(0, "q_proj")] is lm
    with pytest.raises(WeightDeltaError, match="several modules are layer 0 q_proj"):
        match_updates([vision, vision], tensors, "a", "m")
