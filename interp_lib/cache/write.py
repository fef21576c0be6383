"""Writing a cache file atomically, one variant at a time (arrays as collect.py returns
them, stored as CacheStorage says). Layout: storage.py."""

from __future__ import annotations

import contextlib
from pathlib import Path

import h5py
import numpy as np

from ..io import atomic_path
from .storage import CacheError, CacheStorage


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
            if value.dtype.kind in "OSU":  # texts (tokens): variable-length UTF-8, stored as they are
                g.create_dataset(key, data=value.astype(object), dtype=h5py.string_dtype())
                continue
            stored, options = self.storage.dataset(key, value)
            if stored.dtype != value.dtype and not np.isfinite(stored).all():  # finite before: out of range
                raise CacheError(
                    f"{self.path}: variant {number}, {key} reaches {float(np.abs(value).max()):.4g}, beyond "
                    f"{self.storage.dtype}'s range; set analysis.cache_dtype: float32")
            g.create_dataset(key, data=stored, **options)

    def __exit__(self, *exc):
        stack, self._stack, self._file = self._stack, None, None
        return stack.__exit__(*exc)
