"""Exact weight updates of a PEFT LoRA adapter, from its factors.

A LoRA adapter changes a targeted nn.Linear weight W [out, in] by

    delta_W = scaling * B @ A,   A = lora_A.weight [r, in],  B = lora_B.weight [out, r],
    scaling = lora_alpha / r   (lora_alpha / sqrt(r) with use_rslora),

with r and lora_alpha per module from rank_pattern / alpha_pattern (matched as PEFT does,
against the module's name in the model). This is what PEFT's merge adds, before the
merged weights are rounded to the analysis dtype. `fan_in_fan_out` is ignored, as PEFT
ignores it for nn.Linear targets (every q/k/v/o/gate/up/down_proj in HF decoder models);
a Conv1D-stored [in, out] base tensor is reported as not fitting.

Norms of delta_W over column groups are computed from r x r Gram matrices in float64,

    ||delta_W[:, g]||_F^2 = scaling^2 * sum_ij (A_g A_g^T)_ij (B^T B)_ij,

so delta_W itself is never materialised (not even a row block of it), whatever the size.
Rounding is ~1e-16 * (||B|| ||A|| / ||B @ A||)^2 relative: negligible unless the factors
nearly cancel (measured against numpy's float64 B @ A and PEFT's float64 merge: < 1e-13).
"""

from __future__ import annotations

import json
import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# The linear modules of a decoder block whose weight changes are measured (HF names). Here,
# the lower layer, so that weight_deltas imports this module and not the other way round;
# torch is imported in the functions that need it, so the weight tables and plots start
# without it.
ATTN_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
MODULES = ATTN_MODULES + MLP_MODULES


def adaptable_modules(hooked) -> dict:
    """{(layer, module): (the weight's name in the model, the nn.Linear-like module)} of every
    MODULES entry a hooked model's layers have (a LoRA target)."""
    out = {}
    for layer, block in enumerate(hooked._layers):
        for module in MODULES:
            part = "self_attn" if module in ATTN_MODULES else "mlp"
            linear = getattr(getattr(block, part), module, None)
            if linear is not None:
                out[(layer, module)] = (f"model.layers.{layer}.{part}.{module}.weight", linear)
    return out


class WeightDeltaError(ValueError):
    """Weights that cannot be compared; the message names the model and the tensor."""


CONFIG_FILE = "adapter_config.json"
SAFETENSORS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"
# LoRA variants whose update is not scaling * B @ A (the caller falls back to merged weights).
UNSUPPORTED_FLAGS = ("use_dora", "use_qalora", "use_bdlora")
# [base_model.model.]<module name>.lora_A|B.weight, module name ending in layers.N.<part>.<module>
_FACTOR = re.compile(r"^(?:base_model\.model\.)?(?P<name>(?:.*\.)?layers\.(?P<layer>\d+)\.(?:self_attn|mlp)\."
                     r"(?P<module>" + "|".join(MODULES) + r"))\.lora_(?P<ab>[AB])\.weight$")


