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
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .io import atomic_path

# 2: attr precision, float32 readout; 3: attn_decision (older caches lack it); 4: activations may be
# stored as float16 and compressed (attrs storage_dtype, compression), which a version-3 reader
# would hand on as float16. A version-3 file is a version-4 file stored as float32, uncompressed.
FORMAT_VERSION = 4
READABLE_VERSIONS = (3, 4)
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


def collect_variant(hooked, input_ids, action_tokens: dict, label: str = "") -> dict:
    """Runs one prompt ([1, T] ids) and returns the arrays and attrs of its cache group."""
    import torch

    with torch.no_grad():
        return _collect_variant(hooked, input_ids, action_tokens, label)


def _collect_variant(hooked, input_ids, action_tokens, label):
    import torch

    from .hooked import rms_scale

    logits, cache = hooked.run_with_cache(input_ids, last_only=True, patterns=True)  # [1, V] float32 readout
    cfg, pos = hooked.cfg, input_ids.shape[-1] - 1
    _check_all_finite({**cache, "logits": logits[0]}, hooked.name, label)
    arrays: dict[str, np.ndarray] = {}
    for key, hook in STACKED.items():
        names = [f"blocks.{l}.{hook}" for l in range(cfg.n_layers)]
        if names[0] not in cache:  # post-norm scales exist for Gemma-2 only
            continue
        stacked = torch.stack([cache[n][0] for n in names]).float()
        arrays[key] = (stacked.squeeze(-1) if key.endswith("scale") else stacked).cpu().numpy()
    arrays["embed"] = cache["hook_embed"][0].float().cpu().numpy()
    # The readout ran at the decision position only; the final norm's scale at every position
    # is the same function of the last block's output.
    resid_last = cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"][0]
    arrays["ln_final_scale"] = rms_scale(resid_last, cfg.eps)[:, 0].cpu().numpy()
    arrays["head_out_decision"] = torch.stack(
        [hooked.head_contributions(cache, l, pos)[0] for l in range(cfg.n_layers)]
    ).cpu().numpy()
    arrays["decision_logits"] = logits[0].cpu().numpy()
    arrays["attn_decision"] = torch.stack(
        [cache[f"blocks.{l}.attn.hook_pattern"][0, :, pos] for l in range(cfg.n_layers)]
    ).float().cpu().numpy()
    arrays["input_ids"] = input_ids[0].cpu().numpy().astype(np.int64)
    C, D = action_tokens["C"], action_tokens["D"]
    pre = hooked.unembed(resid_last[None, pos], rows=[C, D], apply_softcap=False)
    delta = float(logits[0, D] - logits[0, C])
    attrs = {
        "decision_position": pos,
        "delta": delta,
        "delta_pre_softcap": float(pre[0, 1] - pre[0, 0]),
        "p_action2": 1.0 / (1.0 + math.exp(-delta)),
    }
    return {"arrays": arrays, "attrs": attrs}


def _check_finite(t, model: str, label: str, name: str) -> None:
    if not t.isfinite().all():
        raise NonFiniteActivation(f"model {model}, prompt {label}: NaN or Inf in {name}")


def _check_all_finite(tensors: dict, model: str, label: str) -> None:
    """Raises NonFiniteActivation naming the first of `tensors` (in the order the hooks ran: the
    first bad layer) that holds a NaN or Inf. A sum is NaN or Inf when any term is, so one
    reduction per tensor and one host sync settle the usual case (isfinite().all() per tensor
    was 8x slower on a CPU, and a sync each on a GPU); only then, or when a sum of finite values
    overflowed, is each tensor checked element by element."""
    import torch

    if not tensors:
        return
    sums = torch.stack([t.sum(dtype=torch.float32) for t in tensors.values()])
    if bool(sums.isfinite().all()):
        return
    for name, value in tensors.items():
        _check_finite(value, model, label, name)


def file_attrs(hooked, model_name: str, scenario: str, fingerprint: str, tokenizer_hash: str,
               action_tokens: dict) -> dict:
    cfg = hooked.cfg
    nan = float("nan")
    return {
        "format_version": FORMAT_VERSION,
        "model": model_name,
        "scenario": scenario,
        "fingerprint": fingerprint,
        "tokenizer_hash": tokenizer_hash,
        "dtype": str(hooked.dtype).replace("torch.", ""),
        "precision": hooked.precision.name,
        "family": cfg.family,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.n_kv_heads,
        "d_head": cfg.d_head,
        "d_model": cfg.d_model,
        "d_vocab": cfg.d_vocab,
        "eps": cfg.eps,
        "norm_offset": cfg.norm_offset,
        "attn_softcap": cfg.attn_softcap if cfg.attn_softcap is not None else nan,
        "final_softcap": cfg.final_softcap if cfg.final_softcap is not None else nan,
        "token_C": action_tokens["C"],
        "token_D": action_tokens["D"],
        "prefix": np.asarray(action_tokens["prefix"], dtype=np.int64),
    }


