"""How far fine-tuning moved each weight matrix: a model's weights vs its base's.

For every layer and LoRA-targeted module (q/k/v/o_proj, gate/up/down_proj) of a
fine-tuned model and of its reference model (the configured model without an adapter on
the same base; its merged weights <results_dir>/models/{reference}/model.safetensors):

    norm_delta = ||delta_W||_F,  norm_base = ||W_base||_F,
    relative_delta = norm_delta / norm_base

and for o_proj, per attention head h, the same for the columns h*dh:(h+1)*dh (the ones
that read head h's z): the head's share of the attention output change.

delta_W, the change of W_base [out, in] (sign: fine-tuned minus base):
- with the model's LoRA adapter (PEFT directory): the exact update scaling * B @ A from
  its factors, in float64 (interp_lib.model.adapter_deltas), independent of the dtype the
  merged weights are stored in; modules the adapter does not target keep their rows with
  norm_delta 0.
- without one (or for a variant whose update is not B @ A, such as DoRA): the fallback
  W_model - W_base of the merged weights. These are stored in analysis.precision's dtype;
  in bfloat16 each changed element carries a rounding error of up to 2^-9 of its
  magnitude, so small updates come out wrong (measured: 1e-4 of the weight's norm 10% off,
  1e-5 several-fold).

Tensors are read one at a time and in row blocks with safetensors' `safe_open`, and
reduced in float64, so memory stays at a few row blocks even for Gemma-2-2b (the LoRA
path needs only the factors and r x r Gram matrices besides).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..model.adapter_deltas import (
    ATTN_MODULES,
    MLP_MODULES,
    MODULES,
    WeightDeltaError,
    adapter_config,
    check_fit,
    lora_updates,
    match_updates,
    unsupported,
)

log = logging.getLogger(__name__)

COLUMNS = ["model", "reference", "layer", "module", "head", "norm_delta", "norm_base", "relative_delta"]
_TENSOR = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(" + "|".join(MODULES) + r")\.weight$")
ROW_BLOCK_ELEMENTS = 1 << 22  # elements read per block (32 MiB in float64)


def reference_model(config: dict, name: str, preferred: str = "base") -> str | None:
    """The configured model that `name` is compared against: a model without an adapter
    whose base path equals `name`'s (`preferred` first, then config order). None for a
    model without an adapter, or when no such model is configured."""
    models = config["models"]
    spec = models[name]
    if not spec.get("adapter"):
        return None
    candidates = [m for m, s in models.items() if not s.get("adapter") and s["base"] == spec["base"]]
    if preferred in candidates:
        return preferred
    return candidates[0] if candidates else None


def compared_models(config: dict, preferred: str = "base") -> dict[str, str]:
    """{fine-tuned model: reference model} for every model that has a reference."""
    out = {}
    for name in config["models"]:
        ref = reference_model(config, name, preferred)
        if ref is not None:
            out[name] = ref
    return out


def module_tensors(names) -> dict[tuple[int, str], str]:
    """{(layer, module): tensor name} of the LoRA-targeted weight matrices among `names`."""
    out = {}
    for name in names:
        match = _TENSOR.search(name)
        if match:
            out[(int(match.group(1)), match.group(2))] = name
    return out


def _read_config(weights: Path) -> dict:
    path = weights.parent / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def head_layout(config: dict, o_proj_in: int) -> tuple[int, int]:
    """(n_heads, head_dim) of o_proj's input (n_heads * head_dim columns)."""
    cfg = config.get("text_config", config)
    n_heads = cfg.get("num_attention_heads")
    if not n_heads:
        raise WeightDeltaError("config.json has no num_attention_heads: cannot split o_proj into heads")
    head_dim = cfg.get("head_dim") or o_proj_in // n_heads
    if n_heads * head_dim != o_proj_in:
        raise WeightDeltaError(f"o_proj has {o_proj_in} input columns, not num_attention_heads * head_dim "
                               f"= {n_heads} * {head_dim}")
    return int(n_heads), int(head_dim)


