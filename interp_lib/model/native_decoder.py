"""A supported decoder's weights from its config.json and safetensors, without Hugging Face's
modelling code.

`HookedModel` runs a decoder block by block from its weights; it needs the HF model only as
a container of named modules (q_proj, input_layernorm, mlp, rotary_emb, ...). Importing HF's
modelling code costs a model job about 3 s of its start-up (docs/measured.md: Job start-up
cost), so the workflow's model-running jobs build this container instead: the same module
names, state-dict keys and numerics as HF's (`state_fingerprint` agrees), the config still
read by `AutoConfig` (its defaults and RoPE standardisation are HF's). What it cannot build
(weights not in safetensors, RoPE that changes with sequence length, an unknown activation
or key) is refused with a reason, and `models.load_hooked` then loads by HF.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from .architecture import FAMILIES, SUPPORTED_MODEL_TYPES

# HF's ACT2FN entries these families use, with HF's numerics
ACTIVATIONS = {
    "gelu_pytorch_tanh": lambda x: nn.functional.gelu(x, approximate="tanh"),
    "silu": nn.functional.silu,
    "swish": nn.functional.silu,
}
# RoPE types whose frequencies are fixed at load (HF's dynamic_rope_update changes the others per call)
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


# config.json keys the hooked model and build_native read, per model_type (beside COMMON_KEYS)
COMMON_KEYS = ("model_type", "num_attention_heads", "num_key_value_heads", "hidden_size",
               "intermediate_size", "num_hidden_layers", "vocab_size", "rms_norm_eps", "rope_parameters",
               "tie_word_embeddings", "max_position_embeddings")
_GEMMA_KEYS = ("head_dim", "hidden_activation", "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping",
               "sliding_window", "layer_types")
_QWEN_KEYS = ("hidden_act", "use_sliding_window", "max_window_layers", "sliding_window", "layer_types")
# head_dim: a class default where the class has one (Gemma's 256, Qwen3's 128), so never guessed;
# Qwen2's config has none (hidden_size / heads, as ArchSpec computes it)
FAMILY_KEYS = {"gemma2": _GEMMA_KEYS, "gemma3_text": _GEMMA_KEYS, "llama": ("head_dim", "hidden_act"),
               "mistral": ("head_dim", "hidden_act", "sliding_window"), "qwen2": _QWEN_KEYS,
               "qwen3": ("head_dim",) + _QWEN_KEYS}


def read_config_json(path: str | Path) -> SimpleNamespace | None:
    """A model directory's config.json as attributes, read without importing transformers, when
    transformers 5 wrote it (it writes every key of the model's own config class) with every key
    of COMMON_KEYS and FAMILY_KEYS, and RoPE of the "default" type; None otherwise (custom code,
    quantized weights, an older file, other RoPE types), and then AutoConfig reads it with HF's
    defaults. tests/test_native_decoder.py checks both give the same ArchSpec and frequencies."""
    file = Path(path) / "config.json"
    try:
        raw = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    model_type = raw.get("model_type")
    if (not str(raw.get("transformers_version", "")).startswith("5.") or model_type not in FAMILY_KEYS
            or "auto_map" in raw or raw.get("quantization_config")
            or any(k not in raw for k in COMMON_KEYS + FAMILY_KEYS[model_type])):
        return None
    ropes = raw["rope_parameters"]
    ropes = ropes.values() if model_type == "gemma3_text" else [ropes]
    if any(not isinstance(r, dict) or r.get("rope_type") != "default" or "rope_theta" not in r for r in ropes):
        return None
    if raw.get("partial_rotary_factor", 1.0) != 1.0:
        return None
    return SimpleNamespace(**raw, name_or_path=str(path))


class NotNative(ValueError):
    """This checkpoint needs HF's modelling code; the message says why."""


class _Linear(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        # a Parameter is kept as is: a tied lm_head shares the embedding's, as HF's does
        self.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)


class _Embedding(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)


class _RMSNorm(nn.Module):
    """RMSNorm with HF's rounding: Gemma multiplies by (1 + w) in float32 then casts; the
    Llama family (Qwen3's q/k norms) casts then multiplies by w."""

    def __init__(self, weight: torch.Tensor, eps: float, gemma: bool):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.eps, self.gemma = eps, gemma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.gemma:
            return (h * (1.0 + self.weight.float())).type_as(x)
        return self.weight * h.to(x.dtype)


class _MLP(nn.Module):
    def __init__(self, gate_proj: _Linear, up_proj: _Linear, down_proj: _Linear, activation: str):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = gate_proj, up_proj, down_proj
        self.act_fn = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class _Rotary(nn.Module):
    """HF's rotary embedding: (cos, sin) [B, T, dh] in x's dtype; Gemma-3 takes a layer type."""

    def __init__(self, inv_freq: dict, scaling: dict):
        super().__init__()
        self.inv_freq, self.scaling = inv_freq, scaling  # by layer type (None: one for all layers)

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, layer_type: str | None = None):
        inv_freq = self.inv_freq[layer_type].to(device=x.device, dtype=torch.float)
        freqs = position_ids[..., None].float() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        scale = self.scaling[layer_type]
        return (emb.cos() * scale).to(dtype=x.dtype), (emb.sin() * scale).to(dtype=x.dtype)


