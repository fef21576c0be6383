"""Loading base models, merging LoRA adapters, saving and fingerprinting merged weights."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import shutil
import tempfile
from pathlib import Path

from safetensors import SafetensorError

from ..io import write_json_atomic

log = logging.getLogger(__name__)

# torch is imported where a model is built, so that jobs that only read a fingerprint or a
# tokenizer (probes, prompts) start without it
DTYPE_NAMES = ("float32", "bfloat16", "float16")
FINGERPRINT_FILE = "fingerprint.json"
WEIGHTS_FILE = "model.safetensors"


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message names the model and the path."""


def torch_dtype(name: str):
    """torch.float32 / bfloat16 / float16 of a DTYPE_NAMES entry."""
    import torch

    return getattr(torch, name)


def resolve_device(device: str = "auto") -> str:
    """"auto" -> cuda when torch sees a GPU, else cpu; refuses a device this torch lacks."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        why = "was built without CUDA" if torch.version.cuda is None else "sees no GPU"
        raise ModelLoadError(
            f"analysis.device is {device!r}, but this torch ({torch.__version__}) {why}; "
            "set analysis.device to cpu or auto, or run on a machine with a GPU and a CUDA build of torch"
        )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("analysis.device is 'mps', but this torch has no MPS backend; set analysis.device to cpu or auto")
    return device


def check_dtype(model_type: str, dtype: str, name: str) -> None:
    if dtype not in DTYPE_NAMES:
        raise ModelLoadError(f"model {name}: unknown dtype {dtype!r} (use one of {', '.join(DTYPE_NAMES)})")
    if model_type in ("gemma2", "gemma3_text") and dtype == "float16":
        raise ModelLoadError(
            f"model {name}: Gemma overflows in float16 (activations exceed its range); "
            "set analysis.precision to bfloat16, bfloat16-resid32 or float32"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _custom_code_refused(exc: BaseException, path: str, name: str) -> ModelLoadError | None:
    if "custom code" not in str(exc):
        return None
    return ModelLoadError(
        f"model {name}: {path!r} needs custom code (auto_map in its config), which is never run "
        "(trust_remote_code=False); use a model type that transformers implements"
    )


def load_tokenizer(path: str, name: str = "", allow_download: bool = False):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=not allow_download, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise _custom_code_refused(exc, path, name) or ModelLoadError(
            f"model {name}: cannot load the tokenizer from {path!r} offline ({_first_line(exc)})"
        ) from None


def read_config(path: str, name: str = "", allow_download: bool = False):
    """The HF config of a model directory (or hub id); ModelLoadError naming the model."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, local_files_only=not allow_download, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        if refused := _custom_code_refused(exc, path, name):
            raise refused from None
        where = "local path" if Path(path).exists() else "path or hub id (not in the local cache)"
        raise ModelLoadError(
            f"model {name}: cannot load weights from {where} {path!r} offline ({_first_line(exc)}); "
            "download them first, or point the config at a local directory"
        ) from None


def load_base_model(path: str, dtype: str = "float32", device: str = "cpu", name: str = "",
                    allow_download: bool = False, native: bool = False):
    """A causal LM in `dtype` on `device`: HF's, with eager attention; or with `native` and a
    local safetensors checkpoint of a supported decoder, `native_decoder.NativeDecoder` (the
    same modules and weights, without importing HF's modelling code; HF's where it cannot)."""
    native = native and Path(path).is_dir()
    if native:
        from .native_decoder import NotNative, build_native, read_config_json
    # config.json read without importing transformers where the file allows
    config = (read_config_json(path) if native else None) or read_config(path, name, allow_download)
    check_dtype(config.model_type, dtype, name)
    device = resolve_device(device)
    if native:
        try:
            return build_native(path, config, torch_dtype(dtype), device)
        except NotNative as why:
            log.info("model %s: loaded by transformers' modelling code (%s)", name, why)
        except SafetensorError as exc:
            raise ModelLoadError(_damaged_weights(path, name, exc)) from None
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype(dtype), attn_implementation="eager", local_files_only=not allow_download,
            trust_remote_code=False,
        )
    except SafetensorError as exc:
        raise ModelLoadError(_damaged_weights(path, name, exc)) from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model {name}: cannot load weights from {path!r} ({_first_line(exc)})") from None
    return model.to(device).eval()


def load_hooked(path: str | Path, precision="float32", device: str = "auto", name: str = "",
                with_tokenizer: bool = False):
    """The one way a job loads a model: a `HookedModel` of the model directory `path` in the
    precision mode `precision` (precision.py; its weights' dtype), built without HF's
    modelling code where it can be (`load_base_model(native=True)`); with its tokenizer when
    `with_tokenizer`."""
    from .hooked import HookedModel
    from .precision import get_precision

    mode = get_precision(precision)
    model = load_base_model(str(path), mode.weights_name, device, name, native=True)
    tokenizer = load_tokenizer(str(path), name) if with_tokenizer else None
    return HookedModel(model, tokenizer, name=name, precision=mode)


@contextlib.contextmanager
def open_weights(weights: str | os.PathLike, name: str = ""):
    """safetensors' `safe_open` on a weights file (tensors read on demand); a file that
    does not deserialize raises ModelLoadError saying how to rebuild it."""
    from safetensors import safe_open

    try:
        handle = safe_open(str(weights), framework="pt")
    except SafetensorError as exc:
        raise ModelLoadError(_damaged_weights(str(Path(weights).parent), name, exc)) from None
    with handle as f:
        yield f