def _blocks(n_rows: int, n_cols: int):
    step = max(1, ROW_BLOCK_ELEMENTS // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


def _column_group_squares(f_base, name: str, groups: int, f_model=None) -> tuple[np.ndarray, np.ndarray]:
    """Sums of squares of base and (with `f_model`) of model - base over `groups` equal
    column groups of a 2-D tensor, read in row blocks: (sq_delta, sq_base), [groups] each
    (sq_delta zeros without `f_model`)."""
    import torch

    sb = f_base.get_slice(name)
    shape = list(sb.get_shape())
    if len(shape) != 2:
        raise WeightDeltaError(f"{name}: expected a 2-D weight matrix, got shape {shape}")
    sm = f_model.get_slice(name) if f_model is not None else None
    if sm is not None and list(sm.get_shape()) != shape:
        raise WeightDeltaError(f"{name}: shape {list(sm.get_shape())} differs from the reference's {shape}")
    rows, cols = shape
    width = cols // groups
    sq_delta = np.zeros(groups)
    sq_base = np.zeros(groups)
    for a, b in _blocks(rows, cols):
        w0 = sb[a:b].to(torch.float64)
        sq_base += (w0 * w0).reshape(b - a, groups, width).sum(dim=(0, 2)).numpy()
        if sm is not None:
            d = (sm[a:b].to(torch.float64) - w0).reshape(b - a, groups, width)
            sq_delta += (d * d).sum(dim=(0, 2)).numpy()
    return sq_delta, sq_base


def _relative(norm_delta: float, norm_base: float) -> float:
    return norm_delta / norm_base if norm_base > 0 else (0.0 if norm_delta == 0 else float("inf"))


def _table_rows(model: str, reference: str, layer: int, module: str, sq_delta, sq_base) -> list[list]:
    """The module's row (head empty) and, for o_proj, one row per head (column group)."""
    nd, nb = float(np.sqrt(sq_delta.sum())), float(np.sqrt(sq_base.sum()))
    rows = [[model, reference, layer, module, None, nd, nb, _relative(nd, nb)]]
    if module == "o_proj":
        for h in range(len(sq_base)):
            hd, hb = float(np.sqrt(sq_delta[h])), float(np.sqrt(sq_base[h]))
            rows.append([model, reference, layer, module, h, hd, hb, _relative(hd, hb)])
    return rows


def _ordered(tensors: dict[tuple[int, str], str]):
    return sorted(tensors.items(), key=lambda kv: (kv[0][0], MODULES.index(kv[0][1])))


def _groups(module: str, f, name: str, config_weights: Path) -> int:
    """Column groups of a tensor: o_proj's heads, else 1."""
    if module != "o_proj":
        return 1
    return head_layout(_read_config(config_weights), f.get_slice(name).get_shape()[-1])[0]


def _merged_rows(model_weights: Path, base_weights: Path, model: str, reference: str) -> list[list]:
    """Fallback: delta_W = W_model - W_base from the merged weights (rounded to their dtype)."""
    from ..model.loading import open_weights

    rows = []
    with open_weights(model_weights, model) as fm, open_weights(base_weights, reference) as fb:
        tensors = module_tensors(fm.keys())
        base_tensors = module_tensors(fb.keys())
        if not tensors:
            raise WeightDeltaError(f"model {model}: {model_weights} has no layers.N.(self_attn|mlp).<module>.weight "
                                   f"tensors ({', '.join(MODULES)})")
        missing = sorted(set(tensors) - set(base_tensors))
        if missing:
            layer, module = missing[0]
            raise WeightDeltaError(f"model {model}: reference {reference or base_weights} lacks layer {layer} "
                                   f"{module} ({len(missing)} module(s) missing): not the same architecture")
        for (layer, module), name in _ordered(tensors):
            if base_tensors[(layer, module)] != name:
                raise WeightDeltaError(f"model {model}: tensor {name} is {base_tensors[(layer, module)]} "
                                       "in the reference")
            groups = _groups(module, fm, name, model_weights)
            rows += _table_rows(model, reference, layer, module, *_column_group_squares(fb, name, groups, fm))
    return rows


def _adapter_rows(adapter, config: dict, base_weights: Path, config_weights: Path, model: str, reference: str,
                  allow_pickle: bool) -> list[list]:
    """delta_W = scaling * B @ A from the adapter's factors for its targeted modules, 0 for
    the reference's other modules; norm_base from the reference's merged weights."""
    from ..model.loading import open_weights

    updates = lora_updates(adapter, config, model, allow_pickle)
    rows = []
    with open_weights(base_weights, reference) as fb:
        base_tensors = module_tensors(fb.keys())
        if not base_tensors:
            raise WeightDeltaError(f"model {model}: reference {reference or base_weights} has no "
                                   f"layers.N.(self_attn|mlp).<module>.weight tensors ({', '.join(MODULES)})")
        matched = match_updates(updates, base_tensors, adapter, model)
        for (layer, module), name in _ordered(base_tensors):
            groups = _groups(module, fb, name, config_weights)
            sq_delta, sq_base = _column_group_squares(fb, name, groups)
            update = matched.get((layer, module))
            if update is not None:
                check_fit(update, fb.get_slice(name).get_shape(), name, adapter, model)
                sq_delta = update.group_squares(groups)
            rows += _table_rows(model, reference, layer, module, sq_delta, sq_base)
    if not matched:
        log.warning("model %s: adapter %s targets none of %s: every delta is 0", model, adapter, ", ".join(MODULES))
    log.info("model %s: adapter %s updates %d of the reference's %d modules (scaling %s)", model, adapter,
             len(matched), len(base_tensors), ", ".join(f"{s:g}" for s in sorted({u.scaling for u in updates})))
    return rows


def weight_deltas(model_weights: str | Path | None, base_weights: str | Path, model: str = "", reference: str = "",
                  adapter: str | Path | None = None, allow_pickle: bool = False) -> pd.DataFrame:
    """Tidy table (COLUMNS) of one model's weight changes against its reference: one row per
    (layer, module) with head empty, plus one row per o_proj head (head = h).

    adapter: the model's PEFT LoRA directory; delta_W is then its exact update (the
    merged model_weights are read only for a variant such as DoRA, and may be None
    otherwise). Without it, delta_W is the merged difference. The head layout comes from
    the config.json beside model_weights (beside base_weights when None)."""
    base_weights = Path(base_weights)
    model_weights = Path(model_weights) if model_weights is not None else None
    config_weights = model_weights or base_weights
    if adapter:

        config = adapter_config(adapter, model)
        reason = unsupported(config)
        if reason is None:
            rows = _adapter_rows(adapter, config, base_weights, config_weights, model, reference, allow_pickle)
        elif model_weights is None:
            raise WeightDeltaError(f"model {model}: adapter {adapter} has {reason} (its update is not "
                                   "scaling * B @ A) and no merged weights were given to compare instead")
        else:
            log.warning("model %s: adapter %s has %s (its update is not scaling * B @ A): comparing merged "
                        "weights instead, at their dtype's resolution", model, adapter, reason)
            rows = _merged_rows(model_weights, base_weights, model, reference)
    elif model_weights is None:
        raise WeightDeltaError(f"model {model}: neither merged weights nor an adapter to compare")
    else:
        rows = _merged_rows(model_weights, base_weights, model, reference)
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["head"] = df["head"].astype("Int64")
    mods = df[df["head"].isna()]
    top = mods.loc[mods["relative_delta"].idxmax()]
    log.info("model %s vs %s: %d modules in %d layers; largest relative change %.3g (layer %s %s)", model,
             reference, len(mods), df["layer"].nunique(), top["relative_delta"], top["layer"], top["module"])
    return df


def read_weight_deltas(path) -> pd.DataFrame:
    """A weight-delta CSV back, with `head` as a nullable integer."""
    df = pd.read_csv(path)
    if len(df.columns) == 0:
        return pd.DataFrame(columns=COLUMNS)
    df["head"] = df["head"].astype("Int64")
    return df


def module_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of whole modules (head empty)."""
    return df[df["head"].isna()].reset_index(drop=True)


def head_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of single o_proj heads."""
    return df[df["head"].notna()].reset_index(drop=True)


def pooled(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Module rows pooled over the other keys: norm_delta = sqrt(sum norm_delta^2),
    norm_base likewise, relative_delta their ratio (e.g. by ["model", "layer"] gives the
    whole layer's relative change)."""
    mods = module_table(df)
    g = mods.assign(sq_d=mods["norm_delta"] ** 2, sq_b=mods["norm_base"] ** 2).groupby(by, sort=False)
    out = g[["sq_d", "sq_b"]].sum().reset_index()
    out["norm_delta"] = np.sqrt(out.pop("sq_d"))
    out["norm_base"] = np.sqrt(out.pop("sq_b"))
    out["relative_delta"] = [_relative(d, b) for d, b in zip(out["norm_delta"], out["norm_base"])]
    return out


__all__ = ["COLUMNS", "MODULES", "ATTN_MODULES", "MLP_MODULES", "WeightDeltaError", "reference_model",
           "compared_models", "weight_deltas", "read_weight_deltas", "module_table", "head_table", "pooled"]
