"""Reading a cache file: CacheFile checks the format version, the weights' fingerprint and
the tokenizer; its variant groups and datasets check what is read for NaN / Inf and hand
float16 storage on as float32. Layout: storage.py."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from .storage import READABLE_VERSIONS, CacheError, NonFiniteActivation, _as_dtype, _rebuild_hint, merged_dir_of


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

    def token_texts(self, variant: int) -> list[str]:
        """[T] each input token's text as the model's tokenizer decodes it alone (format 5)."""
        group = self.group(variant)
        if "tokens" not in group:
            raise CacheError(f"{self.path} holds no token texts (made before cache format 5); {_rebuild_hint(self.path)}")
        try:
            return [str(text) for text in group._group["tokens"].asstr()[()]]
        except (OSError, TypeError) as exc:
            raise CacheError(f"cannot read variant {variant}, tokens of {self.path} ({exc}); {_rebuild_hint(self.path)}") from None

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
