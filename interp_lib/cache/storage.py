"""HDF5 activation cache: one file per (model, scenario), one group per prompt variant.

Layout (L layers, T positions, d d_model, H heads, dh head dim, V vocabulary). The
activations (embed, resid_*, attn_out, mlp_out, z, head_out_decision, attn_decision) are
stored in the file's storage_dtype (float32, or float16 for half the size); everything else
is float32. Readers return float32 either way. Compressed files (attr compression) chunk the
arrays that have a position axis by a few positions with all their layers (CHUNK_BYTES), as
the analyses read them ([:, pos]) or whole; uncompressed ones are contiguous (see CacheStorage).

    /                      attrs: format_version, model, scenario, fingerprint (sha256 of the
                           merged weights), tokenizer_hash, dtype (the model's), family, n_layers,
                           precision (the mode it ran in, see precision.py), n_heads,
                           n_kv_heads, d_head, d_model, d_vocab, eps, norm_offset,
                           attn_softcap, final_softcap (NaN = none), token_C, token_D, prefix,
                           storage_dtype (float32 | float16), compression (none | lzf | gzip)
    /unembed/W_U_actions   [2, d]   unembedding rows of the C and D tokens (in that order)
    /unembed/ln_final_gain [d]      effective final-norm gain ((1 + w) for Gemma)
    /{variant}/            attrs: prompt, decision_position, delta (post-softcap logit D - C),
                           delta_pre_softcap, p_action2
      input_ids          [T]       int64, the model's input (chat template + action prefix)
      tokens             [T]       UTF-8 strings: each input token decoded alone by the model's
                                   tokenizer, special tokens kept (format 5)
      embed              [T, d]    hook_embed (scaled embedding)
      resid_pre          [L, T, d] blocks.{l}.hook_resid_pre
      resid_post         [L, T, d] blocks.{l}.hook_resid_post
      attn_out           [L, T, d] blocks.{l}.hook_attn_out
      mlp_out            [L, T, d] blocks.{l}.hook_mlp_out
      z                  [L, T, H, dh] blocks.{l}.attn.hook_z
      ln1_scale, ln2_scale [L, T]  input / pre-MLP norm scales sqrt(mean(x^2) + eps)
      ln1_post_scale, ln2_post_scale [L, T] Gemma-2's post-attention / post-MLP norm scales
      ln_final_scale     [T]
      head_out_decision  [L, H, d] each head's addition to the residual at the decision
                                   position (post-attention scale frozen); sums over H to attn_out
      decision_logits    [V]       the model's own (post-softcap) logits at the decision position
      attn_decision      [L, H, T] each head's attention probabilities from the decision position
                                   over all positions (blocks.{l}.attn.hook_pattern's last query
                                   row; 0 where the causal mask or a sliding window hides a key)

Variant groups are named by their number ("1", "2", ...). Files are written to a
temporary name and renamed, so a file that exists is complete.

This module holds the format (its version, which arrays are activations), how a file stores
its arrays (CacheStorage) and the errors; collect.py runs a model to fill a variant's group
(the one part that needs torch), write.py writes a file, read.py reads one.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# 2: attr precision, float32 readout; 3: attn_decision (older caches lack it); 4: activations may be
# stored as float16 and compressed (attrs storage_dtype, compression), which a version-3 reader
# would hand on as float16. A version-3 file is a version-4 file stored as float32, uncompressed.
# 5: tokens, each input token's text (the attention tables read it instead of loading a
# tokenizer); a version-4 file is a version-5 file without it.
FORMAT_VERSION = 5
READABLE_VERSIONS = (3, 4, 5)
STACKED = {
    "resid_pre": "hook_resid_pre",
    "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
    "z": "attn.hook_z",
    "ln1_scale": "ln1.hook_scale",
    "ln2_scale": "ln2.hook_scale",
    "ln1_post_scale": "ln1_post.hook_scale",
    "ln2_post_scale": "ln2_post.hook_scale",
}


# Stored in the storage dtype. The norm scales (divisors), decision logits and unembedding are
# small and stay float32.
ACTIVATIONS = frozenset({"embed", "resid_pre", "resid_post", "attn_out", "mlp_out", "z", "head_out_decision",
                         "attn_decision"})
STORAGE_DTYPES = {"float32": np.float32, "float16": np.float16}
# h5py filter options. The byte shuffle puts the floats' sign/exponent bytes together, which is
# most of what compresses; gzip level 1 came within 1% of level 4's size in 15% less time
# (2b widths, 2026-11-29, 2-core CPU; sizes and times of each: benchmarks/cache_storage_benchmark.py).
COMPRESSIONS = {
    "none": {},
    "lzf": {"compression": "lzf", "shuffle": True},
    "gzip": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
}
# The axis of T of the arrays that have one. Compressed, their chunks span every layer of a few
# positions: the analyses read [:, pos] (one chunk) or the whole array. Uncompressed they are
# contiguous: as fast to slice, and chunking made writing 20-40% slower (same measurement).
POSITION_AXIS = {**{key: 1 for key in STACKED}, "embed": 0, "ln_final_scale": 0}
CHUNK_BYTES = 1 << 16  # at least this much per chunk (unless the array is smaller); 256 KiB-4 MiB: no faster



class CacheError(RuntimeError):
    """A cache that cannot be trusted; the message says how to rebuild it."""


class NonFiniteActivation(CacheError):
    pass


# Shown (error lines, tracebacks, pickles) under the package that exports them.
CacheError.__module__ = NonFiniteActivation.__module__ = "interp_lib.cache"



@dataclass(frozen=True)
class CacheStorage:
    """How a cache file stores its arrays: `dtype` (a STORAGE_DTYPES key) of the activations,
    `compression` (a COMPRESSIONS key). Named as the config keys analysis.cache_dtype and
    analysis.cache_compression."""

    dtype: str = "float32"
    compression: str = "none"

    def __post_init__(self):
        for key, value, allowed in (("cache_dtype", self.dtype, STORAGE_DTYPES),
                                    ("cache_compression", self.compression, COMPRESSIONS)):
            if value not in allowed:
                raise ValueError(f"analysis.{key}: {value!r} is not one of {', '.join(allowed)}")

    def attrs(self) -> dict:
        return {"storage_dtype": self.dtype, "compression": self.compression}

    def dataset(self, key: str, value) -> tuple[np.ndarray, dict]:
        """(the array as stored, h5py create_dataset options) of variant array `key`."""
        value = np.asarray(value)
        if value.dtype.kind != "f":  # input_ids (and anything h5py should refuse as it is)
            return value, {}
        if key in ACTIVATIONS:
            value = _as_dtype(value, STORAGE_DTYPES[self.dtype])
        options = dict(COMPRESSIONS[self.compression])
        if not options or not value.size:  # contiguous (HDF5 cannot chunk an empty array)
            return value, {}
        axis = POSITION_AXIS.get(key)
        if axis is not None and value.ndim > axis:
            per_position = value.itemsize * value.size // value.shape[axis]
            chunk = list(value.shape)
            chunk[axis] = min(value.shape[axis], max(1, -(-CHUNK_BYTES // per_position)))
            options["chunks"] = tuple(chunk)
        else:
            options["chunks"] = value.shape  # small: one chunk
        return value, options


def _as_dtype(value: np.ndarray, dtype) -> np.ndarray:
    """`value` in float `dtype` (rounded to nearest even); with torch's vectorised conversion
    when torch is loaded anyway (4x numpy's float16 <-> float32 on a 2-core CPU, same values)."""
    if value.dtype == dtype:
        return value
    torch = sys.modules.get("torch")
    if torch is None or not value.size:
        return value.astype(dtype)
    to = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}.get(np.dtype(dtype))
    if to is None or value.dtype not in (np.float16, np.float32):
        return value.astype(dtype)
    return torch.from_numpy(np.ascontiguousarray(value)).to(to).numpy()


def merged_dir_of(cache_path, model: str) -> Path:
    """<results_dir>/models/<model> for a cache at <results_dir>/cache/<model>/<scenario>.h5."""
    return Path(cache_path).parents[2] / "models" / str(model)


def _rebuild_hint(path) -> str:
    return f"delete {path} and rerun the workflow (snakemake --cores 1 {path})"