def _damaged_weights(path: str, name: str, exc: BaseException) -> str:
    """What to do about weights that do not deserialize: rebuild them if the workflow merged
    them (a fingerprint.json beside them), else fetch them again."""
    if (Path(path) / FINGERPRINT_FILE).is_file():
        weights = Path(path) / WEIGHTS_FILE
        return (f"model {name}: merged weights {weights} are damaged or truncated ({_first_line(exc)}); "
                f"delete {path} and rerun the workflow (snakemake --cores 1 {weights})")
    return (f"model {name}: the weights in {path} are damaged or truncated ({_first_line(exc)}); "
            "download or copy them again")


def _check_adapter_dir(adapter: str, name: str, allow_pickle: bool) -> None:
    adir = Path(adapter)
    if not adir.is_dir():
        raise ModelLoadError(f"model {name}: adapter directory not found: {adapter}")
    if not (adir / "adapter_config.json").is_file():
        raise ModelLoadError(f"model {name}: {adapter} has no adapter_config.json (not a PEFT adapter)")
    if not (adir / "adapter_model.safetensors").is_file():
        if (adir / "adapter_model.bin").is_file():
            if not allow_pickle:
                raise ModelLoadError(
                    f"model {name}: adapter {adapter} is a pickle (adapter_model.bin); convert it to "
                    "safetensors or set analysis.allow_pickle: true (loaded with weights_only=True)"
                )
        else:
            raise ModelLoadError(f"model {name}: {adapter} has no adapter_model.safetensors")


def merge_adapter(base_model, adapter: str, name: str = "", allow_pickle: bool = False):
    """Merges a LoRA adapter into `base_model` (merged in float32); returns the plain HF model."""
    from peft import PeftModel

    _check_adapter_dir(adapter, name, allow_pickle)
    dtype = base_model.dtype
    base_model = base_model.float()
    try:
        peft_model = PeftModel.from_pretrained(base_model, adapter, is_trainable=False)
    except RuntimeError as exc:
        mismatch = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln]
        detail = mismatch[0] if mismatch else _first_line(exc)
        raise ModelLoadError(f"model {name}: adapter {adapter} does not fit its base model: {detail}") from None
    except pickle.UnpicklingError as exc:  # peft loads adapter_model.bin with torch.load(weights_only=True)
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if ln.startswith("Trying to load")), _first_line(exc))
        raise ModelLoadError(
            f"model {name}: adapter {adapter}: adapter_model.bin holds more than tensors, "
            f"refused by torch.load(weights_only=True) ({detail})"
        ) from None
    merged = peft_model.merge_and_unload()
    return merged.to(dtype).eval()


def load_model(name: str, spec: dict, dtype: str = "float32", device: str = "cpu",
               allow_download: bool = False, allow_pickle: bool = False):
    """(HF model, tokenizer) for a config entry `{base, adapter}`, merged in memory."""
    tokenizer = load_tokenizer(spec["base"], name, allow_download)
    if spec.get("adapter"):
        _check_adapter_dir(spec["adapter"], name, allow_pickle)
        model = load_base_model(spec["base"], "float32", "cpu", name, allow_download)
        check_dtype(model.config.model_type, dtype, name)
        model = merge_adapter(model, spec["adapter"], name, allow_pickle).to(torch_dtype(dtype))
        model = model.to(resolve_device(device))
    else:
        model = load_base_model(spec["base"], dtype, device, name, allow_download)
    return model, tokenizer


def state_fingerprint(model) -> str:
    """sha256 over parameter names, dtypes, shapes and bytes of a model's state dict."""
    import torch

    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_merged(model, tokenizer, out_dir: str | Path, meta: dict) -> dict:
    """Writes model.safetensors (one file), config, tokenizer and fingerprint.json into
    `out_dir`; every file is written to a temporary name first, fingerprint.json last."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "fingerprint": state_fingerprint(model), "dtype": str(model.dtype).replace("torch.", "")}
    # fingerprint.json marks a complete directory: gone while the other files are replaced
    (out_dir / FINGERPRINT_FILE).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size="1000GB")
        tokenizer.save_pretrained(tmp)
        for item in sorted(Path(tmp).iterdir()):
            if item.is_file():
                os.chmod(item, 0o644)
            dest = out_dir / item.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            os.replace(item, dest)
    write_json_atomic(out_dir / FINGERPRINT_FILE, meta)
    return meta


def read_fingerprint(model_dir: str | Path) -> dict:
    path = Path(model_dir) / FINGERPRINT_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: the merged model is incomplete; rerun its merge rule")
    return json.loads(path.read_text())


def merge_to_dir(name: str, spec: dict, out_dir: str | Path, dtype: str = "float32",
                 allow_download: bool = False, allow_pickle: bool = False) -> dict:
    """Merges a configured model once (in float32, on the CPU) and saves it in `dtype`."""
    tokenizer = load_tokenizer(spec["base"], name, allow_download)
    model = load_base_model(spec["base"], "float32", "cpu", name, allow_download)
    check_dtype(model.config.model_type, dtype, name)
    if spec.get("adapter"):
        model = merge_adapter(model, spec["adapter"], name, allow_pickle)
    model = model.to(torch_dtype(dtype))
    log.info("model %s: saving merged weights (%s) to %s", name, dtype, out_dir)
    return save_merged(model, tokenizer, out_dir, {"model": name, "base": spec["base"], "adapter": spec.get("adapter")})