@dataclass
class LoraUpdate:
    """One module's factors as stored (torch tensors): a = lora_A [r, in], b = lora_B
    [out, r]; the update is scaling * b @ a, [out, in], added to the base weight."""

    name: str  # the module's name in the model, e.g. model.layers.3.self_attn.o_proj
    layer: int
    module: str
    a: torch.Tensor
    b: torch.Tensor
    scaling: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.b.shape[0], self.a.shape[1]

    def group_squares(self, groups: int = 1) -> np.ndarray:
        """Sums of squares of scaling * b @ a over `groups` equal column groups, [groups]
        (o_proj: group h = the columns h*dh:(h+1)*dh that read head h's z)."""
        import torch

        # float64 only here, one module at a time (the adapter stays in its stored dtype)
        b = self.b.to(torch.float64).numpy()
        r, cols = self.a.shape
        a = self.a.to(torch.float64).numpy().reshape(r, groups, cols // groups)
        gram_a = np.einsum("igk,jgk->gij", a, a)  # [groups, r, r]
        gram_b = b.T @ b  # [r, r]
        sq = self.scaling ** 2 * np.einsum("gij,ij->g", gram_a, gram_b)
        return np.maximum(sq, 0.0)  # a trace of a PSD product: >= 0 but for rounding


def _pattern_value(patterns: dict, name: str, default):
    """PEFT's get_pattern_key: the first pattern p with re.match(rf"(.*\\.)?({p})$", name)."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", name):
            return value
    return default


def adapter_config(adapter: str | Path, model: str = "") -> dict:
    """adapter_config.json of a PEFT adapter directory (WeightDeltaError if missing)."""
    path = Path(adapter) / CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightDeltaError(f"model {model}: adapter {adapter}: cannot read {CONFIG_FILE} ({exc})") from None


def unsupported(config: dict) -> str | None:
    """Why the adapter's update is not scaling * B @ A (e.g. DoRA), or None if it is."""
    if config.get("peft_type", "LORA") != "LORA":
        return f"peft_type {config['peft_type']}"
    flags = [f for f in UNSUPPORTED_FLAGS if config.get(f)]
    return f"{flags[0]}: true" if flags else None


def _load_tensors(adapter: Path, model: str, allow_pickle: bool) -> dict:
    """{key: float tensor} of the adapter's factors (adapter_model.safetensors, or the
    pickle adapter_model.bin with torch.load(weights_only=True) where allowed)."""
    if (adapter / SAFETENSORS_FILE).is_file():
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(adapter / SAFETENSORS_FILE), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys() if _FACTOR.match(k)}
        except SafetensorError as exc:
            raise WeightDeltaError(f"model {model}: adapter {adapter}: {SAFETENSORS_FILE} is damaged "
                                   f"({str(exc).strip().splitlines()[0]})") from None
    if (adapter / PICKLE_FILE).is_file():
        if not allow_pickle:
            raise WeightDeltaError(f"model {model}: adapter {adapter} is a pickle ({PICKLE_FILE}); convert it to "
                                   "safetensors or set analysis.allow_pickle: true")
        import torch

        try:
            state = torch.load(adapter / PICKLE_FILE, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
            raise WeightDeltaError(f"model {model}: adapter {adapter}: {PICKLE_FILE} does not load with "
                                   f"weights_only=True ({str(exc).strip().splitlines()[0]})") from None
        return {k: v for k, v in state.items() if _FACTOR.match(k)}
    raise WeightDeltaError(f"model {model}: adapter {adapter} has no {SAFETENSORS_FILE}")


def lora_updates(adapter: str | Path, config: dict, model: str = "", allow_pickle: bool = False) -> list[LoraUpdate]:
    """The adapter's updates of q/k/v/o/gate/up/down_proj modules (other targets, e.g.
    lm_head, and lora biases are not weight-matrix updates here). Checks each factor pair
    against itself and the config (keys, rank r); the fit to the base tensor is check_fit's."""
    adapter = Path(adapter)
    where = f"model {model}: adapter {adapter}"
    for key in ("r", "lora_alpha"):
        if key not in config:
            raise WeightDeltaError(f"{where}: {CONFIG_FILE} has no {key!r}")
    rank_pattern, alpha_pattern = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    pairs: dict[str, dict] = {}
    for key, tensor in _load_tensors(adapter, model, allow_pickle).items():
        m = _FACTOR.match(key)
        pair = pairs.setdefault(m["name"], {"layer": int(m["layer"]), "module": m["module"]})
        if tensor.ndim != 2:
            raise WeightDeltaError(f"{where}: {key} has shape {list(tensor.shape)}, not a 2-D factor")
        pair[m["ab"]] = tensor
    out = []
    for name, pair in pairs.items():
        if "A" not in pair or "B" not in pair:
            missing = "lora_A" if "A" not in pair else "lora_B"
            raise WeightDeltaError(f"{where}: {name}.{missing}.weight is missing (only its partner is saved)")
        a, b = pair["A"], pair["B"]
        r = int(_pattern_value(rank_pattern, name, config["r"]))
        alpha = float(_pattern_value(alpha_pattern, name, config["lora_alpha"]))
        if a.shape[0] != r or b.shape[1] != r:
            raise WeightDeltaError(f"{where}: {name}.lora_A.weight {list(a.shape)} and lora_B.weight "
                                   f"{list(b.shape)} do not have rank r = {r} of {CONFIG_FILE}")
        scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        out.append(LoraUpdate(name, pair["layer"], pair["module"], a, b, scaling))
    return out


def check_fit(update: LoraUpdate, base_shape, tensor: str, adapter, model: str = "") -> None:
    """WeightDeltaError unless scaling * B @ A [out, in] has the base tensor's shape."""
    if tuple(base_shape) != update.shape:
        hint = " (stored [in, out], Conv1D-style: not supported)" if tuple(base_shape) == update.shape[::-1] else ""
        raise WeightDeltaError(f"model {model}: adapter {adapter}: {update.name}.lora_B @ lora_A is "
                               f"{list(update.shape)} ([{update.b.shape[0]}, r] @ [r, {update.a.shape[1]}]), "
                               f"but the base tensor {tensor} is {list(base_shape)}{hint}")


def match_updates(updates: list[LoraUpdate], base_tensors: dict[tuple[int, str], str], adapter,
                  model: str = "") -> dict[tuple[int, str], LoraUpdate]:
    """{(layer, module): update} for the reference's tensors ({(layer, module): name}).
    Matched by layer and module, so that a renamed prefix (e.g. a checkpoint key mapping)
    does not matter; where several updates share them (another stack's layers.N, such as
    a vision tower's), the one whose name is the tensor's. An update whose layer and
    module the reference lacks raises WeightDeltaError."""
    by_key: dict[tuple[int, str], list[LoraUpdate]] = {}
    for u in updates:
        by_key.setdefault((u.layer, u.module), []).append(u)
    out = {}
    for key, found in by_key.items():
        tensor = base_tensors.get(key)
        if tensor is None:
            raise WeightDeltaError(f"model {model}: adapter {adapter}: {found[0].name} has no layer {key[0]} "
                                   f"{key[1]} weight in the reference: adapter and base do not match")
        if len(found) > 1:
            found = [u for u in found if f"{u.name}.weight" == tensor]
            if len(found) != 1:
                raise WeightDeltaError(f"model {model}: adapter {adapter}: several modules are layer {key[0]} "
                                       f"{key[1]}, and none is named as the reference's {tensor}")
        out[key] = found[0]
    return out
