"""What each supported decoder architecture is, read from its Hugging Face config: the
facts `HookedModel` runs on (`ArchSpec`), its hook points' names, and the small pure
functions on weights and activations that analyses share (per-head W_O, RMS scale, softcap,
attention mask). No model runs here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SUPPORTED_MODEL_TYPES = ("gemma2", "gemma3_text", "llama", "qwen2", "qwen3", "mistral")
# model_type -> ArchSpec.family
FAMILIES = {"gemma2": "gemma2", "gemma3_text": "gemma3", "llama": "llama", "qwen2": "llama",
            "qwen3": "qwen3", "mistral": "llama"}


class UnsupportedArchitecture(ValueError):
    pass


# Hook points of every block, in forward order (TransformerLens names); Gemma's post-norms add
# POST_NORM_HOOKS. attn.hook_result and attn.hook_pattern are computed only when hooked.
BLOCK_HOOKS = ("hook_resid_pre", "ln1.hook_scale", "attn.hook_pattern", "attn.hook_z", "attn.hook_result",
               "hook_attn_out", "hook_resid_mid", "ln2.hook_scale", "hook_mlp_out", "hook_resid_post")
POST_NORM_HOOKS = ("ln1_post.hook_scale", "ln2_post.hook_scale")


@dataclass(frozen=True)
class ArchSpec:
    """What differs between the supported decoders."""

    family: str  # "gemma2", "gemma3", "llama" (Llama, Qwen2, Mistral) or "qwen3"
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    d_vocab: int
    eps: float
    norm_offset: float  # RMSNorm gain is (offset + w): 1 for Gemma, 0 for Llama
    post_norms: bool  # Gemma's post-attention / post-feedforward norms
    embed_scale: float | None
    attn_scale: float
    attn_softcap: float | None
    final_softcap: float | None
    sliding_windows: tuple  # per layer: window length or None (global attention)
    qk_norms: bool = False  # RMSNorm on each head's queries and keys (Gemma-3, Qwen3)
    rope_layer_types: tuple | None = None  # per layer: the rotary embedding's layer type (Gemma-3)

    @classmethod
    def from_config(cls, config) -> ArchSpec:
        model_type = getattr(config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedArchitecture(
                f"model_type {model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        n_heads = config.num_attention_heads
        d_head = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        windows = layer_windows(config)
        family = FAMILIES[model_type]
        gemma = family in ("gemma2", "gemma3")
        return cls(
            family=family,
            n_layers=config.num_hidden_layers,
            n_heads=n_heads,
            n_kv_heads=getattr(config, "num_key_value_heads", None) or n_heads,
            d_head=d_head,
            d_model=config.hidden_size,
            d_vocab=config.vocab_size,
            eps=config.rms_norm_eps,
            norm_offset=1.0 if gemma else 0.0,
            post_norms=gemma,
            embed_scale=math.sqrt(config.hidden_size) if gemma else None,
            attn_scale=(config.query_pre_attn_scalar if gemma else d_head) ** -0.5,
            # HF's Gemma-3 attention never applies attn_logit_softcapping (nor does Gemma-3 itself)
            attn_softcap=getattr(config, "attn_logit_softcapping", None) if family == "gemma2" else None,
            final_softcap=getattr(config, "final_logit_softcapping", None) if gemma else None,
            sliding_windows=windows,
            qk_norms=family in ("gemma3", "qwen3"),
            rope_layer_types=tuple(config.layer_types) if family == "gemma3" else None,
        )


def layer_windows(config) -> tuple:
    """Per layer: the sliding-window length, or None for global attention. From the config's
    `layer_types` where it has them (recent transformers write them); otherwise as the
    transformers versions without them attend: Gemma-2 alternates local (even layers) and
    global; Qwen2 slides only with `use_sliding_window`, from layer `max_window_layers` on;
    Mistral slides in every layer."""
    n = config.num_hidden_layers
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return tuple(window if t == "sliding_attention" else None for t in layer_types)
    if window is None:
        return (None,) * n
    model_type = getattr(config, "model_type", None)
    if model_type == "gemma2":
        return tuple(window if i % 2 == 0 else None for i in range(n))
    if model_type == "qwen2":
        if not getattr(config, "use_sliding_window", False):
            return (None,) * n
        start = getattr(config, "max_window_layers", n)
        return tuple(window if i >= start else None for i in range(n))
    return (window,) * n


def o_proj_weight_name(layer: int) -> str:
    """State-dict key of a layer's o_proj weight [d, H*dh] in HF decoder checkpoints."""
    return f"model.layers.{layer}.self_attn.o_proj.weight"


def W_O_from_o_proj(weight: torch.Tensor, n_heads: int, d_head: int) -> torch.Tensor:
    """[d, H*dh] o_proj weight -> [H, dh, d] per-head output matrices."""
    return weight.T.reshape(n_heads, d_head, weight.shape[0])


def softcap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    return x if cap is None else torch.tanh(x / cap) * cap


def rms_scale(x: torch.Tensor, eps: float) -> torch.Tensor:
    """sqrt(mean(x^2) + eps) over the last axis, float32, keepdim."""
    return torch.sqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)


def attention_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """Boolean [Tq, Tk]: causal, and within the sliding window when there is one."""
    allowed = k_pos[None, :] <= q_pos[:, None]
    if window is not None:
        allowed &= k_pos[None, :] > q_pos[:, None] - window
    return allowed