class NativeDecoder(nn.Module):
    """A decoder laid out as HF's *ForCausalLM (`model.embed_tokens`, `model.layers[i]`,
    `model.norm`, `model.rotary_emb`, `lm_head`), for `HookedModel`; it has no forward."""

    def __init__(self, config, model: nn.Module, lm_head: _Linear):
        super().__init__()
        self.config, self.model, self.lm_head = config, model, lm_head

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint directory (one file or an index's shards)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return [path / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    raise NotNative(f"no model.safetensors (or index) in {path}")


def _rope(config, d_head: int, layer_type: str | None) -> tuple[torch.Tensor, float]:
    params = config.rope_parameters if layer_type is None else config.rope_parameters[layer_type]
    rope_type = params.get("rope_type", "default")
    if rope_type not in STATIC_ROPE_TYPES:
        raise NotNative(f"RoPE type {rope_type!r} changes with the sequence length")
    if getattr(config, "partial_rotary_factor", 1.0) != 1.0:
        raise NotNative("partial rotary embeddings")
    if rope_type == "default":
        base = params["rope_theta"]
        return 1.0 / (base ** (torch.arange(0, d_head, 2, dtype=torch.float) / d_head)), 1.0
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    extra = {} if layer_type is None else {"layer_type": layer_type}
    return ROPE_INIT_FUNCTIONS[rope_type](config, None, **extra)


def build_native(path: str | Path, config, dtype: torch.dtype, device: str) -> NativeDecoder:
    """The decoder in `path` (config already read by AutoConfig) with every floating tensor in
    `dtype` on `device`. Raises NotNative when HF's modelling code is needed."""
    from safetensors.torch import load_file

    path = Path(path)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise NotNative(f"model_type {model_type!r}")
    if getattr(config, "quantization_config", None):
        raise NotNative("quantized weights")
    family = FAMILIES[model_type]
    gemma = family in ("gemma2", "gemma3")
    activation = getattr(config, "hidden_activation", None) if gemma else getattr(config, "hidden_act", None)
    if activation not in ACTIVATIONS:
        raise NotNative(f"activation {activation!r}")
    n_heads = config.num_attention_heads
    d_head = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    if family == "gemma3":
        layer_types = sorted(set(config.layer_types))
        ropes = {t: _rope(config, d_head, t) for t in layer_types if config.rope_parameters.get(t) is not None}
    else:
        ropes = {None: _rope(config, d_head, None)}

    state: dict[str, torch.Tensor] = {}
    for file in weight_files(path):
        state.update(load_file(str(file), device=str(device)))
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    used: set[str] = set()

    def take(key: str, required: bool = True) -> torch.Tensor | None:
        if key not in state:
            if required:
                raise NotNative(f"no tensor {key}")
            return None
        used.add(key)
        return state[key]

    def linear(prefix: str) -> _Linear:
        return _Linear(take(prefix + ".weight"), take(prefix + ".bias", required=False))

    def norm(key: str) -> _RMSNorm:
        return _RMSNorm(take(key + ".weight"), config.rms_norm_eps, gemma)

    layers = nn.ModuleList()
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        layer = nn.Module()
        attn = nn.Module()
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(attn, proj, linear(p + "self_attn." + proj))
        if family in ("gemma3", "qwen3"):
            attn.q_norm, attn.k_norm = norm(p + "self_attn.q_norm"), norm(p + "self_attn.k_norm")
        layer.self_attn = attn
        layer.mlp = _MLP(linear(p + "mlp.gate_proj"), linear(p + "mlp.up_proj"), linear(p + "mlp.down_proj"), activation)
        layer.input_layernorm = norm(p + "input_layernorm")
        layer.post_attention_layernorm = norm(p + "post_attention_layernorm")
        if gemma:
            layer.pre_feedforward_layernorm = norm(p + "pre_feedforward_layernorm")
            layer.post_feedforward_layernorm = norm(p + "post_feedforward_layernorm")
        layers.append(layer)

    body = nn.Module()
    body.embed_tokens = _Embedding(take("model.embed_tokens.weight"))
    body.layers = layers
    body.norm = norm("model.norm")
    body.rotary_emb = _Rotary({t: f for t, (f, _) in ropes.items()}, {t: s for t, (_, s) in ropes.items()})
    head = take("lm_head.weight", required=False)
    if head is None or getattr(config, "tie_word_embeddings", False):
        if not getattr(config, "tie_word_embeddings", False):
            raise NotNative("no lm_head.weight and tie_word_embeddings is false")
        lm_head = _Linear(body.embed_tokens.weight, None)
    else:
        lm_head = _Linear(head, None)
    unused = sorted(set(state) - used - {"lm_head.weight"})
    if unused:
        raise NotNative(f"unexpected tensor {unused[0]}" + (f" and {len(unused) - 1} more" if len(unused) > 1 else ""))
    if body.embed_tokens.weight.shape != (config.vocab_size, config.hidden_size):
        raise NotNative(f"embedding of shape {tuple(body.embed_tokens.weight.shape)}")
    return NativeDecoder(config, body, lm_head).eval()

