"""HDF5 activation cache: one file per (model, scenario), one group per prompt variant.

One module per job: storage (the layout, in its docstring; the format version, how a file
stores its arrays, the errors), collect (a variant's arrays from a hooked model: the only
part that runs a model, importing torch inside its functions), write (CacheWriter,
write_cache) and read (CacheFile and its checked groups and datasets). The public names are
exported here lazily (`from interp_lib.cache import CacheFile` imports read and storage
only), so that an analysis that reads caches neither imports nor, by its code version,
depends on the code that collects and writes them.
"""

from ..lazy import lazy_exports

# Public names -> defining module (code_version reads this table: see interp_lib/code_version.py).
_EXPORTS = {
    "FORMAT_VERSION": "storage",
    "READABLE_VERSIONS": "storage",
    "STACKED": "storage",
    "ACTIVATIONS": "storage",
    "STORAGE_DTYPES": "storage",
    "COMPRESSIONS": "storage",
    "POSITION_AXIS": "storage",
    "CHUNK_BYTES": "storage",
    "CacheError": "storage",
    "NonFiniteActivation": "storage",
    "CacheStorage": "storage",
    "merged_dir_of": "storage",
    "collect_variant": "collect",
    "file_attrs": "collect",
    "unembed_arrays": "collect",
    "CacheWriter": "write",
    "write_cache": "write",
    "CacheFile": "read",
    "CheckedDataset": "read",
    "CheckedGroup": "read",
    "VariantView": "read",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