def unembed_arrays(hooked, action_tokens: dict) -> dict:
    """The file's /unembed group: W_U_actions [2, d] (the C and D rows, float32) and
    ln_final_gain [d]."""
    import torch

    with torch.no_grad():
        return {"W_U_actions": hooked.W_U[[action_tokens["C"], action_tokens["D"]]].float().cpu().numpy(),
                "ln_final_gain": hooked.final_norm_gain().float().cpu().numpy()}


def write_cache(path: str | Path, attrs: dict, unembed: dict, variants: dict[int, dict],
                storage: CacheStorage | None = None) -> None:
    """Writes a cache file atomically. `variants` maps variant number -> collect_variant()
    output plus a "prompt" attr; `unembed` holds W_U_actions and ln_final_gain arrays."""
    with CacheWriter(path, attrs, unembed, storage) as writer:
        for number, data in sorted(variants.items()):
            writer.add(number, data)


class CacheWriter:
    """Writes a cache file one variant at a time, so that only one prompt's arrays need to be
    held in memory (a 26-layer Gemma-2-2b prompt of 210 tokens: ~250 MB in float32). Atomic:
    the file appears under its name when the `with` block ends without an error, else not at all.

        with CacheWriter(path, file_attrs(...), unembed, CacheStorage("float16")) as w:
            w.add(1, collect_variant(...))  # plus its "prompt" attr
    """

    def __init__(self, path: str | Path, attrs: dict, unembed: dict, storage: CacheStorage | None = None):
        self.path, self.storage = Path(path), storage or CacheStorage()
        self._attrs, self._unembed, self._stack, self._file = attrs, unembed, None, None

    def __enter__(self) -> CacheWriter:
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(self.path, suffix=".h5"))
            self._file = stack.enter_context(h5py.File(tmp, "w"))
            self._file.attrs.update(self._attrs)
            self._file.attrs.update(self.storage.attrs())
            grp = self._file.create_group("unembed")
            for key, value in self._unembed.items():
                grp.create_dataset(key, data=np.asarray(value, dtype=np.float32))
            self._stack = stack.pop_all()
        return self

    def add(self, number: int, data: dict) -> None:
        """Writes variant `number`: `data` as collect_variant returns it (its attrs completed)."""
        g = self._file.create_group(str(number))
        g.attrs.update(data["attrs"])
        for key, value in data["arrays"].items():
            value = np.asarray(value)
            stored, options = self.storage.dataset(key, value)
            if stored.dtype != value.dtype and not np.isfinite(stored).all():  # finite before: out of range
                raise CacheError(
                    f"{self.path}: variant {number}, {key} reaches {float(np.abs(value).max()):.4g}, beyond "
                    f"{self.storage.dtype}'s range; set analysis.cache_dtype: float32")
            g.create_dataset(key, data=stored, **options)

    def __exit__(self, *exc):
        stack, self._stack, self._file = self._stack, None, None
        return stack.__exit__(*exc)


