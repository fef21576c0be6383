"""`LoRAModelLoader`: configured models by name, as HF models or `HookedModel`s."""

from __future__ import annotations

import os
from pathlib import Path

from ..config import load_config, validate_config
from .hooked import HookedModel
from .precision import get_precision
from .loading import FINGERPRINT_FILE, ModelLoadError, load_base_model, load_model, load_tokenizer, resolve_device


class LoRAModelLoader:
    """Loads configured models as `HookedModel`s by name.

    Merged weights from `{results_dir}/models/{name}/` are used when present (default: the
    config's `results_dir`); otherwise the adapter is merged in memory. `config` is a path,
    a dict, or None for $INTERP_CONFIG / ./config.yaml; `precision` a mode of precision.py
    (default: the config's analysis.precision).
    """

    def __init__(self, device: str = "auto", config=None, results_dir: str | Path | None = None,
                 precision: str | None = None):
        if config is None or isinstance(config, (str, os.PathLike)):
            config = load_config(config)
        else:
            config = validate_config(config)
        self.config = config
        self.device = resolve_device(device)
        self.precision = get_precision(precision or config["analysis"]["precision"])
        self.dtype = self.precision.weights_name
        self.results_dir = Path(results_dir if results_dir is not None else config["results_dir"])

    def merged_dir(self, name: str) -> Path:
        return self.results_dir / "models" / name

    def load_hf_model(self, name: str):
        models = self.config["models"]
        if name not in models:
            raise ModelLoadError(f"unknown model {name!r} (configured: {', '.join(models)})")
        opts = self.config["analysis"]
        merged = self.merged_dir(name)
        if (merged / FINGERPRINT_FILE).is_file():
            return load_base_model(str(merged), self.dtype, self.device, name), load_tokenizer(str(merged), name)
        return load_model(name, models[name], self.dtype, self.device, opts["allow_download"], opts["allow_pickle"])

    def load_hooked_model(self, name: str):
        model, tokenizer = self.load_hf_model(name)
        return HookedModel(model, tokenizer, name=name, precision=self.precision)
