"""The hooked model: the one module that knows the architectures.

`HookedModel` re-runs a Hugging Face decoder (Gemma-2 and Gemma-3 text, or the Llama
family: Llama, Qwen2, Qwen3, Mistral) block by block from its own weights, exposing
TransformerLens hook points. Gemma-3 and Qwen3 add RMSNorm on each head's queries and keys
(before RoPE; run through the model's own q_norm/k_norm modules), and Gemma-3 gives sliding
and global layers RoPE bases of their own. Shapes: B batch, T positions, d d_model, H query heads, dh head dim.

Hook points (TransformerLens names) and their shapes:
    hook_embed                       [B, T, d]   scaled token embedding (= resid_pre of block 0)
    blocks.{l}.hook_resid_pre        [B, T, d]
    blocks.{l}.ln1.hook_scale        [B, T, 1]   sqrt(mean(x^2) + eps) of the input norm
    blocks.{l}.attn.hook_pattern     [B, H, T, Tk] attention probabilities (after softcap and
                                                  softmax, float32; keys the causal mask or a
                                                  sliding window hide are 0; Tk = T, or more
                                                  with a kv_prefix). Built only when hooked; a
                                                  hook that replaces it must return the new tensor
    blocks.{l}.attn.hook_z           [B, T, H, dh] per-head input slice of o_proj
    blocks.{l}.attn.hook_result      [B, T, H, d] per-head output z_h @ W_O[h] (computed only
                                                  when hooked; o_proj's output is their sum)
    blocks.{l}.ln1_post.hook_scale   [B, T, 1]   post-attention norm scale (Gemma only)
    blocks.{l}.hook_attn_out         [B, T, d]   attention block's addition to the residual
    blocks.{l}.hook_resid_mid        [B, T, d]
    blocks.{l}.ln2.hook_scale        [B, T, 1]
    blocks.{l}.ln2_post.hook_scale   [B, T, 1]   post-feedforward norm scale (Gemma only)
    blocks.{l}.hook_mlp_out          [B, T, d]   MLP block's addition to the residual
    blocks.{l}.hook_resid_post       [B, T, d]
    ln_final.hook_scale              [B, T, 1]

A hook is `fn(tensor, name) -> tensor | None`; a returned tensor replaces the
activation and everything downstream recomputes from it. Replacing a scale freezes
that norm (what makes per-head attribution linear).

Precision (see `precision.py`; the attention arithmetic in `attention_blocks.py`): weights, attention and MLP run in the weights' dtype; the
residual stream (hook_embed, resid_*, attn_out, mlp_out) is in `resid_dtype` (the
weights' dtype unless a mode says float32); norm scales and the readout (final norm,
unembedding, softcap) are float32 whatever the weights' dtype, so a bfloat16 model's
logits are not rounded to bfloat16's grid (0.25 at logits of 32-64).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import torch

from .architecture import (  # noqa: F401  (re-exported: the hooked model's public names)
    BLOCK_HOOKS,
    FAMILIES,
    POST_NORM_HOOKS,
    SUPPORTED_MODEL_TYPES,
    ArchSpec,
    UnsupportedArchitecture,
    W_O_from_o_proj,
    attention_mask,
    layer_windows,
    o_proj_weight_name,
    rms_scale,
    softcap,
)
from .attention_blocks import MaskCache, query_blocks, rotate_half, softcapped_softmax
from .precision import PRECISIONS, Precision, get_precision

Hook = Callable[[torch.Tensor, str], "torch.Tensor | None"]


class HookedModel:
    """A decoder-only HF model run block by block with hook points (see module doc)."""

    def __init__(self, hf_model, tokenizer=None, name: str | None = None, precision: str | Precision | None = None):
        self.model = hf_model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(hf_model.config, "_name_or_path", None) or "model"
        self.cfg = ArchSpec.from_config(hf_model.config)
        self.precision = self._check_precision(precision)
        self.resid_dtype = self.precision.residual
        self._layers = hf_model.model.layers
        self._rotary = hf_model.model.rotary_emb
        self._rope_cache: dict = {}
        self._masks = MaskCache()

    # ---- basic properties -------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.cfg.n_layers

    @property
    def n_heads(self) -> int:
        return self.cfg.n_heads

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def _check_precision(self, precision) -> Precision:
        """The mode `precision` (default: the weights' dtype throughout), which must match the
        weights' dtype."""
        if precision is None:
            dtype = str(self.dtype).replace("torch.", "")
            return PRECISIONS.get(dtype) or Precision(dtype, dtype, dtype)
        precision = get_precision(precision)
        if precision.weights != self.dtype:
            raise ValueError(f"model {self.name}: precision {precision.name!r} needs {precision.weights_name} "
                             f"weights, but they are {str(self.dtype).replace('torch.', '')}")
        return precision

    @property
    def W_U(self) -> torch.Tensor:
        """[d_vocab, d_model] unembedding."""
        return self.model.get_output_embeddings().weight

    def W_O(self, layer: int) -> torch.Tensor:
        """[H, dh, d] per-head output projection of a layer."""
        return W_O_from_o_proj(self._layers[layer].self_attn.o_proj.weight, self.cfg.n_heads, self.cfg.d_head)

    def norm_gain(self, norm_module) -> torch.Tensor:
        """[d] float32 effective RMSNorm gain ((1 + w) for Gemma, w for Llama)."""
        return norm_module.weight.float() + self.cfg.norm_offset

    def final_norm_gain(self) -> torch.Tensor:
        return self.norm_gain(self.model.model.norm)

    def post_attn_norm_gain(self, layer: int) -> torch.Tensor | None:
        return self.norm_gain(self._layers[layer].post_attention_layernorm) if self.cfg.post_norms else None

    def post_mlp_norm_gain(self, layer: int) -> torch.Tensor | None:
        return self.norm_gain(self._layers[layer].post_feedforward_layernorm) if self.cfg.post_norms else None

    def to_tokens(self, prompt: str) -> torch.Tensor:
        """[1, T] decision input for a prompt (see `tokens.decision_input_ids`)."""
        from ..tokens import decision_input_ids

        if self.tokenizer is None:
            raise ValueError("this HookedModel has no tokenizer; pass input ids instead of a prompt")
        return decision_input_ids(self.tokenizer, prompt).to(self.device)

    # ---- pieces ---------------------------------------------------------------------------
    def _norm(self, module, x: torch.Tensor, name: str, hooks, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        """RMSNorm in float32 (scale hookable), returned in `out_dtype` (default: the weights')."""
        scale = self._hook(hooks, name, rms_scale(x, self.cfg.eps))
        return ((x.float() / scale) * self.norm_gain(module)).to(out_dtype or self.dtype)

    def block_hook_names(self) -> tuple[str, ...]:
        """The hook points of a block (`blocks.{layer}.` + these) that this architecture has."""
        return BLOCK_HOOKS + (POST_NORM_HOOKS if self.cfg.post_norms else ())

    def hook_names(self) -> list[str]:
        """Every hook point of this model, in forward order."""
        return (["hook_embed"] + [f"blocks.{layer}.{n}" for layer in range(self.cfg.n_layers)
                                  for n in self.block_hook_names()] + ["ln_final.hook_scale"])

    def check_hook_names(self, names: Iterable[str]) -> None:
        """Raises ValueError on the first name that is not a hook point of this model (a typo,
        a layer out of range, or a hook the architecture lacks, such as a post-norm scale on
        Llama), naming the valid ones; TransformerLens fails the same way."""
        valid = self._hook_name_set
        for name in names:
            if name not in valid:
                raise ValueError(
                    f"model {self.name}: no hook point {name!r} in this {self.cfg.family} model "
                    f"({self.cfg.n_layers} layers); valid: hook_embed, ln_final.hook_scale, and "
                    f"blocks.{{0..{self.cfg.n_layers - 1}}}. + {', '.join(self.block_hook_names())}")

    @functools.cached_property
    def _hook_name_set(self) -> frozenset:
        return frozenset(self.hook_names())

    @staticmethod
    def _hook(hooks, name: str, value: torch.Tensor) -> torch.Tensor:
        if hooks:
            for fn in hooks.get(name, ()):
                out = fn(value, name)
                if out is not None:
                    value = out
        return value

    def _rope(self, positions: torch.Tensor, like: torch.Tensor, layer: int):
        """(cos, sin) [1, 1, T, dh] of a layer at `positions` (Gemma-3: by the layer's type)."""
        layer_type = None if self.cfg.rope_layer_types is None else self.cfg.rope_layer_types[layer]
        key = (tuple(positions.tolist()), like.dtype, like.device, layer_type)
        if key not in self._rope_cache:
            if len(self._rope_cache) > 16:
                self._rope_cache.clear()
            extra = () if layer_type is None else (layer_type,)
            cos, sin = self._rotary(like, positions[None].to(like.device), *extra)
            self._rope_cache[key] = (cos[:, None], sin[:, None])  # [1, 1, T, dh]
        return self._rope_cache[key]

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, T, d] token embedding (resid_dtype), scaled by sqrt(d_model) for Gemma (the
        scale rounded to that dtype, as Hugging Face does)."""
        emb = self.model.get_input_embeddings()
        x = torch.nn.functional.embedding(input_ids, emb.weight).to(self.resid_dtype)
        if self.cfg.embed_scale is not None:
            x = x * torch.tensor(self.cfg.embed_scale, dtype=x.dtype, device=x.device)
        return x

    def attention_z(self, layer: int, x_normed: torch.Tensor, kv_prefix=None, hooks: dict | None = None) -> torch.Tensor:
        """[B, Tn, H, dh] attention result per head before o_proj.

        `x_normed` [B, Tn, d] holds positions T0..T0+Tn-1, where T0 is the length of
        `kv_prefix` (rotated keys and values [1 or B, Hkv, T0, dh] of the earlier positions,
        e.g. a clean run's), or 0 without one. `hooks` is consulted for
        `blocks.{layer}.attn.hook_pattern` only: without a hook on it no pattern is built.
        """
        cfg, attn = self.cfg, self._layers[layer].self_attn
        B, Tn, _ = x_normed.shape
        T0 = 0 if kv_prefix is None else kv_prefix[0].shape[2]
        positions = torch.arange(T0, T0 + Tn, device=x_normed.device)
        q = attn.q_proj(x_normed).view(B, Tn, cfg.n_heads, cfg.d_head)
        if cfg.qk_norms:
            q = attn.q_norm(q)
        q = q.transpose(1, 2)
        cos, sin = self._rope(positions, x_normed, layer)
        # The score scale (and the softcap's 1/cap) act on q: [Tn, dh] work instead of [Tn, Tk].
        q_scale = cfg.attn_scale / (cfg.attn_softcap or 1.0)
        q = (q * cos + rotate_half(q) * sin) * q_scale
        k, v = self.keys_values(layer, x_normed, T0)
        if kv_prefix is not None:
            k = torch.cat([kv_prefix[0].expand(B, -1, -1, -1), k], dim=2)
            v = torch.cat([kv_prefix[1].expand(B, -1, -1, -1), v], dim=2)
        # Grouped-query attention without copying keys and values: query head h = kv * g + j.
        Hkv, g = cfg.n_kv_heads, cfg.n_heads // cfg.n_kv_heads
        q = q.reshape(B, Hkv, g, Tn, cfg.d_head)
        window = cfg.sliding_windows[layer]
        pattern_name = f"blocks.{layer}.attn.hook_pattern"
        parts = [] if hooks and pattern_name in hooks else None  # blocks of the pattern, if hooked
        out = []
        for s, e in query_blocks(Tn, T0, window):
            # Keys that any query of the block may see: causal, and within the window.
            lo = 0 if window is None else max(0, T0 + s - window + 1)
            hi = T0 + e
            Tb, Kb = e - s, hi - lo
            qb = q[:, :, :, s:e].reshape(B, Hkv, g * Tb, cfg.d_head)
            scores = torch.matmul(qb, k[:, :, lo:hi].transpose(-1, -2)).view(B, Hkv, g, Tb, Kb)
            masked_out = self._masks.get(T0 + s, T0 + e, lo, hi, window, q.device)
            probs = softcapped_softmax(scores, masked_out, cfg.attn_softcap)
            if parts is not None:
                parts.append((s, e, lo, hi, probs))
            probs = probs.to(v.dtype).view(B, Hkv, g * Tb, Kb)
            out.append(torch.matmul(probs, v[:, :, lo:hi]).view(B, Hkv, g, Tb, cfg.d_head))
        z = out[0] if len(out) == 1 else torch.cat(out, dim=3)
        if parts is not None:
            z = self._hook_pattern(hooks, pattern_name, parts, z, v, (B, Hkv, g, Tn, T0 + Tn))
        return z.reshape(B, cfg.n_heads, Tn, cfg.d_head).transpose(1, 2)

    def _hook_pattern(self, hooks, name, parts, z, v, shape) -> torch.Tensor:
        """Runs the hooks of `name` on the full pattern [B, H, Tn, Tk] assembled from the query
        blocks' probabilities (zeros where a block skipped keys); returns z [B, Hkv, g, Tn, dh],
        recomputed from the pattern only when a hook returned a new one (so that a read-only
        hook leaves z bit for bit as without it)."""
        B, Hkv, g, Tn, Tk = shape
        pattern = parts[0][4].new_zeros(B, Hkv, g, Tn, Tk)
        for s, e, lo, hi, probs in parts:
            pattern[:, :, :, s:e, lo:hi] = probs.view(B, Hkv, g, e - s, hi - lo)
        pattern = pattern.view(B, Hkv * g, Tn, Tk)  # query head h = kv * g + j
        hooked = self._hook(hooks, name, pattern)
        if hooked is pattern:
            return z
        probs = hooked.to(v.dtype).reshape(B, Hkv, g * Tn, Tk)
        return torch.matmul(probs, v).view(B, Hkv, g, Tn, -1)

    def keys_values(self, layer: int, x_normed: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotated keys and values [B, Hkv, T, dh] of a layer from its normed input [B, T, d]
        holding positions start..start+T-1."""
        cfg, attn = self.cfg, self._layers[layer].self_attn
        B, T, _ = x_normed.shape
        k = attn.k_proj(x_normed).view(B, T, cfg.n_kv_heads, cfg.d_head)
        if cfg.qk_norms:
            k = attn.k_norm(k)
        k = k.transpose(1, 2)
        v = attn.v_proj(x_normed).view(B, T, cfg.n_kv_heads, cfg.d_head).transpose(1, 2)
        cos, sin = self._rope(torch.arange(start, start + T, device=x_normed.device), x_normed, layer)
        return k * cos + rotate_half(k) * sin, v

    def clean_keys_values(self, layer: int, resid_pre: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of a layer from its (cached) resid_pre [B, T, d] holding positions
        start..start+T-1."""
        blk = self._layers[layer]
        x = self._norm(blk.input_layernorm, resid_pre, f"blocks.{layer}.ln1.hook_scale", None)
        return self.keys_values(layer, x, start)

    def o_proj_from_heads(self, layer: int, head_sum: torch.Tensor) -> torch.Tensor:
        """o_proj's output [.., d] from its per-head outputs z_h @ W_O[h] summed over heads
        (adds o_proj's bias, if any)."""
        bias = self._layers[layer].self_attn.o_proj.bias
        return head_sum if bias is None else head_sum + bias

    def attn_out(self, layer: int, o: torch.Tensor, hooks: dict | None = None) -> torch.Tensor:
        """The attention block's addition to the residual [.., d] from o_proj's output:
        Gemma's post-attention norm (recomputed on `o`), nothing for the Llama family."""
        if not self.cfg.post_norms:
            return o.to(self.resid_dtype)
        norm = self._layers[layer].post_attention_layernorm
        return self._norm(norm, o, f"blocks.{layer}.ln1_post.hook_scale", hooks, self.resid_dtype)

    def block(self, layer: int, resid: torch.Tensor, hooks: dict | None = None, kv_prefix=None) -> torch.Tensor:
        """One decoder block on [B, T, d] (positions after `kv_prefix`'s, see attention_z);
        returns resid_post."""
        blk, p = self._layers[layer], f"blocks.{layer}."
        resid = self._hook(hooks, p + "hook_resid_pre", resid)
        x = self._norm(blk.input_layernorm, resid, p + "ln1.hook_scale", hooks)
        z = self._hook(hooks, p + "attn.hook_z", self.attention_z(layer, x, kv_prefix, hooks))
        if hooks and p + "attn.hook_result" in hooks:
            result = torch.einsum("bthk,hkd->bthd", z, self.W_O(layer))
            o = self.o_proj_from_heads(layer, self._hook(hooks, p + "attn.hook_result", result).sum(2))
        else:
            o = blk.self_attn.o_proj(z.reshape(*z.shape[:2], -1))
        a = self._hook(hooks, p + "hook_attn_out", self.attn_out(layer, o, hooks))
        resid = self._hook(hooks, p + "hook_resid_mid", resid + a)
        mlp_norm = blk.pre_feedforward_layernorm if self.cfg.post_norms else blk.post_attention_layernorm
        m = blk.mlp(self._norm(mlp_norm, resid, p + "ln2.hook_scale", hooks))
        if self.cfg.post_norms:
            m = self._norm(blk.post_feedforward_layernorm, m, p + "ln2_post.hook_scale", hooks, self.resid_dtype)
        else:
            m = m.to(self.resid_dtype)
        m = self._hook(hooks, p + "hook_mlp_out", m)
        return self._hook(hooks, p + "hook_resid_post", resid + m)

    def unembed(self, resid: torch.Tensor, hooks: dict | None = None, rows=None, apply_softcap: bool = True):
        """Final norm (recomputed on `resid`), unembedding and softcap, all in float32:
        [..., d] -> [..., V] float32.

        With `rows` (token ids), only those logits are computed: [..., len(rows)].
        """
        x = self._norm(self.model.model.norm, resid, "ln_final.hook_scale", hooks, torch.float32)
        if rows is not None:
            logits = x @ self.W_U[list(rows)].float().T
        else:
            logits = self._full_vocab_logits(x)
        return softcap(logits, self.cfg.final_softcap) if apply_softcap else logits

    def _full_vocab_logits(self, x: torch.Tensor) -> torch.Tensor:
        """[..., V] float32 logits of float32 normed `x`; a low-precision W_U is widened a
        block of rows at a time (a float32 copy of Gemma's would take 2.4 GB)."""
        w = self.W_U
        if w.dtype == torch.float32:
            return x @ w.T
        step = max(1, (1 << 24) // w.shape[1])
        return torch.cat([x @ w[i:i + step].float().T for i in range(0, w.shape[0], step)], dim=-1)

    # ---- forward passes ---------------------------------------------------------------------
    def forward_from(
        self,
        resid: torch.Tensor,
        start_layer: int = 0,
        hooks: dict | None = None,
        rows=None,
        last_only: bool = False,
        kv_prefixes: dict | None = None,
        prune_last_block: bool = False,
    ) -> torch.Tensor:
        """Logits from `resid` = resid_pre of `start_layer` [B, T, d] through the last block.

        `last_only` unembeds the last position only ([B, V] instead of [B, T, V]).
        `kv_prefixes` maps layer -> keys and values of positions before `resid`'s
        (see attention_z): then `resid` holds only the later positions.
        `prune_last_block` (with `last_only`): the last block computes keys and values at
        every position (after its kv prefix's, if any) but everything else at the last
        position only, since nothing reads its other positions; its hooks then see [B, 1, ...].
        """
        if hooks:
            self.check_hook_names(hooks)
        last = self.cfg.n_layers - 1
        for layer in range(start_layer, self.cfg.n_layers):
            kv = None if kv_prefixes is None else kv_prefixes[layer]
            if prune_last_block and last_only and layer == last and resid.shape[1] > 1:
                T0 = 0 if kv is None else kv[0].shape[2]
                k, v = self.clean_keys_values(layer, resid[:, :-1], T0)
                if kv is not None:
                    B = resid.shape[0]
                    k = torch.cat([kv[0].expand(B, -1, -1, -1), k], dim=2)
                    v = torch.cat([kv[1].expand(B, -1, -1, -1), v], dim=2)
                kv = (k, v)
                resid = resid[:, -1:]
            resid = self.block(layer, resid, hooks, kv)
        if last_only:
            resid = resid[:, -1]
        return self.unembed(resid, hooks, rows)

    @torch.no_grad()
    def run_with_hooks(self, input_ids: torch.Tensor, fwd_hooks: Iterable[tuple[str, Hook]] = (), **kw):
        """Logits [B, T, V] of a full forward pass with TransformerLens-style (name, fn) hooks."""
        hooks: dict = {}
        for name, fn in fwd_hooks:
            hooks.setdefault(name, []).append(fn)
        self.check_hook_names(hooks)
        input_ids = input_ids.to(self.device)
        resid = self._hook(hooks, "hook_embed", self.embed(input_ids))
        return self.forward_from(resid, 0, hooks, **kw)

    @torch.no_grad()
    def run_with_cache(self, input_ids: torch.Tensor, names_filter: Callable[[str], bool] | None = None,
                       patterns: bool = False, **kw):
        """(logits [B, T, V], cache {hook name: tensor}) of one forward pass; `kw` as for
        forward_from (e.g. last_only=True: logits [B, V]). `patterns` adds
        blocks.{l}.attn.hook_pattern [B, H, T, T], left out by default (T^2 per layer)."""
        cache: dict[str, torch.Tensor] = {}

        def save(value, name):
            if names_filter is None or names_filter(name):
                cache[name] = value.detach()

        # hook_result is left out: hooking it makes a block compute every head's output
        skipped = ("attn.hook_result",) if patterns else ("attn.hook_result", "attn.hook_pattern")
        names = [n for n in self.hook_names() if not n.endswith(skipped)]
        logits = self.run_with_hooks(input_ids, [(n, save) for n in names], **kw)
        return logits, cache

    @torch.no_grad()
    def head_contributions(self, cache: dict, layer: int, position: int) -> torch.Tensor:
        """[B, H, d] float32: each head's addition to the residual at `position`, with the
        post-attention norm scale frozen at its cached value. Sums over H to hook_attn_out."""
        z = cache[f"blocks.{layer}.attn.hook_z"][:, position].float()  # [B, H, dh]
        out = torch.einsum("bhk,hkd->bhd", z, self.W_O(layer).float())
        if self.cfg.post_norms:
            scale = cache[f"blocks.{layer}.ln1_post.hook_scale"][:, position]  # [B, 1]
            out = out / scale[:, None] * self.post_attn_norm_gain(layer)
        return out


HookedGemmaModel = HookedModel