class CacheFile:
    """Read access to one cache file, with format and fingerprint checks.

    `cache.variants` -> [1, 2, 3]; `cache[v]["z"]` -> numpy array; `cache.group(v).attrs`.
    Use as a context manager or call close().
    """

    def __init__(self, path: str | Path, fingerprint: str | None = None, tokenizer_hash: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise CacheError(f"cache file not found: {self.path}; run the workflow to build it")
        try:
            self._f = h5py.File(self.path, "r")
            self.attrs = dict(self._f.attrs)
        except (OSError, KeyError) as exc:
            raise CacheError(f"cannot read {self.path} (damaged or truncated: {exc}); {_rebuild_hint(self.path)}") from None
        version = self.attrs.get("format_version")
        if version not in READABLE_VERSIONS:
            self.close()
            raise CacheError(
                f"{self.path} has cache format version {version}, this interp_lib reads versions "
                f"{', '.join(map(str, sorted(READABLE_VERSIONS)))}; {_rebuild_hint(self.path)}"
            )
        if fingerprint is not None and self.attrs.get("fingerprint") != fingerprint:
            self.close()
            raise CacheError(
                f"{self.path} was made from other weights than {merged_dir_of(self.path, self.attrs.get('model'))} now holds "
                f"(fingerprint mismatch); {_rebuild_hint(self.path)}"
            )
        if tokenizer_hash is not None and self.attrs.get("tokenizer_hash") != tokenizer_hash:
            self.close()
            raise CacheError(f"{self.path} was made with another tokenizer; {_rebuild_hint(self.path)}")
        try:
            self.variants = sorted(int(k) for k in self._f.keys() if k.isdigit())
            self.unembed = {k: self._f["unembed"][k][()] for k in self._f["unembed"]}
        except (OSError, KeyError, ValueError) as exc:
            self.close()
            raise CacheError(f"cannot read {self.path} (damaged: {exc}); {_rebuild_hint(self.path)}") from None
        try:
            for key, value in self.unembed.items():
                _check_read(value, self.path, f"unembed/{key}")
        except CacheError:
            self.close()
            raise
        if not self.variants:
            self.close()
            raise CacheError(f"{self.path} holds no prompt variants; {_rebuild_hint(self.path)}")

    def group(self, variant: int) -> "CheckedGroup":
        """A variant's group: its datasets and attrs read as h5py's, but a missing dataset or a
        NaN / Inf in what is read raises CacheError."""
        try:
            return CheckedGroup(self._f[str(variant)], self.path, variant)
        except (OSError, KeyError) as exc:
            raise CacheError(f"cannot read variant {variant} of {self.path} ({exc}); {_rebuild_hint(self.path)}") from None

    def __getitem__(self, variant: int) -> "VariantView":
        return VariantView(self, variant)

    def action_tokens(self, variant: int) -> dict:
        """{"C": id, "D": id}: the Cooperate and Defect tokens of a variant in its labelling
        (the file's, i.e. the standard labelling's, for caches without per-variant tokens)."""
        attrs = self.group(variant).attrs
        return {k: int(attrs.get(f"token_{k}", self.attrs[f"token_{k}"])) for k in ("C", "D")}

    def require_precision(self, name: str) -> None:
        """Raises CacheError unless the file was cached in precision mode `name`."""
        if self.attrs.get("precision") != name:
            raise CacheError(f"{self.path} was cached in precision {self.attrs.get('precision')!r}, not {name!r}; "
                             "rerun the workflow to rebuild it")

    def labelling(self, variant: int) -> str:
        """"standard" (action1 = Cooperate) or "swapped" (action1 = Defect)."""
        return str(self.group(variant).attrs.get("labelling", "standard"))

    def close(self) -> None:
        f = getattr(self, "_f", None)
        if f is not None:
            f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_read(value, path, where: str) -> None:
    if np.asarray(value).dtype.kind in "fc" and not np.isfinite(value).all():
        raise NonFiniteActivation(f"{path}: NaN or Inf in {where}; {_rebuild_hint(path)}")


def _widened(value):
    """float16 (a float16 cache's storage) as float32, exactly; anything else as it is."""
    if isinstance(value, np.ndarray) and value.dtype == np.float16:
        return _as_dtype(value, np.float32)
    if isinstance(value, np.float16):
        return np.float32(value)
    return value


class CheckedDataset:
    """An h5py dataset whose reads (`ds[()]`, `ds[:, pos]`) are checked for NaN / Inf and come
    back in float32 when stored in float16 (`stored_dtype`)."""

    def __init__(self, ds: h5py.Dataset, path, where: str):
        self._ds, self._path, self._where = ds, path, where
        self.shape, self.stored_dtype = ds.shape, ds.dtype
        self.dtype = np.dtype(np.float32) if ds.dtype == np.float16 else ds.dtype

    def __getitem__(self, index):
        try:
            value = self._ds[index]
        except OSError as exc:
            raise CacheError(f"cannot read {self._where} of {self._path} ({exc}); {_rebuild_hint(self._path)}") from None
        value = _widened(value)
        _check_read(value, self._path, self._where)
        return value

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[()], dtype=dtype)


class CheckedGroup:
    """A variant group of a cache file (see CacheFile.group); `attrs` is a dict."""

    def __init__(self, group: h5py.Group, path, variant: int):
        self._group, self._path, self.variant = group, path, variant
        self.attrs = dict(group.attrs)
        for key, value in self.attrs.items():
            _check_read(value, path, f"variant {variant}, attr {key}")

    def __getitem__(self, key: str) -> CheckedDataset:
        where = f"variant {self.variant}, {key}"
        try:
            return CheckedDataset(self._group[key], self._path, where)
        except (OSError, KeyError) as exc:
            raise CacheError(f"cannot read {where} of {self._path} ({exc}); {_rebuild_hint(self._path)}") from None

    def __contains__(self, key: str) -> bool:
        return key in self._group

    def keys(self):
        return self._group.keys()


class VariantView:
    def __init__(self, cache: CacheFile, variant: int):
        self._cache, self.variant = cache, variant
        self._group = cache.group(variant)
        self.attrs = self._group.attrs

    def __getitem__(self, key: str) -> np.ndarray:
        return self._group[key][()]

    def __contains__(self, key: str) -> bool:
        return key in self._group
